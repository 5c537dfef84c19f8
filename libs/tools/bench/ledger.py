"""The cost ledger of a run on a suite ``sluice bench`` started: what opening a stream
and generating a token cost the suite, and when a token reaches each hop of its way.

Read just before and just after the run, from the services' own ``/metrics`` (streams
admitted, tokens generated, the token-hop histogram), nats-server's ``/varz``, Redis'
``INFO commandstats`` and ``/proc``; the CPU is read last before and first after, so
the ledger's own reads cost the suite nothing it reports. Every figure divides the
whole run's total, the suite's background traffic (heartbeats, stats) included, by the
streams or by the tokens: which of the two a run measures depends on its streams'
length.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from libs.common.metrics import HOPS
from libs.common.stats import Buckets, buckets, minus, plus, quantile, snapshot
from libs.tools.bench.usage import cpus_s

STREAMS = "sluice_streams_submitted"
TOKENS = "sluice_runner_tokens"
HOP_FAMILY = "sluice_token_hop_seconds"
DATA_PATH = ("runner", "streamer", "nats", "redis")
"""The processes every token passes through, whatever opening its stream cost."""


@dataclass(frozen=True)
class Sources:
    """Where one suite's figures are read."""

    services: list[str]
    """Each service's base URL."""
    pids: dict[str, int]
    """Every process by name, replicas and nodes as ``name-<pid>`` (``Suite.pids``)."""
    nats_monitor_ports: list[int]
    redis_ports: list[int]


@dataclass(frozen=True)
class Tally:
    """What the services and the servers have counted so far."""

    streams: float
    tokens: float
    hops: dict[str, dict[str, Buckets]]
    """By service URL, then by hop."""
    nats_msgs: tuple[int, int] | None
    """Messages in and out over every node; None when one did not answer."""
    redis_commands: int | None


@dataclass(frozen=True)
class Hop:
    """One hop of a token's way, in ms since the model emitted it."""

    name: str
    p50_ms: float | None
    p99_ms: float | None
    n: int
    p50_over_previous_ms: float | None
    """This hop's p50 minus the previous hop's: a difference of medians."""


def role(process: str) -> str:
    """``runner-1234`` (a second runner) is a ``runner``."""
    return process.split("-", 1)[0]


def per(total: float | None, count: float) -> float | None:
    """``total`` per one of ``count``; None without a total or anything to divide by."""
    return None if total is None or count <= 0 else total / count


def redis_commands(commandstats: str) -> int:
    """Calls of every command in ``INFO commandstats`` but INFO, which only the ledger sends."""
    total = 0
    for line in commandstats.splitlines():
        name, _, fields = line.strip().partition(":")
        if name.startswith("cmdstat_") and name != "cmdstat_info":
            values = dict(pair.split("=", 1) for pair in fields.split(","))
            total += int(values["calls"])
    return total


def service_counts(metrics_text: str) -> tuple[float, float, dict[str, Buckets]]:
    """Streams admitted, tokens generated and the token-hop histogram in one ``/metrics``."""
    families = list(text_string_to_metric_families(metrics_text))
    counters = snapshot("", "", families).counters
    return (
        sum(counters.get(STREAMS, {}).values()),
        sum(counters.get(TOKENS, {}).values()),
        hop_buckets(families),
    )


def hop_buckets(families: Iterable[Metric]) -> dict[str, Buckets]:
    """One process's token-hop histogram, by hop (only the hops it records)."""
    for family in families:
        if family.name == HOP_FAMILY:
            found = {hop: buckets(family, hop=hop) for hop in HOPS}
            return {hop: counts for hop, counts in found.items() if counts.counts}
    return {}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def hops(before: dict[str, dict[str, Buckets]], after: dict[str, dict[str, Buckets]]) -> list[Hop]:
    """Each hop's p50 and p99 over what every instance recorded between two tallies."""
    merged: dict[str, Buckets] = {}
    for instance, now in after.items():
        for hop, counts in now.items():
            delta = minus(counts, before.get(instance, {}).get(hop))
            merged[hop] = plus(merged[hop], delta) if hop in merged else delta
    found: list[Hop] = []
    previous: float | None = None
    for hop in HOPS:
        counts = merged.get(hop, Buckets([], []))
        p50 = _ms(quantile(0.5, counts))
        over = None if p50 is None or previous is None else p50 - previous
        n = int(counts.counts[-1]) if counts.counts else 0
        found.append(Hop(hop, p50, _ms(quantile(0.99, counts)), n, over))
        previous = p50
    return found


@dataclass(frozen=True)
class Costs:
    """A run's totals, with the per-stream and per-token figures derived from them."""

    streams: float
    tokens: float
    cpu_s: dict[str, float]
    """By role (``runner``, ``nats``...): replicas and nodes summed."""
    nats_msgs: tuple[int, int] | None
    redis_commands: int | None
    hops: list[Hop]
    nats_nodes: int
    redis_nodes: int

    @classmethod
    def between(
        cls,
        before: Tally,
        after: Tally,
        cpu_before: dict[str, float],
        cpu_after: dict[str, float],
        sources: Sources,
    ) -> Costs:
        used: dict[str, float] = {}
        for name, seconds in cpu_after.items():
            if name in cpu_before:
                used[role(name)] = used.get(role(name), 0.0) + seconds - cpu_before[name]
        nats = None
        if before.nats_msgs is not None and after.nats_msgs is not None:
            nats = (
                after.nats_msgs[0] - before.nats_msgs[0],
                after.nats_msgs[1] - before.nats_msgs[1],
            )
        redis = None
        if before.redis_commands is not None and after.redis_commands is not None:
            redis = after.redis_commands - before.redis_commands
        return cls(
            streams=after.streams - before.streams,
            tokens=after.tokens - before.tokens,
            cpu_s=used,
            nats_msgs=nats,
            redis_commands=redis,
            hops=hops(before.hops, after.hops),
            nats_nodes=len(sources.nats_monitor_ports),
            redis_nodes=len(sources.redis_ports),
        )

    def per_stream(self) -> dict[str, Any]:
        by_role = {name: per(1000 * s, self.streams) for name, s in self._by_cost()}
        nats_in, nats_out = self.nats_msgs or (None, None)
        return {
            "cpu_ms": per(1000 * sum(self.cpu_s.values()), self.streams),
            "cpu_ms_by_process": by_role,
            "nats_messages_in": per(nats_in, self.streams),
            "nats_messages_out": per(nats_out, self.streams),
            "redis_commands": per(self.redis_commands, self.streams),
        }

    def per_token(self) -> dict[str, float | None]:
        data_path = sum(self.cpu_s.get(name, 0.0) for name in DATA_PATH)
        return {
            "cpu_us": per(1e6 * sum(self.cpu_s.values()), self.tokens),
            "data_path_cpu_us": per(1e6 * data_path, self.tokens),
        }

    def figures(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "streams_opened": self.streams,
            "tokens_generated": self.tokens,
            "cpu_ms": {name: 1000 * s for name, s in self._by_cost()},
            "nats_messages": None
            if self.nats_msgs is None
            else {"in": self.nats_msgs[0], "out": self.nats_msgs[1]},
            "redis_commands": self.redis_commands,
            "nats_nodes": self.nats_nodes,
            "redis_nodes": self.redis_nodes,
            "per_stream": self.per_stream(),
            "per_token": self.per_token(),
            "token_hops_ms": {
                hop.name: {
                    "p50": hop.p50_ms,
                    "p99": hop.p99_ms,
                    "n": hop.n,
                    "p50_minus_previous_p50": hop.p50_over_previous_ms,
                }
                for hop in self.hops
            },
        }

    def lines(self) -> list[str]:
        stream, token = self.per_stream(), self.per_token()
        by_role = ", ".join(
            f"{name} {_fmt(ms, '.1f')}" for name, ms in stream["cpu_ms_by_process"].items()
        )
        lines = [
            f"cost per stream opened ({self.streams:.0f} streams): "
            f"{_fmt(stream['cpu_ms'], '.1f')} ms of suite CPU ({by_role})",
            f"  NATS {_fmt(stream['nats_messages_in'], '.1f')} messages in, "
            f"{_fmt(stream['nats_messages_out'], '.1f')} out; "
            f"Redis {_fmt(stream['redis_commands'], '.1f')} commands",
            f"cost per token generated ({self.tokens:.0f} tokens): "
            f"{_fmt(token['cpu_us'], '.0f')} µs of suite CPU; "
            f"{'+'.join(DATA_PATH)} {_fmt(token['data_path_cpu_us'], '.0f')} µs",
            "  (each figure divides the whole run's total, background traffic included, by the",
            "  streams or the tokens: short streams measure opening one, long ones the tokens)",
        ]
        if self.nats_nodes > 1 or self.redis_nodes > 1:
            lines += [
                f"  (NATS counts are summed over {self.nats_nodes} nodes and Redis over "
                f"{self.redis_nodes}: a message routed",
                "  between nodes, or a write a replica repeats, counts at each node)",
            ]
        lines += [
            "a token's hops, ms after the model emitted it: p50 / p99 from histogram buckets; in",
            "  brackets, p50 minus the previous hop's (a difference of medians); n tokens sampled",
        ]
        for hop in self.hops:
            over = hop.p50_over_previous_ms
            step = "" if over is None else f"({over:+.3f})"
            lines.append(
                f"  {hop.name:<10} {_fmt(hop.p50_ms, '8.3f')} / {_fmt(hop.p99_ms, '8.3f')}"
                f"  {step:<10}  n={hop.n}"
            )
        return lines

    def _by_cost(self) -> list[tuple[str, float]]:
        return sorted(self.cpu_s.items(), key=lambda item: -item[1])


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        body: bytes = answer.read()
        return body


def redis_info(port: int, section: str) -> str:
    """``INFO <section>`` of the Redis on ``port``, over a bare connection: a client
    library would send commands of its own (``CLIENT SETINFO``) into the counts."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"INFO {section}\r\n".encode())
        reply = sock.makefile("rb")
        header = reply.readline()
        if not header.startswith(b"$"):
            raise ValueError(f"INFO answered {header!r}")
        return reply.read(int(header[1:])).decode()


def nats_msgs(monitor_ports: list[int]) -> tuple[int, int] | None:
    """Messages in and out over every node's ``/varz``; None if one does not answer."""
    try:
        varz = [json.loads(_get(f"http://127.0.0.1:{port}/varz")) for port in monitor_ports]
        in_msgs = sum(int(v["in_msgs"]) for v in varz)
        out_msgs = sum(int(v["out_msgs"]) for v in varz)
    except (OSError, ValueError, KeyError):
        return None
    return (in_msgs, out_msgs) if varz else None


def redis_calls(ports: list[int]) -> int | None:
    """Commands every node has run but INFO; None if one does not answer."""
    try:
        calls = [redis_commands(redis_info(port, "commandstats")) for port in ports]
    except (OSError, ValueError, KeyError):
        return None
    return sum(calls) if calls else None


def tally(sources: Sources) -> Tally:
    """What every service and server has counted so far; a service that does not answer
    counts nothing."""
    streams = tokens = 0.0
    hop_counts: dict[str, dict[str, Buckets]] = {}
    for url in sources.services:
        try:
            opened, generated, hop_counts[url] = service_counts(_get(f"{url}/metrics").decode())
        except OSError:
            continue
        streams += opened
        tokens += generated
    return Tally(
        streams,
        tokens,
        hop_counts,
        nats_msgs(sources.nats_monitor_ports),
        redis_calls(sources.redis_ports),
    )


@dataclass
class Run:
    """Set when the block of :func:`ledger` ends."""

    costs: Costs | None = None


@contextmanager
def ledger(sources: Sources) -> Iterator[Run]:
    """The costs of what the block makes the suite do."""
    run = Run()
    before = tally(sources)
    cpu_before = cpus_s(sources.pids)
    yield run
    cpu_after = cpus_s(sources.pids)
    run.costs = Costs.between(before, tally(sources), cpu_before, cpu_after, sources)
