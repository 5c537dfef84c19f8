"""The rules every control WebSocket applies to what a client sends, and its answers.

A frame over :data:`MAX_FRAME_BYTES`, past the socket's or its tenant's rate, or
malformed, or whose handling fails in any way, gets an
``error`` frame (with the frame's ``ref`` when it has a readable one) and the socket
stays open; a frame past :data:`HARD_FRAME_BYTES` is not even read, and aiohttp
closes the socket (1009). The gateway's ``/v1/control`` and the streamer's stream
sockets share these rules, so a client meets the same answers on either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from libs.common.api import (
    AckFrame,
    CancelFrame,
    ClientFrame,
    ErrorFrame,
    FeedbackFrame,
    PaceFrame,
    ServerFrame,
    decode_frame,
    frame_ref,
)
from libs.common.boundary import classify, error_body
from libs.common.errors import InvalidRequest, RateLimited, TooLarge
from libs.common.limits import TokenBucket
from libs.common.stream_control import StreamControl

MAX_FRAME_BYTES = 64 * 1024
HARD_FRAME_BYTES = 4 * MAX_FRAME_BYTES
FRAMES_PER_S = 20.0
FRAME_BURST = 40.0
_json = msgspec.json.Encoder()

Handle = Callable[[ClientFrame], Awaitable[list[ServerFrame]]]
Admit = Callable[[], None]
"""Counts a frame against its tenant's rate over all its sockets; raises past it."""


def encode(frame: ServerFrame) -> str:
    return _json.encode(frame).decode()


async def answer(
    data: str | bytes, bucket: TokenBucket, admit: Admit, handle: Handle
) -> list[ServerFrame]:
    """The frames that answer one received frame: ``handle``'s, or one ``error`` frame.

    Any failure, expected or not, is one ``error`` frame from the error boundary's
    table: one bad frame never ends the socket.
    """
    ref = None
    try:
        if len(data) > MAX_FRAME_BYTES:
            raise TooLarge(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
        if not bucket.take():
            raise RateLimited(f"more than {FRAMES_PER_S:g} frames/s", retry_after_s=1)
        admit()
        try:
            frame = decode_frame(data)
        except InvalidRequest:
            ref = frame_ref(data)
            raise
        ref = frame.ref
        return await handle(frame)
    except Exception as exc:
        error = classify(exc)
        return [ErrorFrame(error=error_body(error), ref=ref, retry_after_s=error.retry_after_s)]


async def forward(
    control: StreamControl, tenant: str, frame: FeedbackFrame | PaceFrame | CancelFrame
) -> AckFrame:
    """Carry out a feedback, pace or cancel frame, as ``/v1/control`` does; its ``ack``."""
    if isinstance(frame, FeedbackFrame):
        await control.feedback(tenant, frame.stream_id, frame.rating, frame.comment)
        return AckFrame(ref=frame.ref, stream_id=frame.stream_id)
    if isinstance(frame, PaceFrame):
        await control.pace(tenant, frame.stream_id, frame.max_events_per_s)
        return AckFrame(ref=frame.ref, stream_id=frame.stream_id)
    meta = await control.cancel(tenant, frame.stream_id)
    return AckFrame(ref=frame.ref, stream_id=frame.stream_id, status=meta.status)
