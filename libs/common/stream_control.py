"""What a client may do to a stream it already has: cancel, pace, rate, and look it up.

Both planes take these orders: the gateway over HTTP and ``/v1/control``, the streamer
over a stream's own WebSocket (``/v1/streams/{id}/ws``). Either way the order goes out
on NATS or into Redis, so whichever replica holds the runner or the readers obeys.
"""

from __future__ import annotations

import time

from nats.aio.client import Client as NATS

from libs.common import names
from libs.common.auth import is_stream_id
from libs.common.errors import NotFound
from libs.common.settings import Settings
from libs.common.store import Feedback, StreamMeta, StreamStore
from libs.common.stream_end import request_cancel
from libs.common.wire import Pace, control_codec


class StreamControl:
    def __init__(self, settings: Settings, nc: NATS, store: StreamStore) -> None:
        self.settings = settings
        self._nc = nc
        self.store = store

    async def meta(self, tenant: str, stream_id: str) -> StreamMeta:
        """The stream's meta, or 404 if it does not exist for this tenant."""
        meta = await self.store.meta(stream_id) if is_stream_id(stream_id) else None
        if meta is None or meta.tenant != tenant:
            raise NotFound(f"no stream {stream_id!r}")
        return meta

    async def cancel(self, tenant: str, stream_id: str) -> StreamMeta:
        """Ask the stream to stop; idempotent, and a finished stream is left as it is."""
        meta = await self.meta(tenant, stream_id)
        await request_cancel(self._nc, self.store, stream_id, "cancelled")
        return meta

    async def feedback(self, tenant: str, stream_id: str, rating: int, comment: str) -> None:
        """Keep a client's rating of a stream, durably, beside the streams themselves."""
        await self.meta(tenant, stream_id)
        feedback = Feedback(tenant, stream_id, rating, comment, ts=time.time_ns())
        await self.store.record_feedback(feedback, self.settings.feedback_maxlen)

    async def pace(self, tenant: str, stream_id: str, max_events_per_s: float) -> None:
        """Cap the frames per second of the stream's readers, on whichever streamers hold them."""
        await self.meta(tenant, stream_id)
        pace = control_codec.encode(Pace(max_events_per_s=max_events_per_s))
        await self._nc.publish(names.stream_subject(stream_id, "control"), pace)
