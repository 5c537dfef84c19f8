"""``sluice bench connections``: how many open SSE streams one streamer holds, and at what cost.

Two phases. Hold: open ``--hold`` long-lived slow streams (``--hold-tokens-per-s``, 1 by
default) and read the streamer's resident memory before and with all of them open, so
memory per stream is (RSS open - RSS before) / streams open. Throughput: ``--streams``
concurrent streams of ``--tokens-per-s`` each, measured exactly as ``sluice bench latency``
does (delivered tokens/s, per-token delivery latency). ``--hold 0`` or ``--streams 0``
skips a phase. The streamer's memory is read from ``/proc``, so the hold phase needs the
streamer on this machine (found by its port, or given with ``--streamer-pid``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import time
import urllib.request
from collections import Counter
from multiprocessing.synchronize import Event
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from libs.client.http import SluiceClient, events
from libs.common.process import prepare_process
from libs.tools.bench import latency
from libs.tools.bench.stats import emit
from libs.tools.bench.usage import cpu_s, rss_kb

SUITE_ENV = {
    "SLUICE_RUNNER_SLOTS": "12000",
    "SLUICE_TENANT_MAX_STREAMS": "100000",
    "SLUICE_QUEUE_MAX": "20000",
    "SLUICE_QUEUE_WAIT_S": "120",
}
OPEN_GAUGE = "sluice_streamer_open_connections"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    latency.add_arguments(parser)
    parser.set_defaults(streams=1000, tokens=250, ramp_s=5.0, workers=4)
    parser.add_argument("--hold", type=int, default=10_000, help="streams to hold open at once")
    parser.add_argument(
        "--hold-tokens-per-s", type=float, default=1.0, help="each held stream's model speed"
    )
    parser.add_argument(
        "--hold-s", type=float, default=10.0, help="how long to keep them all open, measuring"
    )
    parser.add_argument("--hold-ramp-s", type=float, default=30.0, help="spread their opening")
    parser.add_argument("--streamer-pid", type=int, help="the streamer process (default: by port)")


def raise_open_files_limit() -> int:
    """Lift this process's soft limit on open files to the hard one; returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pid_listening_on(port: int) -> int | None:
    """The local process listening on TCP ``port``, from /proc (None if not found)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                for row in list(rows)[1:]:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(
                os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                return int(pid)
        except OSError:
            continue
    return None


def open_streams(streamer: str) -> float | None:
    """The streamer's own count of open SSE streams; None while it is too busy to say."""
    try:
        with urllib.request.urlopen(f"{streamer}/metrics", timeout=10) as answer:
            families = text_string_to_metric_families(answer.read().decode())
            return sum(s.value for f in families for s in f.samples if s.name == OPEN_GAUGE)
    except OSError:
        return None


async def _hold(
    gateway: str, count: int, offset: int, body: dict[str, Any], ramp_s: float, stop: Event
) -> Counter[str]:
    seen: Counter[str] = Counter()

    async def one(client: SluiceClient, index: int) -> None:
        await asyncio.sleep(ramp_s * index / max(1, count))
        try:
            created = await client.create(**body, prompt=f"hold {offset + index}")
            async for received in events(client.session, created["events_url"]):
                seen[received.type] += 1
                if received.type == "token":
                    seen["tokens"] += received.json()["n"]
        except Exception as exc:
            seen[f"error {type(exc).__name__}"] += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = SluiceClient(session, gateway)
        tasks = [asyncio.create_task(one(client, i)) for i in range(count)]
        await asyncio.to_thread(stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return seen


def _hold_worker(
    gateway: str,
    count: int,
    offset: int,
    body: dict[str, Any],
    ramp_s: float,
    stop: Event,
    results: multiprocessing.Queue[Counter[str]],
) -> None:
    raise_open_files_limit()
    prepare_process()
    results.put(asyncio.run(_hold(gateway, count, offset, body, ramp_s, stop)))


def _streamer_of(gateway: str) -> str:
    """The streamer base URL that this suite puts in ``events_url``."""

    async def probe() -> str:
        async with aiohttp.ClientSession() as session:
            created = await SluiceClient(session, gateway).create(prompt="probe", sim={"tokens": 1})
            parts = urlsplit(created["events_url"])
            return f"{parts.scheme}://{parts.netloc}"

    return asyncio.run(probe())


def hold_phase(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    streamer = _streamer_of(gateway)
    pid = args.streamer_pid or pid_listening_on(urlsplit(streamer).port or 80)
    if pid is None:
        raise SystemExit(f"cannot find the streamer process of {streamer}: pass --streamer-pid")
    tokens = int((2 * args.hold_ramp_s + args.hold_s + 120) * args.hold_tokens_per_s) + 1
    body = {
        "max_tokens": tokens,
        "abandon_after_s": 30,
        "sim": {"tokens": tokens, "tokens_per_s": args.hold_tokens_per_s, "ttft_ms": 0},
    }
    rss_before, cpu_before = rss_kb(pid), cpu_s(pid)
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    shares = [
        args.hold // args.workers + (i < args.hold % args.workers) for i in range(args.workers)
    ]
    workers = [
        context.Process(
            target=_hold_worker,
            args=(gateway, n, sum(shares[:i]), body, args.hold_ramp_s, stop, results),
            daemon=True,
        )
        for i, n in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    try:
        deadline = started + args.hold_ramp_s + 120
        opened = 0.0
        while opened < args.hold and time.monotonic() < deadline:
            time.sleep(0.5)
            opened = open_streams(streamer) or opened
        open_after_s = time.monotonic() - started
        cpu_open = cpu_s(pid)
        time.sleep(args.hold_s)
        held = open_streams(streamer) or opened
        rss_open = rss_kb(pid)
        cpu_share = (cpu_s(pid) - cpu_open) / args.hold_s
    finally:
        stop.set()
    seen: Counter[str] = Counter()
    for _ in workers:
        seen.update(results.get(timeout=120))
    for worker in workers:
        worker.join(timeout=30)
    return {
        "target": args.hold,
        "held_open": held,
        "all_open_after_s": open_after_s,
        "streamer_rss_before_kb": rss_before,
        "streamer_rss_open_kb": rss_open,
        "rss_per_stream_kb": (rss_open - rss_before) / held if held else float("nan"),
        "streamer_cpu_while_held": cpu_share,
        "streamer_cpu_s_total": cpu_s(pid) - cpu_before,
        "client_saw": dict(seen),
        "open_files_limit": raise_open_files_limit(),
    }


def run(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    result: dict[str, Any] = {"mode": "connections"}
    lines = []
    if args.hold:
        hold = result["hold"] = hold_phase(args, gateway)
        lines += [
            f"  held open {hold['held_open']:.0f}/{hold['target']} SSE streams on one streamer "
            f"(all open {hold['all_open_after_s']:.1f}s after the first)",
            f"  streamer RSS {hold['streamer_rss_before_kb'] / 1024:.1f} MB before, "
            f"{hold['streamer_rss_open_kb'] / 1024:.1f} MB with them open: "
            f"{hold['rss_per_stream_kb']:.1f} KB per stream",
            f"  streamer CPU while holding them: {100 * hold['streamer_cpu_while_held']:.0f}% "
            f"of a core; clients saw {hold['client_saw']}",
        ]
    emit(
        f"connections: hold {args.hold} streams at {args.hold_tokens_per_s:g} token/s",
        lines,
        result,
        None,
    )
    if args.streams:
        throughput = argparse.Namespace(**{**vars(args), "json": None})  # written once, below
        result["throughput"] = latency.run(throughput, gateway)
    emit("connections: done", [], result, args.json)
    return result
