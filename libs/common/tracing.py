"""One trace per stream across the four services, carried as W3C trace context.

The trace starts where the stream is submitted; its ``traceparent`` rides in NATS
headers on ``sluice.submit`` and ``sluice.runner.<rid>.start``, and in the stream's
meta for the streamer, which joins later on its own. Each service opens one span per
stream (never per token), so tracing costs nothing on the hot path. The stream id is
an attribute of every span and, through :data:`current_stream`, a field of every log
line written inside one.

Without a trace exporter nothing is traced at all: no span, no context in NATS
headers or the meta. An unsampled span still cost each service a context, ids,
header encoding and parsing per stream (a fifth of the gateway's work for a POST);
the stream id, in every log line, already ties the services' lines together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

T = TypeVar("T")

STREAM_ID = "sluice.stream_id"
TRACEPARENT = "traceparent"

current_stream: ContextVar[str | None] = ContextVar("sluice_stream", default=None)
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("sluice")
_exporting = False


def export_spans() -> None:
    """Spans will be exported (telemetry set up with a trace exporter): trace streams."""
    global _exporting
    _exporting = True


def headers() -> dict[str, str] | None:
    """The current trace context as NATS headers; None outside a span (or tracing off)."""
    if not _exporting:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier or None


def traceparent() -> str:
    """The current span's ``traceparent``, for storing beside the stream; ``""`` if none."""
    return (headers() or {}).get(TRACEPARENT, "")


def parent(carrier: Mapping[str, str] | None) -> Context | None:
    """The context a message's headers carry; None when they carry none."""
    if not _exporting or not carrier or TRACEPARENT not in carrier:
        return None
    return _propagator.extract(carrier)


def parent_of(value: str) -> Context | None:
    """The context of a stored ``traceparent``."""
    return parent({TRACEPARENT: value}) if value else None


def trace_id() -> str | None:
    """The current trace id in hex, for log lines; None outside a recorded span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


@contextmanager
def stream_span(
    name: str,
    stream_id: str,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span about one stream, current for its block, child of ``context`` when given."""
    token = current_stream.set(stream_id)
    try:
        if not _exporting:
            yield trace.INVALID_SPAN
            return
        with _tracer.start_as_current_span(
            name, context=context, kind=kind, attributes={STREAM_ID: stream_id}
        ) as span:
            yield span
    finally:
        current_stream.reset(token)


async def traced(
    work: Awaitable[T],
    name: str,
    stream_id: str,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> T:
    """Await ``work`` inside a :func:`stream_span`: for tasks spawned per stream."""
    with stream_span(name, stream_id, context, kind):
        return await work
