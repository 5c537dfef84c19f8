"""``/v1/control``: the WebSocket control channel beside the SSE data channel.

Each socket has its own bounded outbox and sender task, so NATS callbacks that
report status changes never await the client. Malformed, oversized or too-frequent
frames are answered with an ``error`` frame and the socket stays open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from typing import Any

import msgspec
from aiohttp import WSMsgType, web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.common import names
from libs.common.api import (
    FINAL_STATUSES,
    CancelFrame,
    ClientFrame,
    FeedbackFrame,
    PaceFrame,
    PingFrame,
    SubmitFrame,
    decode_frame,
)
from libs.common.errors import InvalidRequest, RateLimited, SluiceError, TooLarge
from libs.common.wire import Pace, control_codec, lifecycle_codec
from services.gateway.streams import Streams

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
FRAMES_PER_S = 20.0
FRAME_BURST = 40.0
OUTBOX = 1024
_json = msgspec.json.Encoder()


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ControlSession:
    def __init__(self, ws: web.WebSocketResponse, streams: Streams, nc: NATS, tenant: str) -> None:
        self._ws = ws
        self._streams = streams
        self._nc = nc
        self._tenant = tenant
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OUTBOX)
        self._watches: dict[str, Subscription] = {}
        self._bucket = TokenBucket(FRAMES_PER_S, FRAME_BURST)

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        try:
            async for message in self._ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._receive(message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            for subscription in self._watches.values():
                with suppress(Exception):
                    await subscription.unsubscribe()

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; a client that reads nothing loses status frames, not memory."""
        with suppress(asyncio.QueueFull):
            self._outbox.put_nowait(frame)

    async def _send_loop(self) -> None:
        while True:
            frame = await self._outbox.get()
            await self._ws.send_str(_json.encode(frame).decode())

    async def _receive(self, data: str | bytes) -> None:
        ref = None
        try:
            if len(data) > MAX_FRAME_BYTES:
                raise TooLarge(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
            if not self._bucket.take():
                raise RateLimited(f"more than {FRAMES_PER_S:g} frames/s", retry_after_s=1)
            frame = decode_frame(data)
            ref = frame.ref
            self.send(await self._handle(frame))
        except SluiceError as exc:
            error = {"type": exc.type, "message": exc.message}
            self.send({"type": "error", "ref": ref, "error": error})

    async def _handle(self, frame: ClientFrame) -> dict[str, Any]:
        if isinstance(frame, PingFrame):
            return {"type": "pong", "ref": frame.ref}
        if isinstance(frame, SubmitFrame):
            message, created = await self._streams.create(self._tenant, frame)
            await self._watch(message.id)
            return {
                "type": "ack",
                "ref": frame.ref,
                "stream_id": message.id,
                **msgspec.structs.asdict(created),
            }
        if isinstance(frame, CancelFrame):
            meta = await self._streams.cancel(self._tenant, frame.stream_id)
            if meta.status not in FINAL_STATUSES:
                await self._watch(frame.stream_id)
            return {
                "type": "ack",
                "ref": frame.ref,
                "stream_id": frame.stream_id,
                "status": meta.status,
            }
        if isinstance(frame, FeedbackFrame):
            await self._streams.meta(self._tenant, frame.stream_id)
            await self._streams.store.redis.xadd(
                names.FEEDBACK_STREAM,
                {
                    "tenant": self._tenant,
                    "stream_id": frame.stream_id,
                    "rating": str(frame.rating),
                    "comment": frame.comment,
                    "ts": str(time.time_ns()),
                },
            )
            return {"type": "ack", "ref": frame.ref, "stream_id": frame.stream_id}
        if isinstance(frame, PaceFrame):
            await self._streams.meta(self._tenant, frame.stream_id)
            pace = control_codec.encode(Pace(max_events_per_s=frame.max_events_per_s))
            await self._nc.publish(names.stream_subject(frame.stream_id, "control"), pace)
            return {"type": "ack", "ref": frame.ref, "stream_id": frame.stream_id}
        raise InvalidRequest(f"unsupported frame {type(frame).__name__}")

    async def _watch(self, stream_id: str) -> None:
        """Report this stream's status changes on this socket until it ends."""
        if stream_id in self._watches:
            return

        async def on_change(msg: Msg) -> None:
            change = lifecycle_codec.decode(msg.data)
            frame: dict[str, Any] = {
                "type": "status",
                "stream_id": stream_id,
                "status": change.status,
            }
            if change.position is not None:
                frame["position"] = change.position
            self.send(frame)
            if change.status in FINAL_STATUSES:
                subscription = self._watches.pop(stream_id, None)
                if subscription is not None:
                    await subscription.unsubscribe()

        self._watches[stream_id] = await self._nc.subscribe(
            names.stream_subject(stream_id, "lifecycle"), cb=on_change
        )
