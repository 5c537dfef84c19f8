"""``sluice dev``: the whole suite on one machine, no Docker.

Uses the NATS and Redis at ``SLUICE_NATS_URL`` / ``SLUICE_REDIS_URL`` when they
answer; otherwise starts its own, on the configured port when it is free and on a
free port when something else holds it (it never fights for a taken port). Then the
four services as separate processes; Ctrl-C or SIGTERM stops everything it started.

On servers it did not start (someone else's, or another ``sluice dev``'s), the suite
takes a namespace of its own unless ``SLUICE_NAMESPACE`` names one: two suites on one
NATS and Redis would otherwise serve each other's streams and sum each other's figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

from libs.common import names
from libs.common.settings import load_settings
from libs.tools.servers import (
    Server,
    free_port,
    nats_answers,
    nats_server,
    port_is_free,
    redis_answers,
    redis_server,
)
from libs.tools.stack import SERVICES, Stack


def _own_port(url: str, default: int) -> int:
    port = urlparse(url).port or default
    return port if port_is_free(port) else free_port()


def _ensure(kind: str, url: str, workdir: Path, started: list[Server], reused: list[str]) -> str:
    if (nats_answers if kind == "nats" else redis_answers)(url):
        print(f"  {kind:<11} {url} (already running, reused)")
        reused.append(kind)
        return url
    port = _own_port(url, 4222 if kind == "nats" else 6379)
    server = (
        nats_server(port, workdir / kind) if kind == "nats" else redis_server(port, workdir / kind)
    )
    started.append(server.start())
    print(f"  {kind:<11} {server.url} (started here; log {server.log_path})")
    return server.url if kind == "nats" else f"{server.url}/0"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="sluice dev", description=__doc__)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="logs and data (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-dev-"))
    workdir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    print("sluice dev: starting")
    stack: Stack | None = None
    try:
        reused: list[str] = []
        nats_url = _ensure("nats", settings.nats_url, workdir, servers, reused)
        redis_url = _ensure("redis", settings.redis_url, workdir, servers, reused)
        defaults = {name: getattr(settings, f"{name}_port") for name in SERVICES}
        ports = {
            name: port if port_is_free(port) else free_port() for name, port in defaults.items()
        }
        stack = Stack(nats_url, redis_url, workdir)
        stack.env[names.NAMESPACE_VARIABLE] = _namespace(settings.namespace, reused)
        stack.env["SLUICE_PUBLIC_GATEWAY_URL"] = f"http://127.0.0.1:{ports['gateway']}"
        stack.env["SLUICE_PUBLIC_STREAMER_URL"] = f"http://127.0.0.1:{ports['streamer']}"
        stack.start(ports)
        _banner(stack, ports, workdir)
        _wait_for_signal()
    finally:
        print("\nsluice dev: stopping")
        if stack is not None:
            stack.stop()
        for server in reversed(servers):
            server.stop()


def _namespace(configured: str, reused: list[str]) -> str:
    """The configured namespace, or a fresh one when sharing servers and none was asked for."""
    if not reused or os.environ.get(names.NAMESPACE_VARIABLE):
        print(f"  namespace   {configured}")
        return configured
    own = f"dev-{secrets.token_hex(3)}"
    print(
        f"  namespace   {own} (its own, as it shares {' and '.join(reused)}; set {names.NAMESPACE_VARIABLE} to choose)"
    )
    return own


def _banner(stack: Stack, ports: dict[str, int], workdir: Path) -> None:
    for name in SERVICES:
        print(f"  {name:<11} http://127.0.0.1:{ports[name]}  (/healthz /readyz /metrics)")
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    print(f"  logs        {workdir}")
    print("\nTry it (creates a stream, then follows its events):\n")
    print(
        f"  curl -sN \"$(curl -s -X POST {gateway}/v1/streams -H 'Content-Type: application/json' \\\n"
        '      -d \'{"prompt": "hello", "sim": {"tokens": 40}}\' \\\n'
        '      | python3 -c \'import sys, json; print(json.load(sys.stdin)["events_url"])\')"\n'
    )
    print("Ctrl-C stops everything.", flush=True)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
