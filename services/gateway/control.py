"""``/v1/control``: the WebSocket control channel beside the SSE data channel.

Each socket has its own bounded outbox and sender task, so NATS callbacks that
report status changes never await the client. Malformed, oversized or too-frequent
frames are answered with an ``error`` frame and the socket stays open; a frame past
:data:`HARD_FRAME_BYTES` is not even read, and aiohttp closes the socket (1009).

Status changes of a stream are subscribed to before the frame that concerns it is
acted on (so none is missed) and held until that frame's ``ack`` has gone out (so
the client always hears of a stream before it hears of its status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress

import msgspec
from aiohttp import WSMsgType, web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.common import names
from libs.common.api import (
    FINAL_STATUSES,
    AckFrame,
    CancelFrame,
    ClientFrame,
    ErrorFrame,
    FeedbackFrame,
    PingFrame,
    PongFrame,
    ServerFrame,
    StatusFrame,
    SubmitFrame,
    decode_frame,
    frame_ref,
)
from libs.common.boundary import classify, error_body
from libs.common.errors import InvalidRequest, RateLimited, SluiceError, TooLarge
from libs.common.limits import TenantLimits, TokenBucket
from libs.common.tasks import cancel_and_wait
from libs.common.wire import lifecycle_codec
from services.gateway.streams import Streams

MAX_FRAME_BYTES = 64 * 1024
HARD_FRAME_BYTES = 4 * MAX_FRAME_BYTES
FRAMES_PER_S = 20.0
FRAME_BURST = 40.0
OUTBOX = 1024
_json = msgspec.json.Encoder()


class ControlSession:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        streams: Streams,
        nc: NATS,
        tenant: str,
        limits: TenantLimits,
    ) -> None:
        self._ws = ws
        self._limits = limits
        self._streams = streams
        self._nc = nc
        self._tenant = tenant
        self._outbox: asyncio.Queue[ServerFrame] = asyncio.Queue(OUTBOX)
        self._watches: dict[str, Subscription] = {}
        self._held: dict[str, list[ServerFrame]] = {}
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
            await cancel_and_wait([sender])
            for stream_id in list(self._watches):
                await self._unwatch(stream_id)

    def send(self, frame: ServerFrame) -> None:
        """Queue a frame; a client that reads nothing loses status frames, not memory."""
        with suppress(asyncio.QueueFull):
            self._outbox.put_nowait(frame)

    async def _send_loop(self) -> None:
        while True:
            frame = await self._outbox.get()
            try:
                await self._ws.send_str(_json.encode(frame).decode())
            except ConnectionError:
                return

    async def _receive(self, data: str | bytes) -> None:
        ref = None
        try:
            if len(data) > MAX_FRAME_BYTES:
                raise TooLarge(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
            if not self._bucket.take():
                raise RateLimited(f"more than {FRAMES_PER_S:g} frames/s", retry_after_s=1)
            self._limits.frame(self._tenant)
            try:
                frame = decode_frame(data)
            except InvalidRequest:
                ref = frame_ref(data)
                raise
            ref = frame.ref
            for reply in await self._handle(frame):
                self.send(reply)
        except Exception as exc:  # one bad frame never ends the socket
            error = classify(exc)
            self.send(
                ErrorFrame(error=error_body(error), ref=ref, retry_after_s=error.retry_after_s)
            )

    async def _handle(self, frame: ClientFrame) -> list[ServerFrame]:
        if isinstance(frame, PingFrame):
            return [PongFrame(ref=frame.ref)]
        if isinstance(frame, SubmitFrame):
            return await self._submit(frame)
        if isinstance(frame, CancelFrame):
            return await self._cancel(frame)
        if isinstance(frame, FeedbackFrame):
            await self._streams.feedback(self._tenant, frame.stream_id, frame.rating, frame.comment)
        else:
            await self._streams.pace(self._tenant, frame.stream_id, frame.max_events_per_s)
        return [AckFrame(ref=frame.ref, stream_id=frame.stream_id)]

    async def _submit(self, frame: SubmitFrame) -> list[ServerFrame]:
        message = self._streams.prepare(self._tenant, frame)
        await self._watch(message.id)
        try:
            created = await self._streams.admit(message)
        except SluiceError:
            await self._unwatch(message.id)
            raise
        ack = AckFrame(
            ref=frame.ref,
            stream_id=created.id,
            status=created.status,
            id=created.id,
            token=created.token,
            events_url=created.events_url,
            control_url=created.control_url,
            position=created.position,
        )
        queued = StatusFrame(stream_id=created.id, status=created.status, position=created.position)
        return [ack, queued, *self._held.pop(created.id, [])]

    async def _cancel(self, frame: CancelFrame) -> list[ServerFrame]:
        followed = frame.stream_id in self._watches  # its statuses already reach this socket
        await self._watch(frame.stream_id)
        try:
            meta = await self._streams.cancel(self._tenant, frame.stream_id)
        except SluiceError:
            await self._unwatch(frame.stream_id)
            raise
        ack = AckFrame(ref=frame.ref, stream_id=frame.stream_id, status=meta.status)
        frames: list[ServerFrame] = [ack, *self._held.pop(frame.stream_id, [])]
        if meta.status in FINAL_STATUSES:
            if followed and frame.stream_id in self._watches:
                # It ended, and its final status is still on its way here: report it now,
                # since unwatching drops that message when it comes.
                frames.append(StatusFrame(stream_id=frame.stream_id, status=meta.status))
            await self._unwatch(frame.stream_id)
        return frames

    async def _watch(self, stream_id: str) -> None:
        """Subscribe to the stream's status changes, holding them until :meth:`_held` is popped."""
        self._held.setdefault(stream_id, [])
        if stream_id in self._watches:
            return
        self._watches[stream_id] = await self._nc.subscribe(
            names.stream_subject(stream_id, "lifecycle"), cb=self._reporter(stream_id)
        )
        await self._nc.flush()

    async def _unwatch(self, stream_id: str) -> None:
        self._held.pop(stream_id, None)
        subscription = self._watches.pop(stream_id, None)
        if subscription is not None:
            with suppress(Exception):
                await subscription.unsubscribe()

    def _reporter(self, stream_id: str) -> Callable[[Msg], Awaitable[None]]:
        async def report(msg: Msg) -> None:
            change = lifecycle_codec.decode(msg.data)
            frame = StatusFrame(stream_id=stream_id, status=change.status, position=change.position)
            held = self._held.get(stream_id)
            if held is None:
                self.send(frame)
            else:
                held.append(frame)
            if change.status in FINAL_STATUSES:
                subscription = self._watches.pop(stream_id, None)
                if subscription is not None:
                    await subscription.unsubscribe()

        return report
