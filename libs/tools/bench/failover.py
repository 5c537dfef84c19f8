"""``sluice bench failover``: the stall readers see when an answer moves to another runner.

The benchmark starts its own suite with three runners (it must own them to stop
them), opens ``--streams`` long answers, then, while they run, stops one runner with
SIGTERM (handoff: it hands its answers over and exits) and starts a fresh one, and
later kills another with SIGKILL (failover: the coordinator declares it lost after
``SLUICE_RUNNER_DEAD_AFTER_S``). A reader's stall at a move is the time from the last
token frame before the ``status`` frame that says the answer moved (``continued_at``)
to the first token frame after it. Every answer is checked against the sim model's
text, and ``done`` says how many tokens each continuation recomputed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import aiohttp

from libs.client.http import SluiceClient, events
from libs.tools.bench import own_suite
from libs.tools.bench.stats import emit, line, summary
from libs.tools.stack import Service, Stack
from services.runner.backends.sim import sim_tokens

NEEDS_SUITE = False
RUNNERS = 3
DEAD_AFTER_S = 2.0
SUITE_ENV = {
    "SLUICE_RUNNER_HEARTBEAT_S": "0.5",
    "SLUICE_RUNNER_DEAD_AFTER_S": str(DEAD_AFTER_S),
    "SLUICE_DRAIN_TIMEOUT_S": "30",
}


@dataclass
class Sample:
    stall_ms: dict[str, list[float]] = field(default_factory=lambda: {"handoff": [], "kill": []})
    recomputed: list[float] = field(default_factory=list)
    exact: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    exit_s: list[float] = field(default_factory=list)
    killed_at: float = float("inf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=60, help="concurrent answers")
    parser.add_argument("--tokens", type=int, default=1500, help="tokens per answer")
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="each answer's speed")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=5.0,
        help="seconds between the start, the SIGTERM and the kill",
    )


async def follow(
    session: aiohttp.ClientSession, url: str, prompt: str, args: argparse.Namespace, sample: Sample
) -> None:
    """Read one answer to its end, resuming after any drop; record the stall at each move."""
    texts: list[str] = []
    last_seq, last_token, moved_at = 0, 0.0, 0.0
    cause = ""
    ended = False
    while not ended:
        try:
            async for received in events(session, url, str(last_seq) if last_seq else None):
                now = time.monotonic()
                if received.type == "status" and "continued_at" in received.json():
                    moved_at = last_token
                    cause = "kill" if now >= sample.killed_at else "handoff"
                elif received.type == "token":
                    data = received.json()
                    if moved_at:
                        sample.stall_ms[cause].append((now - moved_at) * 1000)
                        moved_at = 0.0
                    texts.append(data["text"])
                    last_seq, last_token = data["seq"], now
                elif received.type in ("done", "error"):
                    ended = True
                    tally(received.json(), received.type, sample)
        except aiohttp.ClientError:
            sample.faults["reconnect"] += 1
    expected = "".join(islice(sim_tokens(prompt, 0), args.tokens))
    sample.exact += "".join(texts) == expected


def tally(end: Any, kind: str, sample: Sample) -> None:
    if kind == "error":
        sample.faults[end["type"]] += 1
    elif end.get("attempts"):
        moves = len(end["attempts"]) - 1
        sample.recomputed += [end["recomputed"] / moves] * moves


async def restart(stack: Stack, runner: Service, sample: Sample) -> None:
    """SIGTERM ``runner``, time its exit, and start a fresh one in its place."""
    assert runner.process is not None
    started = time.monotonic()
    runner.signal(signal.SIGTERM)
    await asyncio.to_thread(runner.process.wait, 60)
    sample.exit_s.append(time.monotonic() - started)
    await asyncio.to_thread(lambda: stack.add("runner").wait_ready())


async def drive(stack: Stack, args: argparse.Namespace) -> Sample:
    sample = Sample()
    shape = {"tokens": args.tokens, "tokens_per_s": args.tokens_per_s, "ttft_ms": 0}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        client = SluiceClient(session, stack.gateway)
        prompts = [f"failover bench {i}" for i in range(args.streams)]
        created = [
            await client.create(prompt=p, max_tokens=args.tokens, sim=shape) for p in prompts
        ]
        readers = [
            asyncio.create_task(follow(session, c["events_url"], p, args, sample))
            for c, p in zip(created, prompts, strict=True)
        ]
        runners = [s for s in stack.services if s.name == "runner"]
        await asyncio.sleep(args.settle_s)
        await restart(stack, runners[0], sample)
        await asyncio.sleep(args.settle_s)
        sample.killed_at = time.monotonic()
        runners[1].kill()
        await asyncio.gather(*readers)
    return sample


def run(args: argparse.Namespace, gateway: str | None) -> dict[str, Any]:
    if gateway:
        raise SystemExit("sluice bench failover starts its own suite: it stops and kills runners")
    started = time.monotonic()
    with own_suite(SUITE_ENV) as suite:
        for _ in range(RUNNERS - 1):
            suite.stack.add("runner").wait_ready()
        sample = asyncio.run(drive(suite.stack, args))
    elapsed = time.monotonic() - started
    result = {
        "mode": "failover",
        "streams": args.streams,
        "tokens_each": args.tokens,
        "tokens_per_s_each": args.tokens_per_s,
        "runner_dead_after_s": DEAD_AFTER_S,
        "handoff_stall_ms": summary(sample.stall_ms["handoff"]),
        "kill_stall_ms": summary(sample.stall_ms["kill"]),
        "recomputed_per_continuation": summary(sample.recomputed),
        "sigterm_exit_s": sample.exit_s,
        "streams_exact": sample.exact,
        "faults": dict(sample.faults),
        "elapsed_s": elapsed,
    }
    emit(
        f"failover: {args.streams} answers of {args.tokens} tokens at {args.tokens_per_s:g} "
        f"tokens/s over {RUNNERS} runners; one SIGTERM (handoff), one SIGKILL "
        f"(dead after {DEAD_AFTER_S:g}s)",
        [
            line("stall at a SIGTERM handoff", sample.stall_ms["handoff"]),
            line("stall at a kill -9 failover", sample.stall_ms["kill"]),
            line("tokens recomputed per continuation", sample.recomputed, "tokens"),
            f"  SIGTERM to exit {', '.join(f'{s:.2f}s' for s in sample.exit_s)}",
            f"  answers complete and exact {sample.exact}/{args.streams} "
            f"in {elapsed:.1f}s; faults {dict(sample.faults) or 'none'}",
        ],
        result,
        args.json,
    )
    return result
