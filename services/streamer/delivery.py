"""What every transport of a stream does the same: admit a reader, then serve it.

``/v1/streams/{id}/events`` (SSE) and ``/v1/streams/{id}/ws`` (WebSocket) differ only
in their sink and their dialect; the read token, the resume point, the flush policy,
the connection limit and the reader itself are one code path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.trace import SpanKind

from libs.common import metrics, tracing
from libs.common.api import FINAL_STATUSES
from libs.common.auth import is_stream_id, verify_read_token
from libs.common.boundary import classify
from libs.common.errors import InvalidRequest, NotFound, Overloaded, Unavailable
from libs.common.http import LIMITS
from libs.common.retry import TRANSIENT
from libs.common.service import SETTINGS
from libs.common.store import StreamMeta, StreamStore
from libs.common.wire import StatusChange
from services.streamer.flush import Flush, flush_of
from services.streamer.frames import Frames
from services.streamer.keys import HUB, STORE
from services.streamer.reader import ClientSink, Reader, ReaderLimits

MAX_EVENT_ID_DIGITS = 18
"""A token index below 10**18 fits the log's 64-bit entry ids with room to spare."""


def last_event_id(request: web.Request) -> int:
    return parse_last_event_id(
        request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    )


def parse_last_event_id(raw: str) -> int:
    """The token index to resume after; anything but a plain index is a 400."""
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_EVENT_ID_DIGITS):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise InvalidRequest(f"Last-Event-ID must be a token index below 10**18, got {shown!r}")
    return int(raw)


async def readable_meta(store: StreamStore, stream_id: str) -> StreamMeta | None:
    """The stream's meta; None once it or its finished log is gone.

    While Redis is out this is a retryable 503, never a stream that looks empty.
    """
    try:
        meta = await store.meta(stream_id)
        if meta and meta.status in FINAL_STATUSES and not await store.log_exists(stream_id):
            return None
    except TRANSIENT:
        raise Unavailable("the stream log is unreachable; retry shortly", retry_after_s=1) from None
    return meta


@dataclass(frozen=True, slots=True)
class Opening:
    """A read the request is allowed; ``meta`` is None when the stream's log is gone."""

    stream_id: str
    tenant: str
    after: int
    flush: Flush
    meta: StreamMeta | None


async def open_reading(request: web.Request) -> Opening:
    """Check everything a read needs before the response starts: errors are still HTTP.

    The read token names the stream only; the tenant is the stream's own (none for a
    stream whose log is gone).
    """
    settings = request.app[SETTINGS]
    stream_id = request.match_info["id"]
    verify_read_token(settings.secrets, stream_id, request.query.get("token"))
    if not is_stream_id(stream_id):
        raise NotFound("no such stream")
    after = last_event_id(request)
    flush = flush_of(request.query.get("flush"))
    if request.app[HUB].reader_count >= settings.max_connections:
        raise Overloaded("this streamer holds its maximum of open streams", retry_after_s=1)
    meta = await readable_meta(request.app[STORE], stream_id)
    return Opening(stream_id, meta.tenant if meta else "", after, flush, meta)


@contextmanager
def held(request: web.Request, opening: Opening) -> Iterator[None]:
    """Hold one of the tenant's open streams (SSE or WebSocket) while inside; 429 past its cap."""
    settings = request.app[SETTINGS]
    with request.app[LIMITS].connection("streams", opening.tenant, settings.tenant_max_sse):
        yield


def reader_for(request: web.Request, opening: Opening, sink: ClientSink, frames: Frames) -> Reader:
    limits = ReaderLimits.from_settings(request.app[SETTINGS])
    store = request.app[STORE]
    return Reader(
        opening.stream_id,
        sink,
        request.transport,
        store,
        opening.after,
        limits,
        frames,
        opening.flush,
    )


async def _started_meanwhile(store: StreamStore, reader: Reader) -> None:
    """A stream queued when its meta was read may have started before the subscription
    was in place, its ``running`` published to no one here: read the status once more."""
    status = await store.status(reader.stream_id)
    if status == "running":
        reader.status(StatusChange(status=status))


async def deliver(request: web.Request, reader: Reader, meta: StreamMeta) -> str:
    """Write the stream's status at once, then follow it live until it ends; why it stopped.

    The response has begun, so a failure is the dialect's retryable ``error`` (the
    client resumes from its last token), never a cut body.
    """
    if reader.sent:
        metrics.streamer_resumes.add(1)
    context = tracing.parent_of(meta.traceparent)
    try:
        with tracing.stream_span("deliver", reader.stream_id, context, SpanKind.SERVER):
            await reader.open(StatusChange(status=meta.status))
            async with request.app[HUB].reading(reader):
                if meta.status == "queued":
                    await _started_meanwhile(request.app[STORE], reader)
                return await reader.serve()
    except ConnectionError:
        return "client_gone"
    except Exception as exc:
        await reader.fail(classify(exc))
        return "failed"
