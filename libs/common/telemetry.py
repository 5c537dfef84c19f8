"""OpenTelemetry wiring, done once per process from the standard ``OTEL_*`` variables.

Metrics always go to the Prometheus registry behind ``/metrics``; when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (an empty value counts as unset, as compose
files pass it through) they and the traces also go out over OTLP, by
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the spec's default, or ``grpc``);
``OTEL_TRACES_EXPORTER=none`` or ``OTEL_METRICS_EXPORTER=none`` turns either off.
Histograms measured in seconds get buckets for seconds (the SDK's defaults suit ms).
Spans nobody exports are not recorded: without a trace exporter the sampler drops them
all, yet each still gets ids, so ``traceparent`` still travels with the stream and log
lines still carry the trace id (recording them was about a tenth of the coordinator's work
per admitted stream). Exemplars are off unless ``OTEL_METRICS_EXEMPLAR_FILTER`` asks
for them: the Prometheus text format drops them anyway, and the trace lookup they need
made every histogram record 60% dearer.
With telemetry off (``SLUICE_TELEMETRY=0``) no provider is installed, so every
instrument and span is the API's no-op: that is the baseline instrumentation is
measured against.
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from libs.common import tracing
from libs.common.metrics import HISTOGRAM_BUCKETS, zero_counters

_configured = False


def _views() -> list[View]:
    """Explicit buckets per histogram, from the catalogue in :mod:`libs.common.metrics`."""
    return [
        View(
            instrument_type=Histogram,
            instrument_name=name,
            aggregation=ExplicitBucketHistogramAggregation(buckets),
        )
        for name, buckets in HISTOGRAM_BUCKETS.items()
    ]


def otlp_endpoint() -> str:
    """The OTLP endpoint, or ``""`` when export is off (unset or empty)."""
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()


def _exporting(signal: str) -> bool:
    return bool(otlp_endpoint()) and os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp") != "none"


def _otlp_exporters() -> tuple[SpanExporter, MetricExporter]:
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(), HttpMetricExporter()


def setup_telemetry(service: str, enabled: bool = True) -> None:
    """Install the meter and tracer providers for ``service``; later calls do nothing."""
    global _configured
    if _configured or not enabled:
        return
    _configured = True
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service})
    readers: list[MetricReader] = [PrometheusMetricReader()]
    tracer_provider = TracerProvider(
        resource=resource, sampler=None if _exporting("TRACES") else ALWAYS_OFF
    )
    if otlp_endpoint():
        span_exporter, metric_exporter = _otlp_exporters()
        if _exporting("METRICS"):
            readers.append(PeriodicExportingMetricReader(metric_exporter))
        if _exporting("TRACES"):
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            tracing.export_spans()
    exemplars = (
        None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
    )
    metrics.set_meter_provider(
        MeterProvider(
            resource=resource, metric_readers=readers, views=_views(), exemplar_filter=exemplars
        )
    )
    trace.set_tracer_provider(tracer_provider)
    zero_counters(service)
