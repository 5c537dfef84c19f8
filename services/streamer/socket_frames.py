"""The WebSocket dialect of a stream: the native events as JSON text messages.

Each event is one message, ``{"type": <event>, ...}`` with the SSE event's data
(an ``error``'s data under ``"error"``, as on ``/v1/control``); an event that carries
tokens has ``seq``, the index of its last token, where SSE has ``id``. The reader's frames are built as lines and :class:`WebSocketSink` sends each
line as one unmasked text message written straight to the transport, so that the
reader's fast path, its flow control and its reset work on a WebSocket as on SSE.
"""

from __future__ import annotations

import asyncio
import struct
import time

import msgspec

from libs.common.channels import Channels
from libs.common.sse import TokenData
from services.streamer.frames import NativeFrames, channel_token_frames

TEXT_FIN = 0x81
TOKEN = b'{"type":"token","seq":%d,"n":%d,"text":%s,"ts":%d}\n'
_json = msgspec.json.Encoder()


def text_message(payload: bytes) -> bytes:
    """A server's (unmasked) WebSocket text frame carrying ``payload`` (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", TEXT_FIN, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", TEXT_FIN, 126, size)
    else:
        head = struct.pack("!BBQ", TEXT_FIN, 127, size)
    return head + payload


class SocketFrames(NativeFrames):
    """The native events, one JSON object per line."""

    def opening(self) -> bytes:
        return b""

    def event(self, name: str, payload: dict[str, object], last_seq: int | None = None) -> bytes:
        if name == "error":
            return _json.encode({"type": "error", "error": payload}) + b"\n"
        head: dict[str, object] = {"type": name}
        if last_seq is not None:
            head["seq"] = last_seq
        return _json.encode({**head, **payload}) + b"\n"

    def tokens(self, last_seq: int, texts: list[str], ts: int, channels: Channels | None) -> bytes:
        if channels is None:
            return TOKEN % (last_seq, len(texts), _json.encode("".join(texts)), ts)
        return channel_token_frames(last_seq - len(texts), texts, ts, channels, _token_message)

    def ping(self) -> bytes:
        return self.event("ping", {"t": int(time.time() * 1000)})

    def reconnect(self) -> bytes:
        return self.event("reconnect", {})


def _token_message(data: TokenData) -> bytes:
    return _json.encode({"type": "token", **msgspec.to_builtins(data)}) + b"\n"


SOCKET_FRAMES = SocketFrames()


class WebSocketSink:
    """Writes a reader's lines as text messages on the upgraded connection's transport."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def envelope(self, frame: bytes) -> bytes:
        return b"".join(text_message(line) for line in frame.splitlines())

    async def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self._transport.write(self.envelope(data))
