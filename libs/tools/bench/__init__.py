"""``sluice bench``: measure the whole suite as a client sees it. Without ``--gateway``
a mode starts its own NATS, Redis and four services (as ``sluice dev`` does), reports
what each of them cost in CPU over the run and what a stream and a token cost the suite
(its cost ledger), and stops them afterwards; with it, it drives a running suite.

Each mode lives in its own module with ``add_arguments(parser)`` and
``run(args, gateway) -> dict``, and may set ``SUITE_ENV`` for the suite it starts (or
``NEEDS_SUITE = False``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from libs.tools import helptext
from libs.tools.bench.ledger import Sources, ledger
from libs.tools.bench.stats import write_json
from libs.tools.bench.usage import cpu_shares, format_shares
from libs.tools.clusters import nats_cluster, redis_cluster
from libs.tools.servers import Server, free_port, nats_server, redis_server
from libs.tools.stack import Stack

SUPPORT_MODULES = frozenset(
    {"bare", "ledger", "plots", "reader", "stats", "usage", "weather_clients"}
)


def modes() -> list[str]:
    """Every module of this package but the support ones is a mode."""
    names = (info.name for info in pkgutil.iter_modules(__path__))
    return sorted(name for name in names if name not in SUPPORT_MODULES)


def _module(mode: str) -> ModuleType:
    return importlib.import_module(f"libs.tools.bench.{mode}")


@dataclass
class Suite:
    stack: Stack
    servers: list[Server]
    nats_monitor_ports: list[int]

    def pids(self) -> dict[str, int]:
        """Every process of the suite by name (replicas numbered), for :func:`cpu_shares`."""
        named = [(s.name, s.process) for s in self.servers]
        named += [(s.name, s.process) for s in self.stack.services]
        pids: dict[str, int] = {}
        for name, process in named:
            if process is not None:
                key = name if name not in pids else f"{name}-{process.pid}"
                pids[key] = process.pid
        return pids

    def sources(self) -> Sources:
        """Where its cost ledger is read."""
        return Sources(
            services=[service.url for service in self.stack.services],
            pids=self.pids(),
            nats_monitor_ports=self.nats_monitor_ports,
            redis_ports=[server.port for server in self.servers if server.name == "redis"],
        )


@contextmanager
def own_suite(env: dict[str, str], servers: str = "single") -> Iterator[Suite]:
    """NATS, Redis and the four services, private to this run.

    ``servers="cluster"`` starts a 3-node NATS cluster and a 6-node Redis Cluster (3
    masters, 3 replicas) instead, so the two can be measured side by side.
    """
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    env = {"SLUICE_LOG_LEVEL": "WARNING", **env}
    if servers == "cluster":
        nats_nodes = nats_cluster(workdir / "nats").start()
        redis_nodes = redis_cluster(workdir / "redis").start()
        started = [node.server for node in nats_nodes.nodes] + redis_nodes.nodes
        monitors = [node.monitor_port for node in nats_nodes.nodes]
        urls = nats_nodes.url, redis_nodes.url
        env["SLUICE_REDIS_CLUSTER"] = "1"
    else:
        monitors = [free_port()]
        nats = nats_server(workdir=workdir / "nats", monitor_port=monitors[0]).start()
        redis = redis_server(workdir=workdir / "redis", appendonly=False).start()
        started, urls = [nats, redis], (nats.url, f"{redis.url}/0")
    stack = Stack(*urls, workdir, env=env)
    try:
        yield Suite(stack.start(), started, monitors)
    finally:
        stack.stop()
        for server in started:
            server.stop()


def main(argv: list[str]) -> None:
    parser = helptext.parser("sluice bench", __doc__)
    sub = parser.add_subparsers(dest="mode")
    for mode in modes():
        module = _module(mode)
        summary = helptext.plain(module.__doc__).split(": ", 1)[-1]
        mode_parser = sub.add_parser(
            mode,
            help=summary.splitlines()[0],
            description=summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mode_parser.add_argument(
            "--gateway", help="a running suite's gateway URL (default: start one)"
        )
        mode_parser.add_argument("--json", help="also write the raw figures to this file")
        mode_parser.add_argument(
            "--servers",
            choices=("single", "cluster"),
            default="single",
            help="the suite it starts uses one NATS and one Redis, or a 3-node NATS "
            "cluster and a 3-master Redis Cluster (SLUICE_LOG_SYNC_REPLICAS passes through)",
        )
        module.add_arguments(mode_parser)
    args = parser.parse_args(argv or ["latency"])
    module = _module(args.mode)
    if args.gateway or not getattr(module, "NEEDS_SUITE", True):
        module.run(args, args.gateway)
        return
    with own_suite(getattr(module, "SUITE_ENV", {}), args.servers) as suite:
        with ledger(suite.sources()) as run, cpu_shares(suite.pids()) as shares:
            result = module.run(args, suite.stack.gateway)
        print(f"\nsuite CPU over the run: {format_shares(shares)}")
        if run.costs is not None:
            print("\n".join(run.costs.lines()))
            if args.json:
                write_json({**result, "ledger": run.costs.figures()}, args.json)
