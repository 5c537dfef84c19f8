"""SSE, NATS and Redis over bare asyncio sockets, for ``sluice bench floor``.

A floor must cost as little as the traffic allows, so these speak only what the floor
sends: an SSE response of token frames; NATS ``CONNECT``, ``SUB``, ``PUB``, ``MSG``
read by offset, ``PING`` answered; Redis ``XADD`` written as RESP by hand and read
with hiredis, many in one write. No client library's work lands in the figures.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import cast

import hiredis

from libs.common import sse

HOST = "127.0.0.1"
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
CRLF = b"\r\n"
XADD = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$1\r\nt\r\n$%d\r\n%s\r\n"

OnMessage = Callable[[bytes, bytes], None]


class ProtocolError(RuntimeError):
    """A server answered with an error: the floor's figures would be wrong."""


def _chunk(frame: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class Response(asyncio.Protocol):
    """One SSE response of ``tokens`` token frames: its head once the request has all
    arrived, then what :meth:`token` is given; the last token ends it."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.transport: asyncio.Transport | None = None
        self._request = b""
        self._opened = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if self._opened or self.transport is None:
            return
        self._request += data
        if b"\r\n\r\n" in self._request:
            self._opened = True
            self.transport.write(HEAD + _chunk(sse.RETRY))
            self.opened()

    def opened(self) -> None:
        """The request has arrived and the head is written: the tokens may start."""

    def token(self, seq: int, ts: int) -> bool:
        """Write token ``seq`` stamped ``ts``; True if it was the last, which ends the response."""
        assert self.transport is not None
        self.transport.write(_chunk(sse.token_frame(seq, [" token"], ts)))
        if seq < self.tokens:
            return False
        done = sse.json_frame("done", {"finish_reason": "stop"}, seq)
        self.transport.write(_chunk(done) + b"0\r\n\r\n")
        return True


class NatsLink(asyncio.Protocol):
    """One NATS connection: each ``MSG`` goes to ``on_message(subject, payload)``
    inside ``data_received``, so the handler must not block."""

    def __init__(self, on_message: OnMessage) -> None:
        self._on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._sids = 0
        self._pongs: deque[asyncio.Future[None]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(b'CONNECT {"verbose":false}\r\n')

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def subscribe(self, subject: bytes) -> None:
        self._sids += 1
        self._write(b"SUB %s %d\r\n" % (subject, self._sids))

    def publish(self, messages: Iterable[tuple[bytes, bytes]]) -> None:
        """``(subject, payload)`` messages in order, in one write."""
        self._write(b"".join(b"PUB %s %d\r\n%s\r\n" % (s, len(p), p) for s, p in messages))

    async def flush(self) -> None:
        """Wait for the server's ``PONG``: everything sent before, subscriptions too, is in."""
        pong = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        self._write(b"PING\r\n")
        await pong

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        while (end := buffer.find(CRLF, pos)) >= 0:
            if buffer.startswith(b"MSG ", pos):  # MSG <subject> <sid> [reply-to] <#bytes>
                args = buffer[pos + 4 : end].split()
                start = end + 2
                after = start + int(args[-1])
                if after + 2 > len(buffer):
                    break
                pos = after + 2
                self._on_message(args[0], buffer[start:after])
                continue
            line, pos = buffer[pos:end], end + 2
            if line == b"PING":
                self._write(b"PONG\r\n")
            elif line == b"PONG":
                self._pongs.popleft().set_result(None)
            elif line.startswith(b"-ERR"):
                raise ProtocolError(f"nats: {line.decode(errors='replace')}")
        self._buffer = buffer[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        for pong in self._pongs:
            if not pong.done():
                pong.set_exception(ConnectionError("nats closed the connection"))


class RedisLink(asyncio.Protocol):
    """One Redis connection, one batch of ``XADD`` in flight at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._waiting = 0
        self._error: Exception | None = None
        self._replied: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    async def xadd(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Append each ``(key, payload)`` to its stream in one write; wait for every reply."""
        assert self._transport is not None and self._replied is None
        self._transport.write(
            b"".join(XADD % (len(key), key, len(value), value) for key, value in entries)
        )
        self._waiting, self._error = len(entries), None
        self._replied = asyncio.get_running_loop().create_future()
        try:
            await self._replied
        finally:
            self._replied = None

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                self._error = self._error or ProtocolError(f"redis: {reply}")
            self._waiting -= 1
        if self._waiting == 0 and self._replied is not None and not self._replied.done():
            if self._error is not None:
                self._replied.set_exception(self._error)
            else:
                self._replied.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._replied is not None and not self._replied.done():
            self._replied.set_exception(ConnectionError("redis closed the connection"))
