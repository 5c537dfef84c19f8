"""The weather proxy: TCP routes through one shared :class:`Weather`, with scheduled cuts.

Every accepted connection opens its own to the route's target and gets two
:class:`Pipe`s, upstream (``up_kbps``) and downstream (``down_kbps``): the cap is per
connection, as each user has their own link. A cut ends every open connection on both
sides, by FIN (an orderly close: bytes still in flight are lost) or by RST; for the
outage, new connections are cut the same way as soon as they are accepted.

The proxy accepts a connection at once, on this machine; so that opening one still
costs what it costs on the profile's network (SYN, SYN-ACK: one round trip), the
client's first bytes wait one mean RTT before they leave.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import socket
import struct
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass

from libs.tools.netsim.pipe import Pipe
from libs.tools.netsim.profiles import Profile
from libs.tools.netsim.weather import Weather

RESET_ON_CLOSE = struct.pack("ii", 1, 0)


@dataclass(frozen=True, slots=True)
class Route:
    """Listen on ``listen_port`` (0: any free one) and forward to ``host:port``."""

    host: str
    port: int
    listen_port: int = 0


class Connection:
    """Both sockets of one proxied connection and the task that pipes them."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.sockets = (client, upstream)
        self.task: asyncio.Task[None] | None = None

    def cut(self, mode: str) -> None:
        for writer in self.sockets:
            cut_socket(writer, mode)
        if self.task is not None:
            self.task.cancel()


def cut_socket(writer: asyncio.StreamWriter, mode: str) -> None:
    """Close by FIN, or reset (``SO_LINGER`` 0, then abort) by RST."""
    if mode == "rst":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        writer.transport.abort()
    else:
        writer.close()


class NetSim:
    """The proxy; ``ports`` holds each route's listening port once :meth:`start` returns."""

    def __init__(self, profile: Profile, routes: list[Route], seed: int = 0) -> None:
        self.profile = profile
        self.routes = routes
        self.weather = Weather(profile, seed)
        self.ports: list[int] = []
        self.cuts: Counter[str] = Counter()
        self.bytes_down = 0
        self.bytes_up = 0
        self._epoch = 0.0
        self._servers: list[asyncio.Server] = []
        self._connections: set[Connection] = set()
        self._outage: str | None = None
        self._scheduler: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1") -> NetSim:
        self._epoch = asyncio.get_running_loop().time()
        for route in self.routes:
            server = await asyncio.start_server(
                functools.partial(self._serve, route), host, route.listen_port
            )
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])
        if self.profile.cuts is not None:
            self._scheduler = asyncio.create_task(self._cut_on_schedule())
        return self

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.cut("fin")
        for server in self._servers:
            await server.wait_closed()

    def cut_all(self, mode: str) -> None:
        """Cut every open connection now, by ``fin`` or ``rst``."""
        self.cuts[mode] += 1
        for connection in list(self._connections):
            connection.cut(mode)

    async def _cut_on_schedule(self) -> None:
        cuts = self.profile.cuts
        assert cuts is not None
        modes = (
            itertools.cycle(("fin", "rst")) if cuts.mode == "both" else itertools.repeat(cuts.mode)
        )
        await asyncio.sleep(cuts.first_s)
        for mode in modes:
            self._outage = mode
            self.cut_all(mode)
            await asyncio.sleep(cuts.outage_s)
            self._outage = None
            await asyncio.sleep(cuts.period_s - cuts.outage_s)

    async def _serve(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._outage is not None:
            cut_socket(writer, self._outage)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(route.host, route.port)
        except OSError:
            cut_socket(writer, "rst")
            return
        connection = Connection(writer, up_writer)
        self._connections.add(connection)
        profile, epoch = self.profile, self._epoch
        opens_at = asyncio.get_running_loop().time() + profile.rtt_ms / 1000
        up = Pipe(reader, up_writer, self.weather, profile.up_kbps, epoch, opens_at)
        down = Pipe(up_reader, writer, self.weather, profile.down_kbps, epoch)
        connection.task = asyncio.current_task()
        try:
            await asyncio.gather(up.run(), down.run())
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(connection)
            self.bytes_up += up.bytes
            self.bytes_down += down.bytes
            for socket_writer in connection.sockets:
                socket_writer.close()
