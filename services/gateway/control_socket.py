"""``/v1/control``: the WebSocket control channel beside the SSE data channel.

Each socket has its own bounded outbox and sender task, so NATS callbacks that
report status changes never await the client. What a frame must be, and how a bad one
is answered, is :mod:`libs.common.control_frames`, shared with the streamer's sockets.

Status changes of a stream are subscribed to before the frame that concerns it is
acted on (so none is missed) and held until that frame's ``ack`` has gone out (so
the client always hears of a stream before it hears of its status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import partial

from aiohttp import WSMsgType, web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.common import best_effort, names
from libs.common.api import (
    FINAL_STATUSES,
    AckFrame,
    CancelFrame,
    ClientFrame,
    PingFrame,
    PongFrame,
    ServerFrame,
    StatusFrame,
    SubmitFrame,
)
from libs.common.control_frames import (
    FRAME_BURST,
    FRAMES_PER_S,
    answer,
    encode,
    forward,
)
from libs.common.errors import SluiceError
from libs.common.limits import TenantLimits, TokenBucket
from libs.common.tasks import cancel_and_wait
from libs.common.wire import lifecycle_codec
from services.gateway.streams import Streams

OUTBOX = 1024


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
                await self._ws.send_str(encode(frame))
            except ConnectionError:
                return

    async def _receive(self, data: str | bytes) -> None:
        admit = partial(self._limits.frame, self._tenant)
        for reply in await answer(data, self._bucket, admit, self._handle):
            self.send(reply)

    async def _handle(self, frame: ClientFrame) -> list[ServerFrame]:
        if isinstance(frame, PingFrame):
            return [PongFrame(ref=frame.ref)]
        if isinstance(frame, SubmitFrame):
            return await self._submit(frame)
        if isinstance(frame, CancelFrame):
            return await self._cancel(frame)
        return [await forward(self._streams, self._tenant, frame)]

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
            await best_effort.unsubscribe(subscription, stream_id)

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
