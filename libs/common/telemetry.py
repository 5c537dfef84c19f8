"""OpenTelemetry wiring, done once per process from the standard ``OTEL_*`` variables.

Metrics always go to the Prometheus registry behind ``/metrics``; when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set they and the traces also go out over OTLP.
Histograms measured in seconds get buckets for seconds (the SDK's defaults suit ms).
"""

from __future__ import annotations

import os

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from libs.common.metrics import HISTOGRAM_BUCKETS

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


def setup_telemetry(service: str) -> None:
    """Install the meter and tracer providers for ``service``; later calls do nothing."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    readers: list[MetricReader] = [PrometheusMetricReader()]
    tracer_provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    metrics.set_meter_provider(
        MeterProvider(resource=resource, metric_readers=readers, views=_views())
    )
    trace.set_tracer_provider(tracer_provider)
