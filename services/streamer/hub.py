"""One NATS subscription per stream per streamer, fanned out in-process to its readers.

The subscription is direct (:class:`~libs.common.connections.DirectNATS`): its handler
runs inside the NATS client's read loop, decodes each message once and hands it to
every reader's non-blocking ``offer``; it never awaits a client. While a stream has readers here,
the hub renews their lease on ``sluice.stream.<id>.readers`` so the runner knows
someone is still reading. Channels are dealt round-robin into :data:`SLICES` slices
and one slice is renewed (and its readers ticked) every lease period / SLICES, so a
thousand renewals (and the runner's handling of them) do not all land in one turn of
the event loop, delaying every token behind them.

A stream's ``pace`` is heard on one subscription to every stream's control subject,
not on the stream's own: a reader writes its first ``status`` before its stream's
subscription is in place, so a client that paces the stream as soon as it sees that
event would otherwise lose the pace to the race. The hub remembers the last
:data:`PACE_MEMORY` paces it heard and gives a new channel its stream's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from nats.aio.subscription import Subscription

from libs.common import best_effort, metrics, names
from libs.common.direct_nats import DirectNATS
from libs.common.tasks import cancel_and_wait
from libs.common.wire import (
    Pace,
    ReaderLease,
    TokenBatch,
    control_codec,
    lease_codec,
    lifecycle_codec,
    tokens_codec,
)
from services.streamer.direct import LiveWrites
from services.streamer.reader import Reader

log = logging.getLogger(__name__)

SLICES = 10
PACE_MEMORY = 10_000


class Channel:
    """The readers of one stream on this streamer."""

    def __init__(self, stream_id: str, renew: Callable[[Channel], None]) -> None:
        self.stream_id = stream_id
        self._renew = renew
        self.readers: set[Reader] = set()
        self.pace: float | None = None
        self.subscription: Subscription | None = None
        self.ready = asyncio.Event()
        self.slice = 0
        self._last_token = 0.0
        self._moved_after = 0.0  # when the last token before a continuation arrived
        self.ended = False  # its terminal message went by: no runner needs its leases

    def on_message(self, subject: str, data: bytes) -> None:
        if subject.endswith(".tokens"):
            message = tokens_codec.decode(data)
            if type(message) is not TokenBatch:
                self.ended = True
            elif metrics.hop_sampled(message.first, len(message.texts)):
                metrics.record_hop("received", message.ts, time.time_ns())
            self._last_token = time.monotonic()
            if self._moved_after:
                metrics.continuation_stall.record(self._last_token - self._moved_after)
                self._moved_after = 0.0
            for reader in self.readers:
                reader.offer(message)
            return
        kind = subject.rsplit(".", 1)[1]
        if kind == "lifecycle":
            change = lifecycle_codec.decode(data)
            if change.continued_at is not None and self._last_token:
                self._moved_after = self._last_token
            for reader in self.readers:
                reader.status(change)
            if change.status == "running":
                self._renew(self)  # a runner just took it: tell it about readers now

    def set_pace(self, max_events_per_s: float) -> None:
        self.pace = max_events_per_s
        for reader in self.readers:
            reader.pace(max_events_per_s)


class Hub:
    def __init__(self, nc: DirectNATS, streamer_id: str, lease_s: float) -> None:
        self._nc = nc
        self._streamer_id = streamer_id
        self._lease_s = lease_s
        self.channels: dict[str, Channel] = {}
        self._slices: list[dict[str, Channel]] = [{} for _ in range(SLICES)]
        self._dealt = 0
        self.reader_count = 0
        self._lease_task: asyncio.Task[None] | None = None
        self._renewals: set[asyncio.Task[None]] = set()
        self._live_writes = LiveWrites()
        self._paces: OrderedDict[str, float] = OrderedDict()
        self._controls: Subscription | None = None

    async def start(self) -> None:
        self._controls = await self._nc.subscribe_direct(names.ALL_CONTROL, self._on_control)
        await self._nc.flush(timeout=5)
        self._lease_task = asyncio.create_task(self._lease_loop())

    async def stop(self) -> None:
        await cancel_and_wait([self._lease_task, *self._renewals])
        if self._controls is not None:
            await best_effort.unsubscribe(self._controls, names.ALL_CONTROL)

    def _on_control(self, subject: str, data: bytes) -> None:
        control = control_codec.decode(data)
        if not isinstance(control, Pace):
            return
        stream_id = names.stream_id_of(subject)
        self._paces[stream_id] = control.max_events_per_s
        self._paces.move_to_end(stream_id)
        if len(self._paces) > PACE_MEMORY:
            self._paces.popitem(last=False)
        channel = self.channels.get(stream_id)
        if channel is not None:
            channel.set_pace(control.max_events_per_s)

    @asynccontextmanager
    async def reading(self, reader: Reader) -> AsyncIterator[None]:
        """Hold ``reader`` attached (and counted as an open connection) for the block."""
        metrics.streamer_open_connections.add(1)
        try:
            await self.attach(reader)
            yield
        finally:
            metrics.streamer_open_connections.add(-1)
            await self.detach(reader)

    async def attach(self, reader: Reader) -> None:
        """Add a reader; returns once the live subscription is in place at the server.

        A reader joining a stream that was paced gets the same pace.
        """
        self.reader_count += 1
        reader.live_writes = self._live_writes
        channel = self.channels.get(reader.stream_id)
        if channel is None:
            channel = self.channels[reader.stream_id] = Channel(reader.stream_id, self._renew_soon)
            channel.slice = self._dealt % SLICES
            self._slices[channel.slice][reader.stream_id] = channel
            self._dealt += 1
            channel.readers.add(reader)
            if (pace := self._paces.get(reader.stream_id)) is not None:
                channel.set_pace(pace)
            try:
                channel.subscription = await self._nc.subscribe_direct(
                    names.stream_wildcard(reader.stream_id), channel.on_message
                )
                await self._nc.flush(timeout=5)
            finally:
                channel.ready.set()
            await self._renew(channel)
        else:
            channel.readers.add(reader)
            if channel.pace is not None:
                reader.pace(channel.pace)
            await channel.ready.wait()

    async def detach(self, reader: Reader) -> None:
        self.reader_count -= 1
        channel = self.channels.get(reader.stream_id)
        if channel is None:
            return
        channel.readers.discard(reader)
        if not channel.readers:
            del self.channels[reader.stream_id]
            del self._slices[channel.slice][reader.stream_id]
            if not channel.ended:  # readers=0: the runner's abandon clock starts now
                await self._renew(channel)
            if channel.subscription is not None:
                await best_effort.unsubscribe(channel.subscription, reader.stream_id)

    def readers(self) -> list[Reader]:
        return [reader for channel in self.channels.values() for reader in channel.readers]

    def _renew_soon(self, channel: Channel) -> None:
        """Renew from the read loop, which must not wait for the publish."""
        renewal = asyncio.get_running_loop().create_task(self._renew(channel))
        self._renewals.add(renewal)
        renewal.add_done_callback(self._renewals.discard)

    async def _renew(self, channel: Channel) -> None:
        lease = ReaderLease(readers=len(channel.readers), streamer_id=self._streamer_id)
        subject = names.stream_subject(channel.stream_id, "readers")
        await best_effort.publish(self._nc, subject, lease_codec.encode(lease), channel.stream_id)

    async def _lease_loop(self) -> None:
        """Renew each stream's reader lease once a period, and give every reader its tick."""
        for turn in itertools.count():
            await asyncio.sleep(self._lease_s / SLICES)
            now = time.monotonic()
            for channel in list(self._slices[turn % SLICES].values()):
                for reader in list(channel.readers):
                    reader.tick(now)
                await self._renew(channel)
