"""How a reader spells its events on the wire, and the contract's own native SSE dialect.

The OpenAI dialect lives in :mod:`services.streamer.openai_frames`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from libs.common import sse
from libs.common.channels import REASONING, Channels, ToolCallDelta, runs
from libs.common.wire import Done, Failed, StatusChange

PING = b'event: ping\ndata: {"t": %d}\n\n'
RECONNECT = b"event: reconnect\ndata: {}\n\n"


class Frames(Protocol):
    """How a reader spells each event; a dialect without some event returns ``b""`` for it."""

    def opening(self) -> bytes: ...

    def status(self, change: StatusChange) -> bytes: ...

    def tokens(
        self, last_seq: int, texts: list[str], ts: int, channels: Channels | None
    ) -> bytes: ...

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes: ...

    def ping(self) -> bytes: ...

    def reconnect(self) -> bytes: ...


class NativeFrames:
    """The contract's own SSE events: ``status``, ``token``, ``ping``, ``done``, ``error``."""

    def opening(self) -> bytes:
        return sse.RETRY

    def event(self, name: str, payload: dict[str, object], last_seq: int | None = None) -> bytes:
        """One event of the dialect; ``last_seq`` is the index of its last token, if any."""
        return sse.json_frame(name, payload, last_seq)

    def status(self, change: StatusChange) -> bytes:
        payload: dict[str, object] = {"status": change.status}
        if change.position is not None:
            payload["position"] = change.position
        return self.event("status", payload)

    def tokens(self, last_seq: int, texts: list[str], ts: int, channels: Channels | None) -> bytes:
        if channels is None:
            return sse.token_frame(last_seq, texts, ts)
        return channel_token_frames(last_seq - len(texts), texts, ts, channels)

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes:
        if isinstance(terminal, Done):
            payload = {k: v for k, v in _fields(terminal).items() if v is not None}
            return self.event("done", payload, last_seq)
        error = {
            "type": terminal.type,
            "message": terminal.message,
            "retryable": terminal.retryable,
        }
        return self.event("error", error)

    def ping(self) -> bytes:
        return PING % int(time.time() * 1000)

    def reconnect(self) -> bytes:
        return RECONNECT


NATIVE_FRAMES = NativeFrames()


def channel_token_frames(
    after_seq: int,
    texts: list[str],
    ts: int,
    channels: Channels,
    frame: Callable[[sse.TokenData], bytes] = lambda data: sse.json_frame("token", data, data.seq),
) -> bytes:
    """One ``token`` event per run of one channel, each with its own id, so a resume
    may start between them; ``frame`` spells one event in the transport's dialect."""
    frames = b""
    seq = after_seq
    for run in runs(texts, channels):
        seq += run.count
        frames += frame(sse.TokenData(seq, run.count, run.text, ts, *_channel_fields(run.channel)))
    return frames


def _channel_fields(
    channel: str | ToolCallDelta | None,
) -> tuple[str | None, sse.ToolCallRef | None]:
    if isinstance(channel, ToolCallDelta):
        return "tool_call", sse.ToolCallRef(channel.index, channel.id, channel.name)
    return (REASONING if channel == REASONING else None), None


def _fields(terminal: Done) -> dict[str, object]:
    return {field: getattr(terminal, field) for field in terminal.__struct_fields__}
