"""The direct-transport fast path: token frames written straight to the client's socket.

While the socket keeps up and nothing else is pending, a reader writes a fresh live
message's frame itself, inside the hub's callback (no task switch per token: at 50,000
tokens/s that was a fifth of a streamer's work). A message older than :data:`FRESH_NS`
means this streamer has fallen behind: its tokens wait up to :data:`STALE_FLUSH_S`
(:class:`LiveWrites`), so the messages of one stream that arrive meanwhile leave as one
frame, and an overloaded streamer (and its clients) handle fewer, bigger frames and
catch up. :class:`ClientSocket` is what the reader asks of the transport under its
response: room, the direct write, draining, and a reset.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Protocol

FRESH_NS = 25_000_000
STALE_FLUSH_S = 0.02  # one model interval at 50 tokens/s: stale frames carry ~2 tokens
DRAIN_POLL_S = (0.001, 0.1)
RESET_ON_CLOSE = struct.pack("ii", 1, 0)

Envelope = Callable[[bytes], bytes]
"""What wraps a frame on its way to the transport: a chunk, WebSocket messages."""


def chunk(frame: bytes) -> bytes:
    """One chunk of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class LiveWriter(Protocol):
    def write_live(self) -> None:
        """Write the live tokens gathered so far, or leave them to the writer task."""
        ...


class LiveWrites:
    """Readers with stale live tokens, all written :data:`STALE_FLUSH_S` after the first.

    Writing each stale message at once would keep an overloaded streamer at one frame
    per token; gathering for a window (only once tokens are already late) makes the
    frames bigger the further behind it is, so it and its clients catch up.
    """

    def __init__(self) -> None:
        self._writers: dict[LiveWriter, None] = {}

    def add(self, writer: LiveWriter) -> None:
        if not self._writers:
            asyncio.get_running_loop().call_later(STALE_FLUSH_S, self._write)
        self._writers[writer] = None

    def _write(self) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers:
            writer.write_live()


class ClientSocket:
    """The transport under a reader's response, for what the response itself cannot do."""

    __slots__ = ("_transport", "envelope")

    def __init__(self, transport: asyncio.Transport, send_buffer_bytes: int) -> None:
        self._transport = transport
        self.envelope: Envelope | None = None
        if send_buffer_bytes:
            self._set_option(socket.SO_SNDBUF, send_buffer_bytes)

    def idle(self) -> bool:
        """Every byte written so far has left, and the connection is open."""
        transport = self._transport
        return not (transport.get_write_buffer_size() or transport.is_closing())

    def write(self, frame: bytes) -> None:
        """One frame straight to the transport, in the response's envelope."""
        self._transport.write(frame if self.envelope is None else self.envelope(frame))

    async def drained(self) -> None:
        """Wait until the socket has taken every byte written so far.

        It polls with backoff because the transport tells only when it crosses its
        high-water mark, not when it empties.
        """
        transport = self._transport
        delay, longest = DRAIN_POLL_S
        while transport.get_write_buffer_size():
            if transport.is_closing():
                raise ConnectionResetError("the connection closed with bytes unsent")
            await asyncio.sleep(delay)
            delay = min(2 * delay, longest)

    def reset(self, last_words: bytes) -> None:
        """Write ``last_words`` if the socket has room, then reset the connection.

        The reset (rather than a close that would wait for the peer to read) frees the
        kernel's send buffer at once and shows the client a broken connection, which
        EventSource answers by resuming.
        """
        self.write(last_words)
        self._set_option(socket.SO_LINGER, RESET_ON_CLOSE)
        self._transport.abort()

    def _set_option(self, option: int, value: int | bytes) -> None:
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, option, value)
