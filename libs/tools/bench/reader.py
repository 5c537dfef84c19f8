"""A lean SSE reader for the benchmark: one socket, no task switch per frame.

The benchmark's clients share the machine with the suite they measure, so their cost
is the suite's loss: at 15,000 frames/s the aiohttp client took three times the CPU
of bare socket reads. This reader speaks just what it needs of HTTP/1.1 (a GET, the
status line, chunked or close-delimited bodies) and feeds the body, as it arrives,
to the same WHATWG parser the tests use; events go to a callback with their receive
time, inside the protocol's ``data_received``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from libs.client.http import StreamRefused
from libs.common.sse import Event, SSEParser

OnEvent = Callable[[Event, int], None]
HEAD_END = b"\r\n\r\n"


class _SSEProtocol(asyncio.Protocol):
    def __init__(self, on_event: OnEvent, done: asyncio.Future[None]) -> None:
        self._on_event = on_event
        self._done = done
        self._parser = SSEParser()
        self._buffer = b""
        self._head_read = False
        self._chunked = False
        self._chunk_left = 0  # body bytes still due in the current chunk (chunked bodies)
        self._skip = 0  # bytes of a chunk's closing CRLF still due

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return  # refused, or past the end of the body
        now = time.time_ns()
        self._buffer += data
        if not self._head_read and not self._read_head():
            return
        body = self._dechunk() if self._chunked else self._take_all()
        for event in self._parser.feed(body):
            self._on_event(event, now)

    def _read_head(self) -> bool:
        end = self._buffer.find(HEAD_END)
        if end < 0:
            return False
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        status_line, *fields = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().title()] = value.strip()
        if status != 200:
            self._fail(StreamRefused(status, self._buffer, headers))
            return False
        self._chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
        self._head_read = True
        return True

    def _take_all(self) -> bytes:
        body, self._buffer = self._buffer, b""
        return body

    def _dechunk(self) -> bytes:
        """The body bytes of every complete piece of chunked encoding buffered so far."""
        buffer, pieces, at = self._buffer, [], 0
        while True:
            if self._chunk_left:
                piece = buffer[at : at + self._chunk_left]
                pieces.append(piece)
                at += len(piece)
                self._chunk_left -= len(piece)
                if self._chunk_left:
                    break
                self._skip = 2  # the CRLF after a chunk's data
            if self._skip:
                skipped = min(self._skip, len(buffer) - at)
                at, self._skip = at + skipped, self._skip - skipped
                if self._skip:
                    break
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(buffer[at:line_end].split(b";", 1)[0], 16)
            if size == 0:
                self._finish()
                break
            self._chunk_left, at = size, line_end + 2
        self._buffer = buffer[at:]
        return b"".join(pieces)

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        """A close-delimited body ends here; a chunked one must have ended already."""
        if exc is None and (self._chunked or not self._head_read):
            exc = ConnectionResetError("the connection closed before the stream's end")
        if exc is not None:
            self._fail(exc)
        self._finish()


async def follow(url: str, on_event: OnEvent) -> None:
    """GET ``url`` and hand each event to ``on_event`` until the server ends the stream."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _SSEProtocol(on_event, done), parts.hostname or "localhost", parts.port or 80
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    transport.write(
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    try:
        await done
    finally:
        transport.close()
