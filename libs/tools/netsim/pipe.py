"""One direction of one proxied connection: delay with order kept, a bandwidth cap, stalls."""

from __future__ import annotations

import asyncio

from libs.tools.netsim.weather import Weather

PIECE_BYTES = 1460  # one TCP segment on Ethernet: the unit that is delayed and serialized
QUEUE_PIECES = 1024  # about 1.5 MB in flight, then the sender is held back as TCP would be


class Pipe:
    """Copies ``source`` to ``sink``, each piece leaving when the weather lets it.

    A piece leaves after it has been serialized at ``kbps`` (behind the pieces before
    it) and then delayed; no piece overtakes another, whatever its jitter. Nothing is
    sent before ``opens_at`` (loop time): the client's first bytes wait for the
    handshake the proxy answered locally.
    """

    def __init__(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        weather: Weather,
        kbps: float,
        epoch: float,
        opens_at: float = 0.0,
    ) -> None:
        self._source = source
        self._sink = sink
        self._weather = weather
        self._bits_per_s = kbps * 1000
        self._epoch = epoch
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_PIECES)
        self._tx_free = opens_at
        self._last_release = 0.0
        self.bytes = 0

    async def run(self) -> None:
        """Until the source ends (then the sink gets a FIN) or the task is cancelled."""
        reading = asyncio.create_task(self._read())
        try:
            await self._write()
        finally:
            reading.cancel()

    async def _read(self) -> None:
        while data := await self._source.read(65536):
            for start in range(0, len(data), PIECE_BYTES):
                piece = data[start : start + PIECE_BYTES]
                await self._queue.put((self._release(len(piece)), piece))
        await self._queue.put((self._last_release, b""))

    def _release(self, size: int) -> float:
        now = asyncio.get_running_loop().time()
        sent = max(now, self._tx_free)
        if self._bits_per_s:
            sent += size * 8 / self._bits_per_s
        self._tx_free = sent
        link_t = sent - self._epoch
        arrives = self._weather.after_stalls(link_t + self._weather.delay_s(link_t))
        self._last_release = max(self._last_release, arrives + self._epoch)
        return self._last_release

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            release, piece = await self._queue.get()
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not piece:
                if self._sink.can_write_eof():
                    self._sink.write_eof()
                return
            self._sink.write(piece)
            self.bytes += len(piece)
            await self._sink.drain()
