"""``GET /v1/streams/{id}/ws``: a stream's tokens, and its control, on one WebSocket.

The data is the same reader as SSE's (numbering, resume from ``last_event_id``, flow
control, the slow-consumer reset), spelled as JSON text messages
(:mod:`services.streamer.socket_frames`). Frames the client sends are control frames
under the gateway's rules (:mod:`libs.common.control_frames`): ``cancel``, ``pace``
and ``feedback`` of this socket's stream are carried out and acked as ``/v1/control``
does, ``ping`` is answered ``pong``; submitting is the gateway's job. The read token
is the authority: it names the stream, whose own tenant is the one that acts, and nothing
else is reachable.
"""

from __future__ import annotations

import asyncio
from functools import partial

from aiohttp import WSMsgType, web

from libs.common.api import ClientFrame, PingFrame, PongFrame, ServerFrame, SubmitFrame
from libs.common.control_frames import (
    FRAME_BURST,
    FRAMES_PER_S,
    HARD_FRAME_BYTES,
    answer,
    encode,
    forward,
)
from libs.common.errors import Forbidden, InvalidRequest
from libs.common.http import LIMITS
from libs.common.limits import TokenBucket
from libs.common.tasks import cancel_and_wait
from services.streamer.delivery import Opening, deliver, held, open_reading, reader_for
from services.streamer.keys import CONTROL
from services.streamer.reader import EXPIRED, Reader
from services.streamer.socket_frames import SOCKET_FRAMES, WebSocketSink


class StreamSocket:
    """The client's side of one stream socket: its control frames, and its leaving."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, opening: Opening) -> None:
        self._ws = ws
        self._control = request.app[CONTROL]
        self._opening = opening
        self._bucket = TokenBucket(FRAMES_PER_S, FRAME_BURST)
        self._admit = partial(request.app[LIMITS].frame, opening.tenant)

    async def listen(self, reader: Reader) -> None:
        """Answer control frames until the client closes, then stop the reader."""
        try:
            async for message in self._ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    for reply in await answer(
                        message.data, self._bucket, self._admit, self._handle
                    ):
                        await self._ws.send_str(encode(reply))
        except ConnectionError:
            pass
        finally:
            reader.hang_up()

    async def _handle(self, frame: ClientFrame) -> list[ServerFrame]:
        if isinstance(frame, PingFrame):
            return [PongFrame(ref=frame.ref)]
        if isinstance(frame, SubmitFrame):
            raise InvalidRequest("submit streams on the gateway's /v1/control, not here")
        if frame.stream_id != self._opening.stream_id:
            raise Forbidden(f"this socket controls stream {self._opening.stream_id!r} only")
        return [await forward(self._control, self._opening.tenant, frame)]


async def stream_socket(request: web.Request) -> web.WebSocketResponse:
    opening = await open_reading(request)
    with held(request, opening):
        return await _serve(request, opening)


async def _serve(request: web.Request, opening: Opening) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=HARD_FRAME_BYTES, compress=False)
    await ws.prepare(request)
    if opening.meta is None:
        await ws.send_str(SOCKET_FRAMES.terminal(EXPIRED, opening.after).decode().rstrip())
        await ws.close()
        return ws
    transport = request.transport
    if transport is None:  # the client left during the upgrade
        return ws
    reader = reader_for(request, opening, WebSocketSink(transport), SOCKET_FRAMES)
    listening = asyncio.create_task(StreamSocket(ws, request, opening).listen(reader))
    try:
        await deliver(request, reader, opening.meta)
    finally:
        await cancel_and_wait([listening])
    await ws.close()
    return ws
