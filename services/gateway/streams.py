"""The gateway's stream operations, callable from HTTP and from the control socket."""

from __future__ import annotations

import time

from nats.aio.client import Client as NATS

from libs.common import names
from libs.common.api import CreatedStream, ErrorBody, StreamInfo, StreamRequest
from libs.common.auth import is_stream_id, mint_read_token
from libs.common.control import request_cancel
from libs.common.errors import NotFound
from libs.common.settings import Settings
from libs.common.store import Feedback, StreamMeta, StreamStore
from libs.common.submit import build_submit, submit
from libs.common.wire import Pace, Submit, control_codec

DEFAULT_ABANDON_S = 30.0


class Streams:
    def __init__(self, settings: Settings, nc: NATS, store: StreamStore) -> None:
        self.settings = settings
        self._nc = nc
        self.store = store

    async def create(self, tenant: str, request: StreamRequest) -> CreatedStream:
        return await self.admit(self.prepare(tenant, request))

    def prepare(self, tenant: str, request: StreamRequest) -> Submit:
        """Validate the request and name the stream, before anyone hears of it."""
        return build_submit(self.settings, tenant, request, DEFAULT_ABANDON_S)

    async def admit(self, message: Submit) -> CreatedStream:
        """Hand a prepared stream to a coordinator; the answer of POST /v1/streams."""
        accepted = await submit(self._nc, self.store.redis, self.settings, message)
        token = mint_read_token(
            self.settings.signing_secret, message.id, self.settings.read_token_ttl_s
        )
        streamer = self.settings.public_url("streamer")
        return CreatedStream(
            id=message.id,
            status="queued",
            token=token,
            events_url=f"{streamer}/v1/streams/{message.id}/events?token={token}",
            control_url=self.settings.public_url("gateway").replace("http", "ws", 1)
            + "/v1/control",
            position=accepted.position,
        )

    async def meta(self, tenant: str, stream_id: str) -> StreamMeta:
        """The stream's meta, or 404 if it does not exist for this tenant."""
        meta = await self.store.meta(stream_id) if is_stream_id(stream_id) else None
        if meta is None or meta.tenant != tenant:
            raise NotFound(f"no stream {stream_id!r}")
        return meta

    async def info(self, tenant: str, stream_id: str) -> StreamInfo:
        meta = await self.meta(tenant, stream_id)
        if meta.status == "running":
            meta.tokens = await self.store.logged_tokens(stream_id)
        return describe(stream_id, meta)

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


def _seconds(ns: int) -> float | None:
    return ns / 1e9 if ns else None


def describe(stream_id: str, meta: StreamMeta) -> StreamInfo:
    error = ErrorBody(meta.error_type, meta.error_message) if meta.error_type else None
    return StreamInfo(
        id=stream_id,
        status=meta.status,
        model=meta.model,
        tokens=meta.tokens,
        created_at=meta.created_ns / 1e9,
        finish_reason=meta.finish_reason or None,
        ttft_ms=meta.ttft_ms,
        duration_ms=meta.duration_ms,
        conversation_id=meta.conversation_id or None,
        started_at=_seconds(meta.started_ns),
        finished_at=_seconds(meta.finished_ns),
        tokens_after_cancel=meta.tokens_after_cancel,
        cancel_to_stop_ms=meta.cancel_to_stop_ms,
        tokens_unread=meta.tokens_unread,
        error=error,
    )
