"""Behind a train's tunnels and a weak signal, every design delivers every stream exactly.

The profiles' clocks are compressed (a cut every 2.5 s, a stall every 0.6 s on average) so that
each 3 s stream meets the weather; users follow their streams with the benchmark's
clients of the three designs, which resume as a browser would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from libs.tools.bench.weather_clients import DESIGNS, Routes, Seen, run_design
from libs.tools.netsim import PROFILES, Cuts, Episodes, NetSim, Profile, Route
from libs.tools.stack import Stack
from tests.integration.resumable import expected_text

STREAMS = 20
TOKENS = 150
TUNNEL = PROFILES["tunnel"].with_(cuts=Cuts(period_s=2.5, outage_s=1.0, first_s=1.0))
FLAKY = PROFILES["flaky"].with_(stalls=Episodes(every_s=0.6, min_s=0.6, max_s=1.5))
TIMEOUT_S = 120.0


def route(url: str) -> Route:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return Route(parts.hostname, parts.port)


@pytest.fixture
async def users() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def weathered(
    stack: Stack, session: aiohttp.ClientSession, profile: Profile
) -> tuple[NetSim, list[Seen]]:
    """Every design's users, one stream each, behind ``profile``."""
    sim = await NetSim(profile, [route(stack.gateway), route(stack.streamer)], seed=3).start()
    routes = Routes(*(f"http://127.0.0.1:{port}" for port in sim.ports))
    seen = [Seen(design, "adaptive") for design in DESIGNS for _ in range(STREAMS)]

    async def user(i: int, one: Seen) -> None:
        await asyncio.sleep(i % STREAMS * 0.05)
        sim_body = {"tokens": TOKENS, "tokens_per_s": 50, "ttft_ms": 100}
        body = {"prompt": f"weather {i}", "max_tokens": TOKENS, "sim": sim_body}
        await run_design(session, routes, body, one, "adaptive")

    try:
        await asyncio.wait_for(asyncio.gather(*(user(i, s) for i, s in enumerate(seen))), TIMEOUT_S)
    finally:
        await sim.stop()
    return sim, seen


def assert_exact(seen: list[Seen]) -> None:
    for i, one in enumerate(seen):
        assert one.end == "done", (one.design, one.end)
        assert (one.lost, one.duplicated) == (0, 0), one.design
        assert "".join(one.texts) == expected_text(f"weather {i}", TOKENS), one.design


async def test_twenty_streams_per_design_through_tunnels_complete_exactly(
    stack: Stack, users: aiohttp.ClientSession
) -> None:
    sim, seen = await weathered(stack, users, TUNNEL)
    assert_exact(seen)
    assert sim.cuts["fin"] >= 1 and sim.cuts["rst"] >= 1, sim.cuts
    for design in DESIGNS:
        assert sum(s.reconnects for s in seen if s.design == design) > 0, design


async def test_twenty_streams_per_design_through_stalls_complete_exactly(
    stack: Stack, users: aiohttp.ClientSession
) -> None:
    _sim, seen = await weathered(stack, users, FLAKY)
    assert_exact(seen)
    assert max(gap for s in seen for gap in s.gaps_ms()) > 500, "the streams met a stall"
