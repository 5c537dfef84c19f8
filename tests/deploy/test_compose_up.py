"""`make compose-up`: docker-compose.yml's stack, run with podman-compose, streams through
its edge: an answer end to end, a resume after a cut, a cancel.

Marked `image` (it builds the image, and stand-ins when no registry answers): it runs
only with SLUICE_IMAGE_TESTS=1.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from deploy_support import DEPLOY, PODMAN_ENV, ROOT, image_test_marks

from libs.client.http import (
    Received,
    SluiceClient,
    StreamRefused,
    events,
    socket_events,
    socket_url,
)
from libs.tools.servers import free_port

pytestmark = image_test_marks()

PODMAN_COMPOSE = str(Path(sys.executable).with_name("podman-compose"))
STARTUP_S = 120.0
TIMEOUT_S = 30.0


def compose(project: str, edge_port: int, *args: str, timeout: float) -> None:
    env = {
        **PODMAN_ENV,
        "PODMAN_COMPOSE": PODMAN_COMPOSE,
        "COMPOSE_PROJECT_NAME": project,
        "EDGE_PORT": str(edge_port),
    }
    done = subprocess.run(
        list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


@pytest.fixture(scope="module")
def edge() -> Iterator[str]:
    """The stack up under its own project name and edge port; down, volumes and all, after."""
    project, port = f"sluice-test-{os.getpid()}", free_port()
    try:
        compose(project, port, str(DEPLOY / "compose" / "up.sh"), timeout=840)
        origin = f"http://localhost:{port}"
        wait_until_served(origin)
        yield origin
    finally:
        compose(
            project, port, PODMAN_COMPOSE, "-f", "docker-compose.yml",
            "-f", "deploy/compose/standins.yml", "down", "--volumes", timeout=300,
        )  # fmt: skip


def wait_until_served(origin: str) -> None:
    """Until the edge reaches both upstreams: the streamer (/v1/models) and the gateway
    (a stream that does not exist: its JSON 404, not the edge's 502)."""
    deadline = time.monotonic() + STARTUP_S
    probes = {"/v1/models": 200, "/v1/streams/st_0": 404}
    answers: dict[str, object] = {}
    while time.monotonic() < deadline:
        for path in probes:
            try:
                with urllib.request.urlopen(origin + path, timeout=3) as answer:
                    answers[path] = answer.status
            except urllib.error.HTTPError as refused:
                answers[path] = refused.code
            except OSError as exc:
                answers[path] = exc
        if all(answers.get(path) == expected for path, expected in probes.items()):
            return
        time.sleep(1)
    raise AssertionError(f"the edge did not reach the services within {STARTUP_S}s: {answers}")


@pytest.fixture
async def client(edge: str) -> AsyncIterator[SluiceClient]:
    async with aiohttp.ClientSession() as session:
        yield SluiceClient(session, edge)


async def create(client: SluiceClient, **sim: float) -> dict[str, str]:
    """POST /v1/streams through the edge, retrying while the stack still starts."""
    deadline = asyncio.get_running_loop().time() + STARTUP_S
    while True:
        try:
            return await client.create(prompt="through the edge", sim=sim)
        except (StreamRefused, aiohttp.ClientError) as refused:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the stack did not take a stream: {refused}") from refused
            await asyncio.sleep(1)


async def read(
    client: SluiceClient, url: str, last_event_id: str | None = None, stop_after: int = 0
) -> list[Received]:
    """Events until the stream ends, or until `stop_after` tokens (then the client hangs up)."""
    received: list[Received] = []

    async def follow() -> None:
        async for event in events(client.session, url, last_event_id):
            received.append(event)
            if stop_after and sum(r.type == "token" for r in received) >= stop_after:
                return

    await asyncio.wait_for(follow(), TIMEOUT_S)
    return received


def seqs(received: list[Received]) -> list[int]:
    """Every token number the frames carry (a frame holds `n` tokens ending at `seq`)."""
    frames = [r.json() for r in received if r.type == "token"]
    return [i for f in frames for i in range(f["seq"] - f["n"] + 1, f["seq"] + 1)]


async def test_an_answer_streams_through_the_edge(client: SluiceClient, edge: str) -> None:
    created = await create(client, tokens=30, tokens_per_s=200)
    assert created["events_url"].startswith(edge + "/v1/streams/")
    received = await read(client, created["events_url"])
    assert seqs(received) == list(range(1, 31))
    assert received[-1].type == "done"
    assert received[-1].json()["finish_reason"] == "stop"


async def test_a_cut_stream_resumes_through_the_edge_losing_nothing(
    client: SluiceClient,
) -> None:
    created = await create(client, tokens=60, tokens_per_s=50)
    first = await read(client, created["events_url"], stop_after=10)
    last_id = first[-1].event.last_event_id
    rest = await read(client, created["events_url"], last_event_id=last_id)
    assert seqs(first) + seqs(rest) == list(range(1, 61))
    assert rest[-1].type == "done"


async def test_a_cancel_through_the_edge_ends_the_stream(client: SluiceClient) -> None:
    created = await create(client, tokens=2000, tokens_per_s=20)
    await read(client, created["events_url"], stop_after=2)
    status, answer = await client.cancel(created["id"])
    assert (status, answer["cancel"]) == (202, "requested")
    received = await read(client, created["events_url"])
    assert received[-1].type == "done"
    assert received[-1].json()["finish_reason"] == "cancelled"
    assert seqs(received)[-1] < 2000


async def test_the_chat_page_and_its_sdk_are_served_through_the_edge(
    client: SluiceClient, edge: str
) -> None:
    async with client.session.get(edge + "/") as page:
        assert page.status == 200 and page.content_type == "text/html"
        assert "/ui/chat.js" in await page.text()
    async with client.session.get(edge + "/sdk/sluice.js") as sdk:
        assert sdk.status == 200 and "javascript" in sdk.content_type


async def test_a_stream_reads_over_the_websocket_data_path_through_the_edge(
    client: SluiceClient,
) -> None:
    created = await create(client, tokens=30, tokens_per_s=200)

    async def follow() -> list[Received]:
        async with client.session.ws_connect(socket_url(created["events_url"])) as ws:
            return [event async for event in socket_events(ws)]

    received = await asyncio.wait_for(follow(), TIMEOUT_S)
    assert seqs(received) == list(range(1, 31))
    assert received[-1].type == "done"
