"""``sluice bench resume``: how long a reconnecting client waits for its next token.

Every stream's client reads a few tokens, drops the connection, waits a moment (so
tokens gather in the log meanwhile) and reconnects with ``Last-Event-ID``, over and
over. Resume latency is the time from starting the reconnect to the first token
event on the new connection: TCP connect, request, the streamer's meta and log
reads, the live subscription, the first write. Every resumed stream is also checked
for exactness (no token repeated, none skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp

from libs.client.http import Received, SluiceClient, events
from libs.tools.bench.stats import emit, line, summary


@dataclass
class Sample:
    resume_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    streams_exact: int = 0
    faults: Counter[str] = field(default_factory=Counter)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams")
    parser.add_argument("--reconnects", type=int, default=20, help="reconnects per stream")
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per stream")
    parser.add_argument(
        "--tokens-per-s", type=float, default=100.0, help="each stream's model speed"
    )
    parser.add_argument(
        "--frames", type=int, default=10, help="token frames read per connection (1..N at random)"
    )
    parser.add_argument(
        "--pause-ms", type=float, default=50.0, help="offline time before each reconnect"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cut points")


@dataclass
class Cursor:
    """A client's position: the last token it holds and whether the stream has ended."""

    last: int = 0
    ended: bool = False


async def one_connection(
    session: aiohttp.ClientSession, url: str, cursor: Cursor, frames_wanted: int, sample: Sample
) -> None:
    """Read up to ``frames_wanted`` token frames from ``cursor`` on; record the resume latency."""
    started = time.perf_counter()
    frames = 0
    resume_id = str(cursor.last) if cursor.last else None
    stream = cast(AsyncGenerator[Received, None], events(session, url, resume_id))
    async with aclosing(stream):
        async for received in stream:
            if received.type == "status" and resume_id and frames == 0:
                sample.status_ms.append((time.perf_counter() - started) * 1000)
            if received.type == "token":
                data = received.json()
                if frames == 0 and resume_id:
                    sample.resume_ms.append((time.perf_counter() - started) * 1000)
                if data["seq"] - data["n"] != cursor.last:
                    sample.faults["gap_or_repeat"] += 1
                cursor.last = data["seq"]
                frames += 1
                if frames >= frames_wanted:
                    return
            elif received.type in ("done", "error"):
                cursor.ended = True
                if received.type == "error":
                    sample.faults[received.json()["type"]] += 1
                return


async def one_stream(
    client: SluiceClient, args: argparse.Namespace, index: int, rng: random.Random, sample: Sample
) -> None:
    body = {
        "prompt": f"resume bench {index}",
        "max_tokens": args.tokens,
        "sim": {"tokens": args.tokens, "tokens_per_s": args.tokens_per_s, "ttft_ms": 0},
    }
    try:
        created = await client.create(**body)
        cursor = Cursor()
        for _ in range(args.reconnects + 1):
            if cursor.ended:
                break
            reads = rng.randint(1, args.frames)
            await one_connection(client.session, created["events_url"], cursor, reads, sample)
            await asyncio.sleep(args.pause_ms / 1000)
        while not cursor.ended:
            await one_connection(client.session, created["events_url"], cursor, 1 << 30, sample)
        if cursor.last == args.tokens:
            sample.streams_exact += 1
        else:
            sample.faults["short"] += 1
    except Exception as exc:
        sample.faults[type(exc).__name__] += 1


async def run_streams(gateway: str, args: argparse.Namespace) -> Sample:
    sample = Sample()
    rng = random.Random(args.seed)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = SluiceClient(session, gateway)
        await asyncio.gather(
            *(one_stream(client, args, i, rng, sample) for i in range(args.streams))
        )
    return sample


def run(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    started = time.monotonic()
    sample = asyncio.run(run_streams(gateway, args))
    elapsed = time.monotonic() - started
    result = {
        "mode": "resume",
        "streams": args.streams,
        "reconnects_each": args.reconnects,
        "tokens_each": args.tokens,
        "tokens_per_s_each": args.tokens_per_s,
        "pause_ms": args.pause_ms,
        "resume_ms": summary(sample.resume_ms),
        "resume_status_ms": summary(sample.status_ms),
        "streams_exact": sample.streams_exact,
        "faults": dict(sample.faults),
        "elapsed_s": elapsed,
    }
    emit(
        f"resume: {args.streams} streams x {args.reconnects} reconnects, "
        f"{args.tokens} tokens at {args.tokens_per_s:g} tokens/s, {args.pause_ms:g} ms offline each",
        [
            line("reconnect to its status event", sample.status_ms),
            line("reconnect to first resumed token", sample.resume_ms),
            f"  streams complete and exact {sample.streams_exact}/{args.streams} "
            f"in {elapsed:.1f}s; faults {dict(sample.faults) or 'none'}",
        ],
        result,
        args.json,
    )
    return result
