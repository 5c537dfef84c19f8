"""How a reader spells its events on the wire, and the contract's own native SSE dialect.

The OpenAI dialect lives in :mod:`services.streamer.openai_frames`.
"""

from __future__ import annotations

import time
from typing import Protocol

from libs.common import sse
from libs.common.wire import Done, Failed, StatusChange

PING = b'event: ping\ndata: {"t": %d}\n\n'
RECONNECT = b"event: reconnect\ndata: {}\n\n"


class Frames(Protocol):
    """How a reader spells each event; a dialect without some event returns ``b""`` for it."""

    def opening(self) -> bytes: ...

    def status(self, change: StatusChange) -> bytes: ...

    def tokens(self, last_seq: int, texts: list[str], ts: int) -> bytes: ...

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes: ...

    def ping(self) -> bytes: ...

    def reconnect(self) -> bytes: ...


class NativeFrames:
    """The contract's own SSE events: ``status``, ``token``, ``ping``, ``done``, ``error``."""

    def opening(self) -> bytes:
        return sse.RETRY

    def status(self, change: StatusChange) -> bytes:
        payload: dict[str, object] = {"status": change.status}
        if change.position is not None:
            payload["position"] = change.position
        if change.continued_at is not None:
            payload["continued_at"] = change.continued_at
        return sse.json_frame("status", payload)

    def tokens(self, last_seq: int, texts: list[str], ts: int) -> bytes:
        return sse.token_frame(last_seq, texts, ts)

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes:
        if isinstance(terminal, Done):
            payload = {k: v for k, v in _fields(terminal).items() if v is not None}
            return sse.json_frame("done", payload, last_seq)
        error = {
            "type": terminal.type,
            "message": terminal.message,
            "retryable": terminal.retryable,
        }
        return sse.json_frame("error", error)

    def ping(self) -> bytes:
        return PING % int(time.time() * 1000)

    def reconnect(self) -> bytes:
        return RECONNECT


NATIVE_FRAMES = NativeFrames()


def _fields(terminal: Done) -> dict[str, object]:
    return {field: getattr(terminal, field) for field in terminal.__struct_fields__}
