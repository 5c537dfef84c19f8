"""``sluice bench network``: what a user sees of a stream behind each network weather profile.

For each profile (``sluice netsim``, started as its own process in front of the
gateway and the streamer), each design (``sse``, ``ws``, ``hybrid``) and each flush
policy (a frame per ``token``, sluice's ``adaptive`` coalescing, fixed ``50ms``
batches), ``--streams`` users each send one stream at once, all cells of a profile
side by side (each connection has its own bandwidth, as each user has their own
link). Reported per cell: time to first visible token, the gaps between updates
against the model's own, stalls over 250 ms per minute that the model did not cause,
reconnects, tokens lost and duplicated (both must be 0, and every text is checked
against the log), and payload bytes per token.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from libs.client.http import events
from libs.tools.bench.stats import emit, percentile
from libs.tools.bench.weather_clients import DESIGNS, Routes, Seen, run_design
from libs.tools.netsim.profiles import PROFILES

FLUSHES = {"token": "token", "adaptive": "adaptive", "50ms": "50"}
STREAM_TIMEOUT_S = 180.0
START_SPREAD_S = 1.0


def _names(choices: list[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose among {', '.join(choices)}")
        return names

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    profiles, flushes = list(PROFILES), list(FLUSHES)
    parser.add_argument("--profiles", type=_names(profiles), default=profiles, help="comma list")
    parser.add_argument("--designs", type=_names(list(DESIGNS)), default=list(DESIGNS))
    parser.add_argument("--flush", type=_names(flushes), default=flushes, help="comma list")
    parser.add_argument("--streams", type=int, default=3, help="users per cell")
    parser.add_argument("--tokens", type=int, default=450, help="tokens per stream")
    parser.add_argument("--tokens-per-s", type=float, default=30.0, help="the model's speed")
    parser.add_argument("--ttft-ms", type=int, default=300, help="the model's first token")
    parser.add_argument("--seed", type=int, default=1, help="the weather's seed")
    parser.add_argument("--plots", help="write CDF plots of the gaps into this folder")


@dataclass
class Cell:
    profile: str
    design: str
    flush: str
    seen: list[Seen]
    mismatched: int = 0

    def figures(self) -> dict[str, Any]:
        first = [ms for s in self.seen if (ms := s.first_token_ms()) is not None]
        gaps = [gap for s in self.seen for gap in s.gaps_ms()]
        model = [gap for s in self.seen for gap in s.model_gaps_ms()]
        minutes = sum(s.reading_s() for s in self.seen) / 60
        tokens = sum(s.tokens for s in self.seen)
        return {
            "profile": self.profile,
            "design": self.design,
            "flush": self.flush,
            "streams": len(self.seen),
            "completed": sum(s.end == "done" for s in self.seen),
            "first_token_ms_p50": percentile(first, 50),
            "first_token_ms_p95": percentile(first, 95),
            "gap_ms_p50": percentile(gaps, 50),
            "gap_ms_p99": percentile(gaps, 99),
            "model_gap_ms_p50": percentile(model, 50),
            "model_gap_ms_p99": percentile(model, 99),
            "stalls_per_min": sum(s.stalls() for s in self.seen) / minutes if minutes else 0.0,
            "reconnects": sum(s.reconnects for s in self.seen),
            "lost": sum(s.lost for s in self.seen),
            "duplicated": sum(s.duplicated for s in self.seen),
            "text_mismatches": self.mismatched,
            "bytes_per_token": sum(s.bytes for s in self.seen) / tokens if tokens else 0.0,
            "gaps_ms": gaps,
        }


class Proxy:
    """``sluice netsim`` as its own process, so its timers never share a loop with the users."""

    def __init__(self, profile: str, gateway: str, streamer: str, seed: int) -> None:
        routes = [f"0={urlsplit(url).hostname}:{urlsplit(url).port}" for url in (gateway, streamer)]
        command = [sys.executable, "-m", "libs.tools.cli", "netsim", "--profile", profile]
        command += ["--seed", str(seed)] + [arg for r in routes for arg in ("--route", r)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        ports = [self._port() for _ in routes]
        self.routes = Routes(f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")

    def _port(self) -> int:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("sluice netsim exited before listening")
        return int(line.split(" -> ")[0].rsplit(":", 1)[1])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)


async def streamer_of(session: aiohttp.ClientSession, gateway: str) -> str:
    """The streamer's base URL, from the events URL of a one-token stream."""
    async with session.post(f"{gateway}/v1/streams", json=_body("probe", 1, 1000, 0)) as r:
        created = await r.json()
    parts = urlsplit(created["events_url"])
    return f"{parts.scheme}://{parts.netloc}"


def _body(prompt: str, tokens: int, tokens_per_s: float, ttft_ms: int) -> dict[str, Any]:
    sim = {"tokens": tokens, "tokens_per_s": tokens_per_s, "ttft_ms": ttft_ms}
    return {"prompt": prompt, "max_tokens": tokens, "sim": sim}


async def _user(
    session: aiohttp.ClientSession,
    routes: Routes,
    args: argparse.Namespace,
    seen: Seen,
    delay: float,
) -> None:
    await asyncio.sleep(delay)
    body = _body(
        f"{seen.design} {seen.flush} {delay}", args.tokens, args.tokens_per_s, args.ttft_ms
    )
    try:
        await asyncio.wait_for(
            run_design(session, routes, body, seen, FLUSHES[seen.flush]), STREAM_TIMEOUT_S
        )
    except (TimeoutError, RuntimeError) as exc:
        seen.end = seen.end or f"failed {type(exc).__name__}"


async def _check_texts(session: aiohttp.ClientSession, cell: Cell) -> None:
    """Count streams whose text differs from the log's, read straight from the streamer."""
    for seen in cell.seen:
        if seen.end != "done":
            cell.mismatched += 1
            continue
        replay = [r async for r in events(session, seen.events_url)]
        text = "".join(r.json()["text"] for r in replay if r.type == "token")
        if text != "".join(seen.texts):
            cell.mismatched += 1


async def _profile(
    session: aiohttp.ClientSession,
    gateway: str,
    streamer: str,
    profile: str,
    args: argparse.Namespace,
) -> list[Cell]:
    proxy = Proxy(profile, gateway, streamer, args.seed)
    rng = random.Random(args.seed)
    cells = [
        Cell(profile, design, flush, [Seen(design, flush) for _ in range(args.streams)])
        for design in args.designs
        for flush in args.flush
    ]
    try:
        await asyncio.gather(
            *(
                _user(session, proxy.routes, args, seen, rng.uniform(0, START_SPREAD_S))
                for cell in cells
                for seen in cell.seen
            )
        )
    finally:
        proxy.stop()
    for cell in cells:
        await _check_texts(session, cell)
    return cells


def table(figures: list[dict[str, Any]]) -> list[str]:
    """The report as a Markdown table, one row per profile, design and flush policy."""
    lines = [
        "| profile | design | flush | first token p50 / p95 ms | stalls/min | gap p50 / p99 ms "
        "| reconnects | done | lost | dup | wrong text | bytes/token |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f['profile']} | {f['design']} | {f['flush']} "
            f"| {f['first_token_ms_p50']:.0f} / {f['first_token_ms_p95']:.0f} "
            f"| {f['stalls_per_min']:.1f} | {f['gap_ms_p50']:.0f} / {f['gap_ms_p99']:.0f} "
            f"| {f['reconnects']} | {f['completed']}/{f['streams']} | {f['lost']} "
            f"| {f['duplicated']} | {f['text_mismatches']} "
            f"| {f['bytes_per_token']:.0f} |"
        )
    return lines


async def _run(args: argparse.Namespace, gateway: str) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        streamer = await streamer_of(session, gateway)
        figures = []
        for profile in args.profiles:
            started = time.monotonic()
            cells = await _profile(session, gateway, streamer, profile, args)
            figures += [cell.figures() for cell in cells]
            print(f"  {profile}: {time.monotonic() - started:.0f} s", flush=True)
        return figures


def run(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    figures = asyncio.run(_run(args, gateway))
    if args.plots:
        from libs.tools.bench.plots import gap_cdfs

        gap_cdfs(figures, args.plots, 1000 / args.tokens_per_s)
    result = {"cells": figures}
    emit("network weather: what a user sees", table(figures), result, args.json)
    return result
