"""One plain-TCP connection to one Redis, commands pipelined, for the store's hot paths.

redis-py spends ~130 µs of client CPU on every command here (a pool checkout through a
condition, a lock and a timeout, a readiness probe of the socket, observability hooks,
retry and response-callback layers, then the release), more than Redis spends on a
whole log commit. Every stream's opening, log commits and end pay it, in the runner,
the coordinator and the streamer. :class:`DirectRedis` keeps one connection and writes
each batch of commands as one packed write; replies come back in order and settle the
callers' futures from ``data_received``, parsed by hiredis. Replies are raw: bytes,
ints, lists and None, as redis-py returns them without its callbacks, and an error
reply raises the exception redis-py would. A lost connection fails what was in flight
with redis-py's ``ConnectionError`` (callers already retry it) and the next call
connects again; a reply overdue past ``timeout_s`` is treated as a lost connection.

It serves one server (``redis://``, no TLS, no cluster and no ``WAIT``-ed replicas:
those keep redis-py, which routes and waits as they need).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import redis.exceptions
from redis._parsers.base import BaseParser  # redis-py's map of error replies to exceptions

Command = Sequence[str | bytes | int | float]


class DirectRedis:
    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self._auth: list[str] = [a for a in (username, password) if a] if password else []
        self.timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    @classmethod
    def from_url(cls, url: str, timeout_s: float = 5.0) -> DirectRedis | None:
        """A connection to the server ``url`` names; None for what only redis-py serves."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or "," in parts.netloc or not parts.hostname:
            return None
        db = int(parts.path.strip("/") or 0)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, parts.port or 6379, db, username, password, timeout_s)

    async def execute(self, *commands: Command) -> list[Any]:
        """Send ``commands`` in one write; their replies, in order, once all are in."""
        connection = self._connection
        if connection is None or connection.lost:
            connection = await self._connect()
        return await connection.execute(commands)

    async def call(self, *command: str | bytes | int | float) -> Any:
        return (await self.execute(command))[0]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close("closed")
            self._connection = None

    async def _connect(self) -> _Connection:
        """Connect once however many callers wait; AUTH and SELECT before anyone's command."""
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = connecting = loop.create_future()
        try:
            connection = await self._open(loop)
            connecting.set_result(connection)
            self._connection = connection
            return connection
        except BaseException as exc:
            connecting.set_exception(exc)
            connecting.exception()  # retrieved: the caller raises it
            raise
        finally:
            self._connecting = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        where = f"{self.host}:{self.port}"
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(where, self.timeout_s), self.host, self.port
                ),
                self.timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise redis.exceptions.ConnectionError(f"connecting to {where}: {exc}") from exc
        setup: list[Command] = []
        if self._auth:
            setup.append(("AUTH", *self._auth))
        if self.db:
            setup.append(("SELECT", self.db))
        if setup:
            try:
                await connection.execute(setup)
            except redis.exceptions.RedisError:
                connection.close("refused")  # the next call connects and tries again
                raise
        return connection


class _Connection(asyncio.Protocol):
    """One TCP connection: the futures of the replies it owes, oldest first."""

    def __init__(self, where: str, timeout_s: float) -> None:
        self.where, self.timeout_s = where, timeout_s
        self.lost = False
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        if self.lost or self._transport is None:
            raise redis.exceptions.ConnectionError(f"connection to {self.where} lost")
        self._transport.write(_pack(commands))
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = [loop.create_future() for _ in commands]
        self._waiting.extend((future, now) for future in futures)
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self.timeout_s, self._check_overdue)
        replies = [await future for future in futures]
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise _response_error(str(reply))
        return replies

    def close(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail(f"connection to {self.where} {reason}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while (reply := self._reader.gets()) is not False:
            if not waiting:
                self.close("out of step")  # a reply nobody asked for
                return
            future, _ = waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection to {self.where} lost: {exc or 'closed'}")

    def _fail(self, reason: str) -> None:
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(redis.exceptions.ConnectionError(reason))

    def _check_overdue(self) -> None:
        """While replies are awaited, once per timeout: drop a connection that stopped answering."""
        self._watchdog = None
        if not self._waiting:
            return
        _, oldest = self._waiting[0]
        loop = asyncio.get_running_loop()
        if loop.time() - oldest >= self.timeout_s:
            self.close(f"gave no reply within {self.timeout_s:g}s")
            return
        self._watchdog = loop.call_at(oldest + self.timeout_s, self._check_overdue)


def _pack(commands: Sequence[Command]) -> bytes:
    pack: Any = hiredis.pack_command  # its stub types the argument as a 1-tuple
    return b"".join(pack(tuple(command)) for command in commands)


def _response_error(message: str) -> redis.exceptions.RedisError:
    """The exception redis-py raises for this error reply: ``LOADING`` (a restarted server
    reading its data) is a ``BusyLoadingError``, a ``ConnectionError`` callers retry."""
    parse: Any = BaseParser.parse_error  # untyped in redis-py
    error: redis.exceptions.RedisError = parse(message)
    return error
