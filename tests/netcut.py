"""A TCP forwarder whose connections a test can cut: a network loss between browser and streamer."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass

from libs.tools.stack import Stack


class CuttableLink:
    """Forwards a local port to ``target_port``; :meth:`cut` drops every connection at once.

    While it is down, new connections are reset as they arrive, as an unplugged network
    would fail them; :meth:`restore` lets them through again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> CuttableLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.down = True
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def restore(self) -> None:
        self.down = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        self._open.discard(writer)
        with suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


@dataclass(frozen=True)
class LinkedStack:
    """A suite whose public streamer URL is ``link``'s."""

    stack: Stack
    link: CuttableLink
