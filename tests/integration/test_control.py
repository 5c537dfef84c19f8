"""The ``/v1/control`` WebSocket: cancel, feedback, pace, submit, status, and refusing bad frames."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis

from libs.client.http import Received, SluiceClient
from libs.common import names
from libs.common.store import StreamStore
from libs.common.wire import Done, tokens_codec
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV, own_servers
from tests.integration.helpers import (
    assert_model_stopped,
    final,
    read_stream,
    read_until_tokens,
    sim,
    text,
    tokens,
)

TIMEOUT_S = 15.0
SLOW = sim(tokens=1000, tokens_per_s=50, ttft_ms=20)
FINAL = {"completed", "cancelled", "superseded", "abandoned", "failed"}


class Control:
    """A client of ``/v1/control`` that keeps every frame it received, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._claimed: set[int] = set()

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame if isinstance(frame, str) else _json(frame))

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The first frame not yet claimed of type ``kind`` whose fields match."""
        deadline = time.monotonic() + TIMEOUT_S
        seen = 0
        while True:
            for index in range(seen, len(self.frames)):
                if index not in self._claimed and _matches(self.frames[index], kind, fields):
                    self._claimed.add(index)
                    return self.frames[index]
            seen = len(self.frames)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self.frames.append(await self.ws.receive_json(timeout=remaining))
            except TimeoutError:
                raise AssertionError(
                    f"no {kind} {fields} within {TIMEOUT_S}s; got {self.frames}"
                ) from None

    async def next(self) -> dict[str, Any]:
        """The next frame off the wire, claimed."""
        self.frames.append(await self.ws.receive_json(timeout=TIMEOUT_S))
        self._claimed.add(len(self.frames) - 1)
        return self.frames[-1]

    async def ping(self) -> None:
        await self.send({"type": "ping", "ref": "alive?"})
        await self.expect("pong", ref="alive?")

    def statuses(self, stream_id: str) -> list[str]:
        return [
            f["status"]
            for f in self.frames
            if f["type"] == "status" and f["stream_id"] == stream_id
        ]

    async def until_final(self, stream_id: str) -> list[str]:
        """Every status of the stream up to and including its final one."""
        while not FINAL & set(self.statuses(stream_id)):
            await self.expect("status", stream_id=stream_id)
        return self.statuses(stream_id)


def _json(frame: dict[str, Any]) -> str:
    return msgspec.json.encode(frame).decode()


def _matches(frame: dict[str, Any], kind: str, fields: dict[str, Any]) -> bool:
    return frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items())


async def connect(
    session: aiohttp.ClientSession, gateway: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Control]:
    async with session.ws_connect(f"{gateway}/v1/control", headers=headers) as ws:
        yield Control(ws)


@pytest.fixture
async def control(session: aiohttp.ClientSession, stack: Stack) -> AsyncIterator[Control]:
    async for socket in connect(session, stack.gateway):
        yield socket


async def test_ping_gets_pong_with_its_ref(control: Control) -> None:
    await control.send({"type": "ping", "ref": "r-1"})
    assert await control.expect("pong") == {"type": "pong", "ref": "r-1"}


async def test_submit_reports_queued_running_completed_on_the_socket(
    control: Control, session: aiohttp.ClientSession
) -> None:
    await control.send({"type": "submit", "ref": "s-1", "prompt": "hi", "sim": sim(tokens=10)})
    ack = await control.expect("ack", ref="s-1")
    stream_id = ack["stream_id"]
    assert stream_id == ack["id"] and ack["status"] == "queued"
    received = await read_stream(session, ack["events_url"])

    assert final(received).json()["tokens"] == 10
    assert await control.until_final(stream_id) == ["queued", "running", "completed"]
    first_status = next(
        i
        for i, f in enumerate(control.frames)
        if f["type"] == "status" and f["stream_id"] == stream_id
    )
    assert control.frames.index(ack) < first_status, "the ack comes before its stream's status"


async def test_submit_frame_is_validated_like_the_post_body(control: Control) -> None:
    await control.send({"type": "submit", "ref": "bad", "prompt": "x", "model": "gpt-nope"})
    error = await control.expect("error", ref="bad")
    assert error["error"]["type"] == "invalid_request"
    assert "unknown model" in error["error"]["message"]
    await control.ping()


async def test_cancel_over_the_socket_mid_stream_stops_the_model_at_once(
    control: Control, client: SluiceClient, session: aiohttp.ClientSession, stack: Stack
) -> None:
    created = await client.create(prompt="ws cancel", sim=SLOW)
    received: list[Received] = []
    follower = await read_until_tokens(session, created["events_url"], 10, received)
    cancel_sent = time.monotonic()
    await control.send({"type": "cancel", "ref": "c-1", "stream_id": created["id"]})
    await asyncio.wait_for(follower, TIMEOUT_S)
    stopped_s = time.monotonic() - cancel_sent

    ack = await control.expect("ack", ref="c-1")
    assert ack["stream_id"] == created["id"] and ack["status"] == "running"
    usage = final(received).json()
    print(f"\nWS cancel: done {stopped_s * 1000:.1f} ms after the frame; {usage}")
    assert usage["finish_reason"] == "cancelled"
    assert stopped_s < 1.0, "the issue asks for 100 ms; 10x margin on a shared machine"
    assert usage["tokens_after_cancel"] <= 2 and 0 <= usage["cancel_to_stop_ms"] < 1000
    assert usage["tokens"] == sum(t["n"] for t in tokens(received))
    assert await control.until_final(created["id"]) == ["cancelled"]
    _, info = await client.get(created["id"])
    assert info["status"] == "cancelled"
    assert info["tokens_after_cancel"] == usage["tokens_after_cancel"]
    await assert_model_stopped(stack, created["id"], usage["tokens"])


async def test_cancel_of_a_stream_submitted_on_the_socket_reports_every_status(
    control: Control, session: aiohttp.ClientSession
) -> None:
    await control.send({"type": "submit", "ref": "s", "prompt": "long", "sim": SLOW})
    ack = await control.expect("ack", ref="s")
    received: list[Received] = []
    follower = await read_until_tokens(session, ack["events_url"], 3, received)
    await control.send({"type": "cancel", "ref": "c1", "stream_id": ack["stream_id"]})
    await control.send({"type": "cancel", "ref": "c2", "stream_id": ack["stream_id"]})
    await asyncio.wait_for(follower, TIMEOUT_S)

    await control.expect("ack", ref="c1")
    await control.expect("ack", ref="c2")
    assert await control.until_final(ack["stream_id"]) == ["queued", "running", "cancelled"]
    assert final(received).json()["finish_reason"] == "cancelled"
    await control.ping()
    assert control.statuses(ack["stream_id"]).count("cancelled") == 1


async def test_a_cancel_that_finds_the_stream_ended_reports_its_final_status_once(
    control: Control, session: aiohttp.ClientSession, stack: Stack
) -> None:
    """The end is in Redis but its status message has not reached the gateway yet.

    Here it never will: the stream is ended behind the runner's back, so the runner's
    own finish loses and publishes nothing. The cancel's answer must carry the status.
    """
    await control.send({"type": "submit", "ref": "s", "prompt": "long", "sim": SLOW})
    ack = await control.expect("ack", ref="s")
    stream_id = ack["stream_id"]
    await control.expect("status", stream_id=stream_id, status="running")
    async with aioredis.from_url(stack.redis_url) as redis:
        store = StreamStore(redis, ttl_s=60, maxlen=1000)
        done = Done(finish_reason="cancelled", tokens=0)
        assert await store.finish(stream_id, done, tokens_codec.encode(done), status="cancelled")

    await control.send({"type": "cancel", "ref": "c", "stream_id": stream_id})

    assert (await control.expect("ack", ref="c"))["status"] == "cancelled"
    assert await control.until_final(stream_id) == ["queued", "running", "cancelled"]
    await control.ping()
    assert control.statuses(stream_id).count("cancelled") == 1


async def test_cancel_of_a_finished_stream_is_acked_and_changes_nothing(
    control: Control, client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="done already", sim=sim(tokens=5))
    await read_stream(session, created["events_url"])
    _, before = await client.get(created["id"])

    await control.send({"type": "cancel", "ref": "late", "stream_id": created["id"]})

    assert (await control.expect("ack", ref="late"))["status"] == "completed"
    await control.ping()
    assert control.statuses(created["id"]) == []
    assert (await client.get(created["id"]))[1] == before


async def test_feedback_is_stored_in_the_feedback_stream_with_tenant_and_stream_id(
    control: Control, client: SluiceClient, session: aiohttp.ClientSession, stack: Stack
) -> None:
    created = await client.create(prompt="rate me", sim=sim(tokens=5))
    await read_stream(session, created["events_url"])
    frame = {"type": "feedback", "ref": "f", "stream_id": created["id"], "rating": -1}
    await control.send({**frame, "comment": "too terse"})

    assert await control.expect("ack", ref="f") == {
        "type": "ack",
        "ref": "f",
        "stream_id": created["id"],
    }
    async with aioredis.from_url(stack.redis_url, decode_responses=True) as redis:
        entries = await redis.xrevrange(names.FEEDBACK_STREAM, count=50)
    stored = [
        fields for _, fields in entries or [] if fields and fields["stream_id"] == created["id"]
    ]
    assert len(stored) == 1
    assert stored[0]["tenant"] == "anonymous"
    assert stored[0]["rating"] == "-1" and stored[0]["comment"] == "too terse"


async def test_feedback_on_an_unknown_stream_is_not_found(control: Control) -> None:
    stream_id = "st_" + "0" * 32
    await control.send({"type": "feedback", "ref": "f", "stream_id": stream_id, "rating": 1})
    assert (await control.expect("error", ref="f"))["error"]["type"] == "not_found"
    await control.ping()


async def test_pace_reaches_the_streamer_and_caps_the_readers_frames(
    control: Control, client: SluiceClient, session: aiohttp.ClientSession
) -> None:
    created = await client.create(prompt="paced", sim=sim(tokens=60, tokens_per_s=40, ttft_ms=20))
    received: list[Received] = []
    follower = await read_until_tokens(session, created["events_url"], 1, received)
    await control.send(
        {"type": "pace", "ref": "p", "stream_id": created["id"], "max_events_per_s": 2}
    )
    assert (await control.expect("ack", ref="p"))["stream_id"] == created["id"]
    await asyncio.wait_for(follower, TIMEOUT_S)

    frames = [r for r in received if r.type == "token"]
    assert final(received).json()["tokens"] == 60
    assert len(text(received).split()) == 60
    assert len(frames) <= 10, f"1.5 s at 2 frames/s, not one frame per token: {len(frames)}"


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("not json at all", "malformed"),
    ("[1, 2, 3]", "Expected `object`"),
    ('"cancel"', "Expected `object`"),
    ("42", "Expected `object`"),
    ('{"type": "explode"}', "Invalid value 'explode'"),
    ("{}", "missing required field `type`"),
    ('{"type": "cancel"}', "missing required field `stream_id`"),
    ('{"type": "cancel", "stream_id": 42}', "Expected `str`, got `int` - at `$.stream_id`"),
    ('{"type": "feedback", "stream_id": "st_x", "rating": 5}', "`$.rating`"),
    ('{"type": "pace", "stream_id": "st_x", "max_events_per_s": "fast"}', "`$.max_events_per_s`"),
    ('{"type": "pace", "stream_id": "st_x", "max_events_per_s": 0}', "`$.max_events_per_s`"),
    ('{"type": "ping", "surprise": true}', "unknown field `surprise`"),
    ('{"type": "submit", "prompt": 42}', "`$.prompt`"),
    ('{"type": "submit"}', "exactly one of `prompt` and `messages`"),
    (b"\xff\xfe\x00binary", "malformed"),
]


async def test_malformed_frames_get_error_frames_and_the_socket_stays_open(
    control: Control,
) -> None:
    for number, (frame, fragment) in enumerate(BAD_FRAMES):
        await control.send(frame)
        error = await control.expect("error")
        assert error["error"]["type"] == "invalid_request", (frame, error)
        assert fragment in error["error"]["message"], (frame, error)
        await control.send({"type": "ping", "ref": f"after-{number}"})
        await control.expect("pong", ref=f"after-{number}")


async def test_a_malformed_frame_with_a_ref_gets_its_ref_back(control: Control) -> None:
    await control.send({"type": "cancel", "ref": "mine", "stream_id": ["no"]})
    error = await control.expect("error")
    assert error["ref"] == "mine" and error["error"]["type"] == "invalid_request"


async def test_an_oversized_frame_is_too_large_and_the_socket_stays_open(control: Control) -> None:
    huge = {"type": "feedback", "stream_id": "st_x", "rating": 1, "comment": "x" * 100_000}
    await control.send(huge)
    error = await control.expect("error")
    assert error["error"]["type"] == "too_large"
    await control.ping()


async def test_a_frame_past_the_hard_limit_closes_the_socket_with_1009(control: Control) -> None:
    await control.send("x" * 2_000_000)
    message = await control.ws.receive(timeout=TIMEOUT_S)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1009


async def test_too_many_frames_get_rate_limited_error_frames(control: Control) -> None:
    for number in range(80):
        await control.send({"type": "ping", "ref": str(number)})
    replies = [await control.next() for _ in range(80)]

    limited = [f for f in replies if f["type"] == "error"]
    assert 1 <= len(limited) <= 40, "a burst of 40 passes; the rest is refused"
    assert len(limited) + sum(f["type"] == "pong" for f in replies) == 80
    assert all(f["error"]["type"] == "rate_limited" for f in limited)
    assert limited[0]["retry_after_s"] == 1
    await asyncio.sleep(limited[0]["retry_after_s"])
    await control.ping()


KEYS = "key-a:tenant-a,key-b:tenant-b"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A suite of its own with API keys: two tenants."""
    tmp: Path = tmp_path_factory.mktemp("keyed")
    with own_servers(tmp) as (nats, redis):
        env = {**FAST_ENV, "SLUICE_API_KEYS": KEYS}
        suite = Stack(nats.url, f"{redis.url}/0", tmp, env=env)
        try:
            yield suite.start()
        finally:
            suite.stop()


async def upgrade(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, Any]:
    """A WebSocket handshake by hand, to read the refusal's body."""
    handshake = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **headers,
    }
    async with session.get(url, headers=handshake) as response:
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("query", "headers"),
    [("", {}), ("", {"Authorization": "Bearer nope"}), ("?api_key=nope", {})],
)
async def test_control_without_a_valid_key_is_401_json_before_the_upgrade(
    keyed: Stack, session: aiohttp.ClientSession, query: str, headers: dict[str, str]
) -> None:
    status, body = await upgrade(session, f"{keyed.gateway}/v1/control{query}", **headers)
    assert status == 401 and body["error"]["type"] == "unauthorized"


async def test_control_accepts_a_bearer_header_or_an_api_key_query(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    async for socket in connect(session, keyed.gateway, {"Authorization": "Bearer key-a"}):
        await socket.ping()
    async with session.ws_connect(f"{keyed.gateway}/v1/control?api_key=key-b") as ws:
        await Control(ws).ping()


async def test_another_tenants_stream_is_not_found_on_the_socket_and_keeps_running(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    theirs = await SluiceClient(session, keyed.gateway, api_key="key-b").create(
        prompt="tenant b", sim=sim(tokens=40, tokens_per_s=100)
    )
    stream_id = theirs["id"]
    async for socket in connect(session, keyed.gateway, {"Authorization": "Bearer key-a"}):
        for kind, extra in (
            ("cancel", {}),
            ("feedback", {"rating": 1}),
            ("pace", {"max_events_per_s": 1}),
        ):
            await socket.send({"type": kind, "ref": kind, "stream_id": stream_id, **extra})
            error = await socket.expect("error", ref=kind)
            assert error["error"]["type"] == "not_found", error
        await socket.ping()
    received = await read_stream(session, theirs["events_url"])
    assert final(received).json()["finish_reason"] == "stop"


async def test_a_tenant_sees_its_own_streams_status_on_its_socket(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    async for socket in connect(session, keyed.gateway, {"Authorization": "Bearer key-a"}):
        await socket.send({"type": "submit", "ref": "a", "prompt": "mine", "sim": sim(tokens=5)})
        ack = await socket.expect("ack", ref="a")
        assert await socket.until_final(ack["stream_id"]) == ["queued", "running", "completed"]
