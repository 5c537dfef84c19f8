"""Per-tenant rate and connection limits: one tenant's burst is refused, another's is not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from libs.client.http import SluiceClient, socket_url
from libs.tools.stack import Stack
from tests.conftest import private_suite
from tests.integration.helpers import final, read_stream, sim

BURST = 6
SOCKETS = 2
SSE = 2


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "SLUICE_API_KEYS": "key-a:alice,key-b:bob",
        "SLUICE_TENANT_REQUESTS_PER_S": "1",
        "SLUICE_TENANT_REQUEST_BURST": str(BURST),
        "SLUICE_TENANT_FRAMES_PER_S": "1",
        "SLUICE_TENANT_FRAME_BURST": "4",
        "SLUICE_TENANT_MAX_SOCKETS": str(SOCKETS),
        "SLUICE_TENANT_MAX_SSE": str(SSE),
    }
    yield from private_suite(tmp_path_factory, "limits", env)


async def post(session: aiohttp.ClientSession, stack: Stack, key: str) -> tuple[int, Any, str]:
    body = {"prompt": "x", "sim": sim(tokens=1)}
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(f"{stack.gateway}/v1/streams", json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Retry-After", "")


async def test_a_burst_past_the_tenants_rate_is_429_and_another_tenant_is_served(
    limited: Stack, session: aiohttp.ClientSession
) -> None:
    answers = await asyncio.gather(*(post(session, limited, "key-a") for _ in range(BURST * 3)))
    refused = [a for a in answers if a[0] == 429]
    assert sum(1 for a in answers if a[0] == 201) <= BURST + 1
    assert refused and all(a[1]["error"]["type"] == "rate_limited" for a in refused)
    assert all(int(a[2]) >= 1 for a in refused)
    assert (await post(session, limited, "key-b"))[0] == 201


async def test_a_tenants_open_sockets_are_capped_and_share_one_frame_rate(
    limited: Stack, session: aiohttp.ClientSession
) -> None:
    await asyncio.sleep(BURST)  # the request bucket of the test before refills
    url = f"{limited.gateway}/v1/control"
    async with AsyncExitStack() as held:
        sockets = [
            await held.enter_async_context(
                session.ws_connect(url, headers={"Authorization": "Bearer key-a"})
            )
            for _ in range(SOCKETS)
        ]
        async with session.get(url, headers={"Authorization": "Bearer key-a"}) as extra:
            assert extra.status == 429 and (await extra.json())["error"]["type"] == "rate_limited"
        kinds = []
        for index in range(6):
            ws = sockets[index % SOCKETS]
            await ws.send_json({"type": "ping", "ref": str(index)})
            kinds.append((await ws.receive_json(timeout=10))["type"])
        assert kinds[:4] == ["pong"] * 4 and "error" in kinds[4:]
        async with session.ws_connect(url, headers={"Authorization": "Bearer key-b"}) as other:
            await other.send_json({"type": "ping", "ref": "b"})
            assert (await other.receive_json(timeout=10))["type"] == "pong"


async def test_a_tenants_open_sse_streams_are_capped(
    limited: Stack, session: aiohttp.ClientSession
) -> None:
    await asyncio.sleep(BURST)
    alice = SluiceClient(session, limited.gateway, api_key="key-a")
    slow = sim(tokens=40, tokens_per_s=10)
    created = [await alice.create(prompt=f"s{i}", sim=slow) for i in range(SSE + 1)]
    async with AsyncExitStack() as held:
        for stream in created[:SSE]:
            response = await held.enter_async_context(session.get(stream["events_url"]))
            assert response.status == 200
            await response.content.readline()
        async with session.get(created[SSE]["events_url"]) as refused:
            assert refused.status == 429
            assert (await refused.json())["error"]["type"] == "rate_limited"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused_socket:
            await session.ws_connect(socket_url(created[SSE]["events_url"]))
        assert refused_socket.value.status == 429
        chat = {"model": "sim", "messages": [{"role": "user", "content": "x"}], "stream": True}
        async with session.post(
            f"{limited.streamer}/v1/chat/completions",
            json=chat,
            headers={"Authorization": "Bearer key-a"},
        ) as refused:
            assert refused.status == 429
            assert (await refused.json())["error"]["type"] == "rate_limited"
    for _ in range(100):  # the streamer lets a place go once it notices a reader left
        async with session.get(created[SSE]["events_url"]) as answer:
            if answer.status == 200:
                break
        await asyncio.sleep(0.1)
    assert final(await read_stream(session, created[SSE]["events_url"])).type == "done"


async def reply_to(ws: aiohttp.ClientWebSocketResponse, ref: str) -> str:
    """The type of the answer to frame ``ref``, past the stream's own events (a frame
    refused before it is read gets an ``error`` without a ``ref``)."""
    while True:
        message = await ws.receive_json(timeout=10)
        if message.get("ref") == ref or message["type"] == "error":
            return str(message["type"])


async def test_a_stream_socket_draws_its_frames_from_the_tenants_rate(
    limited: Stack, session: aiohttp.ClientSession
) -> None:
    await asyncio.sleep(BURST)
    alice = SluiceClient(session, limited.gateway, api_key="key-a")
    created = await alice.create(prompt="over ws", sim=sim(tokens=40, tokens_per_s=10))
    async with session.ws_connect(socket_url(created["events_url"])) as ws:
        kinds = []
        for index in range(6):
            await ws.send_json({"type": "ping", "ref": str(index)})
            kinds.append(await reply_to(ws, str(index)))
    assert kinds[:4] == ["pong"] * 4 and "error" in kinds[4:]
