"""The weather proxy does what its profile says: delay, order, bandwidth, cuts, stalls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from libs.tools.netsim import PROFILES, Cuts, Episodes, NetSim, Profile, Route
from libs.tools.netsim.profiles import CutMode

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def sender(size: int) -> Handler:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        writer.write(b"x" * size)
        await writer.drain()
        await reader.read()
        writer.close()

    return send


async def proxied(handler: Handler, profile: Profile) -> AsyncIterator[tuple[NetSim, int]]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sim = await NetSim(profile, [Route("127.0.0.1", port)], seed=7).start()
    try:
        yield sim, sim.ports[0]
    finally:
        await sim.stop()
        server.close()


async def round_trip_s(port: int, rounds: int) -> float:
    """Mean round trip of an open connection (its opening round trip left out)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"open")
    await asyncio.wait_for(reader.readexactly(4), 10)
    started = time.perf_counter()
    for _ in range(rounds):
        writer.write(b"ping")
        await asyncio.wait_for(reader.readexactly(4), 10)
    elapsed = (time.perf_counter() - started) / rounds
    writer.close()
    return elapsed


@pytest.mark.parametrize("profile", [PROFILES["3g"], Profile("still", delay_ms=100)])
async def test_round_trip_is_the_profiles_within_ten_percent(profile: Profile) -> None:
    async for _sim, port in proxied(echo, profile):
        rtt = await round_trip_s(port, 8)
        assert rtt == pytest.approx(profile.rtt_ms / 1000, rel=0.1)


async def test_a_new_connection_pays_one_round_trip_before_its_first_byte() -> None:
    profile = Profile("still", delay_ms=100)
    async for _sim, port in proxied(echo, profile):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        await asyncio.wait_for(reader.readexactly(4), 10)
        writer.close()
        first = time.perf_counter() - started
        assert first == pytest.approx(2 * profile.rtt_ms / 1000, rel=0.1)


async def test_jitter_never_reorders_bytes() -> None:
    profile = Profile("jittery", delay_ms=2, jitter_ms=40)
    async for _sim, port in proxied(echo, profile):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = b"".join(b"%06d" % i for i in range(3000))
        for start in range(0, len(sent), 60):
            writer.write(sent[start : start + 60])
            await writer.drain()
            await asyncio.sleep(0)
        received = await asyncio.wait_for(reader.readexactly(len(sent)), 20)
        writer.close()
        assert received == sent


async def test_bandwidth_is_the_profiles_within_ten_percent() -> None:
    profile = PROFILES["3g"]
    size = 200_000
    async for _sim, port in proxied(sender(size), profile):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"go")
        first = await asyncio.wait_for(reader.readexactly(1460), 10)
        started = time.perf_counter()
        rest = await asyncio.wait_for(reader.readexactly(size - len(first)), 20)
        elapsed = time.perf_counter() - started
        writer.close()
        kbps = len(rest) * 8 / elapsed / 1000
        assert kbps == pytest.approx(profile.down_kbps, rel=0.1)


def cutting(mode: CutMode) -> Profile:
    return Profile("cut", delay_ms=1, cuts=Cuts(period_s=60, outage_s=1, first_s=0.3, mode=mode))


async def test_a_fin_cut_ends_the_connection_in_order() -> None:
    async for sim, port in proxied(echo, cutting("fin")):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert sim.cuts == {"fin": 1}
        writer.close()


async def test_an_rst_cut_resets_the_connection() -> None:
    async for sim, port in proxied(echo, cutting("rst")):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        assert sim.cuts == {"rst": 1}
        writer.close()


async def test_connections_opened_during_an_outage_are_cut_until_it_ends() -> None:
    async for _sim, port in proxied(echo, cutting("rst")):
        await asyncio.sleep(0.4)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await asyncio.sleep(1.0)
        assert await round_trip_s(port, 1) < 0.5


async def test_tunnel_alternates_fin_and_rst() -> None:
    profile = PROFILES["tunnel"].with_(cuts=Cuts(period_s=0.4, outage_s=0.1, first_s=0.1))
    async for sim, _port in proxied(echo, profile):
        await asyncio.sleep(0.65)
        assert sim.cuts == {"fin": 1, "rst": 1}


async def test_a_stall_holds_every_byte_until_it_ends() -> None:
    stalls = Episodes(every_s=0.2, min_s=1.0, max_s=1.0)
    async for _sim, port in proxied(echo, Profile("stalling", delay_ms=1, stalls=stalls)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        gaps = []
        for _ in range(40):
            started = time.perf_counter()
            writer.write(b"ping")
            await asyncio.wait_for(reader.readexactly(4), 10)
            gaps.append(time.perf_counter() - started)
        writer.close()
        assert max(gaps) >= 0.5
        assert min(gaps) < 0.1
