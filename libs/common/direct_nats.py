"""nats-py with shortcuts for traffic of one message per token.

Receiving: nats-py gives each subscription with a callback a queue and a task of its
own, a put, a task switch and a coroutine per message (about 5 µs, a quarter of a
streamer's core at 50,000 tokens/s). A direct subscription's handler runs inside the
client's read loop instead, so it must never block; an exception it raises is logged
and the message dropped, as a callback's would be. :class:`DirectParser` reads the
protocol by offset, without a regular expression, a buffer deletion or a coroutine
per message.

Sending: nats-py queues every command for a flusher task, which costs each publish a
future, a queue put and a task switch before its bytes reach the socket (a turn of
the event loop on every token's way). :class:`DirectNATS` writes a command at once
instead, behind whatever is still queued, whenever the connection is up and its
socket keeps up; otherwise it queues as nats-py does, which also buffers through a
reconnect. :meth:`DirectNATS.publish_many` builds a whole commit's messages as one
command.

Both use nats-py internals (``Parser``, ``_ps``, ``_process_*``, ``_send_command``);
the pinned nats-py version, the tests of this module and the end-to-end tests guard them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from nats import errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.protocol.parser import (
    ERR_RE,
    HMSG_RE,
    INFO_RE,
    OK_RE,
    PING_RE,
    PONG_RE,
    Parser,
)

log = logging.getLogger(__name__)

DirectHandler = Callable[[str, bytes], None]
DIRECT_WRITE_LIMIT = 1 << 20
"""Bytes the socket may hold unsent before commands queue for the flusher, which waits
for the socket to drain: the back-pressure nats-py applies."""
MSG = b"MSG "
CRLF = b"\r\n"


class DirectNATS(NATS):
    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, DirectHandler] = {}
        self._ps = DirectParser(self)

    async def subscribe_direct(self, subject: str, handler: DirectHandler) -> Subscription:
        subscription = await self.subscribe(subject)
        self._direct[subscription._id] = handler
        queue = subscription._pending_queue  # what arrived before the line above
        while not queue.empty():
            early = queue.get_nowait()
            _dispatch(handler, early.subject, early.data)
        return subscription

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish ``(subject, payload)`` messages in order, as one queued write."""
        if self.is_closed:
            raise errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise errors.ConnectionDrainingError
        size = sum(len(payload) for _, payload in messages)
        if not self.is_connected and (
            self._max_pending_size <= 0 or size + self._pending_data_size > self._max_pending_size
        ):
            raise errors.OutboundBufferLimitError
        if any(len(payload) > self._max_payload for _, payload in messages):
            raise errors.MaxPayloadError
        command = b"".join(
            b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)
            for subject, payload in messages
        )
        self.stats["out_msgs"] += len(messages)
        self.stats["out_bytes"] += size
        await self._send_command(command)
        if self._pending and self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
        if priority or not self._write_now(cmd):
            await super()._send_command(cmd, priority)

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        """Nothing queued (the command went straight out): no future, no flusher wake-up."""
        if not self._pending:
            return None
        return await super()._flush_pending(force_flush)

    def _write_now(self, command: bytes) -> bool:
        """Write ``command`` to the socket now, after anything queued before it, if the
        connection is up and the socket is not backing up; False to queue it instead."""
        writer = getattr(self._transport, "_io_writer", None)
        if (
            not self.is_connected
            or writer is None
            or writer.transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT
        ):
            return False
        if self._pending:
            writer.writelines([*self._pending, command])
            self._pending, self._pending_data_size = [], 0
        else:
            writer.write(command)
        return True

    def direct_handler(self, sid: int) -> DirectHandler | None:
        return self._direct.get(sid)

    def deliver(self, handler: DirectHandler, subject: str, data: bytes) -> None:
        """Count a message for a direct subscription, as nats-py counts its own, and hand it over."""
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        _dispatch(handler, subject, data)

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._direct.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        handler = self._direct.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]  # nats.py passes None too
            return
        self.deliver(handler, subject.decode(), data)


class DirectParser(Parser):
    """nats-py's protocol parser, rewritten around offsets for traffic of one message per token.

    Each complete op is sliced out of the buffer by offset, and the buffer is trimmed
    once per read (and before anything that awaits) rather than twice per message; a
    ``MSG`` for a direct subscription is handed over without a regular expression or a
    coroutine. Other ops are matched with nats-py's own expressions and go to the same
    client methods its parser calls. An incomplete op waits in the buffer for the next
    read, so the parser never sits between a message's arguments and its payload.
    """

    def __init__(self, nc: DirectNATS) -> None:
        super().__init__(nc)
        self._client = nc

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf += data
        client, pos = self._client, 0
        try:
            while pos < len(buf):
                end = buf.find(CRLF, pos)
                if end < 0:  # the op's line has not all arrived (nats-py waits, too)
                    return
                if buf.startswith(MSG, pos):
                    subject, sid, reply, needed = _msg_args(buf, pos + 4, end)
                    start = end + 2
                    if start + needed + 2 > len(buf):
                        return
                    payload = bytes(buf[start : start + needed])
                    after = start + needed + 2
                    handler = client.direct_handler(sid)
                    if handler is not None:
                        pos = after
                        client.deliver(handler, subject.decode(), payload)
                        continue
                    del buf[:after]  # what follows awaits: leave the buffer consistent first
                    pos = 0
                    await client._process_msg(sid, bytes(subject), bytes(reply), payload, None)
                else:
                    line = bytes(buf[pos : end + 2])
                    if line.startswith(b"HMSG"):
                        if not await self._headed_message(buf, pos, line):
                            return
                    else:
                        del buf[: end + 2]
                        await self._control(line)
                    pos = 0
                if self.buf is not buf:  # reset by a reconnect meanwhile
                    return
        finally:
            if pos and self.buf is buf:
                del buf[:pos]

    async def _headed_message(self, buf: bytearray, pos: int, line: bytes) -> bool:
        """An ``HMSG``: False if its payload has not all arrived."""
        match = HMSG_RE.match(line)
        if match is None:
            raise errors.ProtocolError("nats: malformed MSG")
        subject, sid, _, reply, header_size, total_size = match.groups()
        start, headers, total = pos + len(line), int(header_size), int(total_size)
        if start + total + 2 > len(buf):
            return False
        header = bytes(buf[start : start + headers])
        payload = bytes(buf[start + headers : start + total])
        del buf[: start + total + 2]
        await self._client._process_msg(int(sid), subject, reply or b"", payload, header)
        return True

    async def _control(self, line: bytes) -> None:
        client = self._client
        if PING_RE.match(line):
            await client._process_ping()
        elif PONG_RE.match(line):
            await client._process_pong()
        elif OK_RE.match(line):
            pass
        elif match := ERR_RE.match(line):
            await client._process_err((match.group(1) or b"").decode().lower())
        elif match := INFO_RE.match(line):
            await client._process_info(json.loads(match.group(1).decode()))
        else:
            raise errors.ProtocolError("nats: unknown protocol")


def _msg_args(buf: bytearray, start: int, end: int) -> tuple[bytearray, int, bytearray, int]:
    """``<subject> <sid> [reply-to] <#bytes>``: the arguments of a ``MSG`` op, in ``buf[start:end]``."""
    args = buf[start:end].split()
    try:
        if len(args) == 3:
            return args[0], int(args[1]), bytearray(), int(args[2])
        if len(args) == 4:
            return args[0], int(args[1]), args[2], int(args[3])
    except ValueError:
        pass
    raise errors.ProtocolError("nats: malformed MSG")


def _dispatch(handler: DirectHandler, subject: str, data: bytes) -> None:
    try:
        handler(subject, data)
    except Exception:
        log.exception("a direct subscription's handler failed", extra={"subject": subject})
