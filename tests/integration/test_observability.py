"""Metrics, traces, logs and the live dashboard, on a suite of this module's own.

The suite has its own NATS and Redis, so the metrics move only with what these tests
do. Its services export OTLP/HTTP to a receiver this module runs in-process (the
protobuf exporter the services use in production, pointed at a tiny aiohttp server
that decodes the requests), so the test sees the very spans a collector would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import shutil
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import use_span
from prometheus_client.parser import text_string_to_metric_families

from libs.client.http import SluiceClient, events
from libs.common.logs import JsonFormatter
from libs.common.metrics import PER_TOKEN_SAMPLE
from libs.common.stats import Buckets, quantile
from libs.common.telemetry import otlp_endpoint
from libs.common.tracing import STREAM_ID, current_stream
from libs.tools.servers import free_port
from libs.tools.stack import SERVICES, Stack
from tests.conftest import FAST_ENV, own_servers
from tests.integration.helpers import final, read_stream, sim, text

SETTLE_S = 20.0
BROWSER_TIMEOUT_S = 90.0
SCOPE_LABELS = {"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP endpoint that keeps every span and notes who exported metrics."""

    url: str = ""
    spans: list[Span] = field(default_factory=list)
    metric_services: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await _body(request))
        for resource_spans in export.resource_spans:
            service = _service_name(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: a.value.string_value for a in span.attributes},
                        )
                    )
        self.arrived.set()
        return _protobuf(ExportTraceServiceResponse().SerializeToString())

    async def metrics(self, request: web.Request) -> web.Response:
        export = ExportMetricsServiceRequest.FromString(await _body(request))
        for resource_metrics in export.resource_metrics:
            self.metric_services.add(_service_name(resource_metrics.resource.attributes))
        self.arrived.set()
        return _protobuf(b"")

    async def wait_for(self, ready: Callable[[], bool], timeout_s: float = SETTLE_S) -> None:
        async def loop() -> None:
            while not ready():
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(loop(), timeout_s)


async def _body(request: web.Request) -> bytes:
    body = await request.read()
    return gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body


def _protobuf(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/x-protobuf")


def _service_name(attributes: Any) -> str:
    return str(next(a.value.string_value for a in attributes if a.key == "service.name"))


@pytest.fixture(scope="module")
async def otlp() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.traces)
    app.router.add_post("/v1/metrics", receiver.metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def suite(
    otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Four services on a NATS and Redis of their own, exporting OTLP to ``otlp``.

    Starting and stopping happen off the event loop, which must keep serving the
    receiver meanwhile: the services flush their last spans as they exit.
    """
    tmp = tmp_path_factory.mktemp("observability")
    env = {
        **FAST_ENV,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }
    with own_servers(tmp) as (nats, redis):
        stack = Stack(nats.url, f"{redis.url}/0", tmp, env=env)
        try:
            yield await asyncio.to_thread(stack.start)
        finally:
            await asyncio.to_thread(stack.stop)


@pytest.fixture
def sluice(suite: Stack, session: aiohttp.ClientSession) -> SluiceClient:
    return SluiceClient(session, suite.gateway)


Key = tuple[str, frozenset[tuple[str, str]]]


async def scrape(session: aiohttp.ClientSession, stack: Stack) -> dict[Key, float]:
    """Every sluice sample on every service's ``/metrics``, summed across services."""
    samples: dict[Key, float] = {}
    for service in stack.services:
        async with session.get(service.url + "/metrics") as response:
            assert response.status == 200, service.name
            body = await response.text()
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if not sample.name.startswith("sluice_"):
                    continue
                labels = frozenset(
                    (k, v) for k, v in sample.labels.items() if k not in SCOPE_LABELS
                )
                key = (sample.name, labels)
                samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def moved(after: dict[Key, float], before: dict[Key, float], name: str, **labels: str) -> float:
    """How far the samples called ``name`` whose labels include ``labels`` moved."""
    wanted = set(labels.items())

    def total(samples: dict[Key, float]) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)

    return round(total(after) - total(before), 6)


async def settle(
    session: aiohttp.ClientSession,
    stack: Stack,
    before: dict[Key, float],
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[Key, float]:
    """Scrape until every expected movement is there (or time is up), then compare exactly.

    Processes record some figures a moment after the client has seen the stream end
    (the runner after publishing ``done``), hence the polling; the comparison itself is
    exact, and counters only grow, so an overshoot fails too.
    """
    deadline = time.monotonic() + SETTLE_S
    while True:
        after = await scrape(session, stack)
        actual = {key: moved(after, before, key[0], **dict(key[1])) for key in expected}
        if actual == expected or time.monotonic() > deadline:
            assert actual == expected
            return after
        await asyncio.sleep(0.2)


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def sampled_count(values: int) -> int:
    """How many of a per-token series' ``values`` its histogram records (1st, 9th, …)."""
    return -(-values // PER_TOKEN_SAMPLE)


@dataclass
class Reading:
    """What one client connection received."""

    token_frames: int = 0
    last_id: str = ""
    events: list[str] = field(default_factory=list)
    data: list[Any] = field(default_factory=list)


async def read(
    session: aiohttp.ClientSession,
    url: str,
    last_event_id: str | None = None,
    on_token: Callable[[], Any] | None = None,
    stop_after_first_token: bool = False,
) -> Reading:
    """Follow a stream, counting token frames; optionally hang up after the first one."""
    reading = Reading()

    async def follow() -> None:
        async for received in events(session, url, last_event_id):
            reading.events.append(received.type)
            reading.data.append(received.json())
            if received.type != "token":
                continue
            reading.token_frames += 1
            reading.last_id = received.event.last_event_id
            if on_token is not None and reading.token_frames == 1:
                await on_token()
            if stop_after_first_token:
                return

    await asyncio.wait_for(follow(), 30)
    return reading


async def wait_status(client: SluiceClient, stream_id: str, status: str) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            code, info = await client.get(stream_id)
            assert code == 200, info
            if info["status"] == status:
                return dict(info)
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), SETTLE_S)


async def test_scripted_scenario_moves_each_metric_by_exactly_what_happened(
    suite: Stack, sluice: SluiceClient, session: aiohttp.ClientSession
) -> None:
    before = await scrape(session, suite)

    async def completed(index: int) -> tuple[str, Reading]:
        body = sim(tokens=20, tokens_per_s=100, ttft_ms=100, seed=index)
        created = await sluice.create(prompt=f"complete {index}", **{"sim": body})
        return created["id"], await read(session, created["events_url"])

    async def cancelled() -> tuple[str, Reading]:
        created = await sluice.create(prompt="cancel me", sim=sim(tokens=1000, tokens_per_s=50))

        async def cancel() -> None:
            status, _ = await sluice.cancel(created["id"])
            assert status == 202

        return created["id"], await read(session, created["events_url"], on_token=cancel)

    async def abandoned() -> str:
        created = await sluice.create(
            prompt="never read", abandon_after_s=0.5, sim=sim(tokens=1000, tokens_per_s=50)
        )
        await wait_status(sluice, created["id"], "abandoned")
        return str(created["id"])

    async def resumed() -> tuple[str, Reading, Reading]:
        created = await sluice.create(prompt="resume me", sim=sim(tokens=8, tokens_per_s=4))
        first = await read(session, created["events_url"], stop_after_first_token=True)
        rest = await read(session, created["events_url"], last_event_id=first.last_id)
        return created["id"], first, rest

    async def bad_request() -> None:
        status, answer = await sluice.create_raw(b'{"prompt": "x", "max_tokens": 0}')
        assert status == 400 and answer["error"]["type"] == "invalid_request"

    (
        done,
        (cancel_id, cancel_reading),
        abandon_id,
        (resume_id, first, rest),
        _,
    ) = await asyncio.gather(
        asyncio.gather(*(completed(i) for i in range(3))),
        cancelled(),
        abandoned(),
        resumed(),
        bad_request(),
    )
    assert all(r.events[-1] == "done" for _, r in done)
    assert cancel_reading.data[-1]["finish_reason"] == "cancelled"
    assert rest.events[-1] == "done" and int(first.last_id) < 8

    infos = {
        stream_id: (await wait_status(sluice, stream_id, status))
        for stream_id, status in [
            *((stream_id, "completed") for stream_id, _ in done),
            (cancel_id, "cancelled"),
            (abandon_id, "abandoned"),
            (resume_id, "completed"),
        ]
    }
    generated = sum(info["tokens"] for info in infos.values())
    after_cancel = sum(infos[s]["tokens_after_cancel"] for s in (cancel_id, abandon_id))
    unread = infos[abandon_id]["tokens"]
    assert unread > 0 and infos[abandon_id]["tokens_unread"] == unread
    # The first connection of the resumed stream hangs up: the next frame's write fails,
    # after its delivery lag was measured.
    hung_up_write = 1
    frames_written = [r.token_frames for _, r in done] + [
        cancel_reading.token_frames,
        first.token_frames + hung_up_write,
        rest.token_frames,
    ]

    await settle(
        session,
        suite,
        before,
        {
            key("sluice_streams_submitted_total"): 6,
            key("sluice_streams_finished_total", status="completed"): 4,
            key("sluice_streams_finished_total", status="cancelled"): 1,
            key("sluice_streams_finished_total", status="abandoned"): 1,
            key("sluice_streams_finished_total"): 6,
            key("sluice_runner_tokens_total"): generated,
            key("sluice_runner_ttft_seconds_count"): 6,
            key("sluice_runner_inter_token_seconds_count"): sum(
                sampled_count(info["tokens"] - 1) for info in infos.values()
            ),
            key("sluice_runner_tokens_per_s_count"): 6,
            key("sluice_runner_stream_duration_seconds_count"): 6,
            key("sluice_streamer_first_frame_seconds_count"): 6,
            key("sluice_streamer_delivery_lag_seconds_count"): sum(
                map(sampled_count, frames_written)
            ),
            key("sluice_streamer_resumes_total"): 1,
            key("sluice_streamer_disconnects_total", reason="client_gone"): 1,
            key("sluice_streamer_disconnects_total"): 1,
            key("sluice_streamer_open_connections"): 0,
            key("sluice_cancel_to_stop_seconds_count"): 2,
            key("sluice_tokens_wasted_total", kind="after_cancel"): after_cancel,
            key("sluice_tokens_wasted_total", kind="unread"): unread,
            key("sluice_coordinator_queue_wait_seconds_count"): 6,
            key("sluice_coordinator_queue_depth"): 0,
            key("sluice_coordinator_rejections_total"): 0,
            key("sluice_runner_slots_in_use"): 0,
            key("sluice_runners_alive"): 0,
            key("sluice_runner_lost_total"): 0,
            key(
                "sluice_http_errors_total",
                service="gateway",
                type="invalid_request",
                **{"class": "4xx"},
            ): 1,
            key("sluice_http_errors_total"): 1,
        },
    )


async def test_one_trace_follows_a_stream_through_all_four_services(
    suite: Stack, sluice: SluiceClient, session: aiohttp.ClientSession, otlp: OtlpReceiver
) -> None:
    created = await sluice.create(prompt="trace me", sim=sim(tokens=5))
    received = await read_stream(session, created["events_url"])
    assert final(received).type == "done"

    def spans() -> list[Span]:
        return [s for s in otlp.spans if s.attributes.get(STREAM_ID) == created["id"]]

    await otlp.wait_for(lambda: {s.service for s in spans()} == set(SERVICES))
    await otlp.wait_for(lambda: len(spans()) == 5)
    by_name = {(s.service, s.name): s for s in spans()}
    assert set(by_name) == {
        ("gateway", "submit"),
        ("coordinator", "admit"),
        ("coordinator", "place"),
        ("runner", "generate"),
        ("streamer", "deliver"),
    }
    assert len({s.trace_id for s in spans()}) == 1, spans()
    submit, admit = by_name["gateway", "submit"], by_name["coordinator", "admit"]
    place, generate = by_name["coordinator", "place"], by_name["runner", "generate"]
    deliver = by_name["streamer", "deliver"]
    assert submit.parent_id == ""
    assert admit.parent_id == submit.span_id
    assert place.parent_id == admit.span_id
    assert generate.parent_id == place.span_id
    assert deliver.parent_id == admit.span_id
    await otlp.wait_for(lambda: otlp.metric_services == set(SERVICES))


def test_log_lines_inside_a_stream_span_carry_its_stream_and_trace_ids() -> None:
    formatter = JsonFormatter("runner")
    span = TracerProvider().get_tracer("test").start_span("generate")
    record = logging.LogRecord("sluice", logging.WARNING, __file__, 1, "slow flush", (), None)
    token = current_stream.set("st_abc")
    try:
        with use_span(span, end_on_exit=True):
            line = json.loads(formatter.format(record))
    finally:
        current_stream.reset(token)
    assert line["stream_id"] == "st_abc"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["service"] == "runner" and line["msg"] == "slow flush"
    outside = json.loads(formatter.format(record))
    assert "stream_id" not in outside and "trace_id" not in outside


def test_an_empty_otlp_endpoint_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    assert otlp_endpoint() == ""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert otlp_endpoint() == "http://collector:4318"


def test_percentiles_interpolate_within_buckets_like_histogram_quantile() -> None:
    buckets = Buckets(bounds=[0.01, 0.1, float("inf")], counts=[50, 100, 100])
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.95, buckets) == pytest.approx(0.091)
    assert quantile(0.5, Buckets(bounds=[0.01, float("inf")], counts=[0, 10])) == 0.01
    assert quantile(0.5, Buckets(bounds=[0.01, float("inf")], counts=[0, 0])) is None


async def complete_one(sluice: SluiceClient, session: aiohttp.ClientSession) -> None:
    created = await sluice.create(prompt="one more", sim=sim(tokens=5))
    assert final(await read_stream(session, created["events_url"])).type == "done"


async def dashboard(session: aiohttp.ClientSession, stack: Stack) -> dict[str, Any]:
    async with session.get(stack.gateway + "/dashboard/stats") as response:
        assert response.status == 200
        return dict(await response.json())


async def until_dashboard(
    session: aiohttp.ClientSession, stack: Stack, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            figures = await dashboard(session, stack)
            if ready(figures):
                return figures
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), SETTLE_S)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium)")
    return found


async def browse(url: str, profile: Path, *mode: str) -> bytes:
    """Load ``url`` in headless Chromium, letting its scripts run ~3 s, then ``mode``."""
    process = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--virtual-time-budget=3000",
        *mode,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BROWSER_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


def figure(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert found, f"no #{element_id} in the page"
    return found.group(1)


def number(text: str) -> float:
    return float(text.split("/")[0].split("(")[0].replace(",", "").strip())


async def test_dashboard_page_shows_live_figures_in_headless_chromium(
    suite: Stack, sluice: SluiceClient, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await complete_one(sluice, session)
    created = await sluice.create(
        prompt="keep busy", max_tokens=6000, sim=sim(tokens=6000, tokens_per_s=100)
    )
    reading = asyncio.create_task(read_stream(session, created["events_url"], timeout_s=60))
    try:
        figures = await until_dashboard(
            session,
            suite,
            lambda d: (
                d["streams_running"] >= 1 and d["tokens_per_s"] > 0 and d["open_connections"] >= 1
            ),
        )
        assert figures["instances"] == {name: 1 for name in SERVICES}
        assert figures["runners_alive"] == 1 and figures["slots_total"] == 256

        dom = (await browse(suite.gateway + "/dashboard", tmp_path / "p1", "--dump-dom")).decode()
        assert 'data-ready="1"' in dom, dom[-2000:]
        assert number(figure(dom, "streams_running")) >= 1
        assert number(figure(dom, "tokens_per_s")) > 0
        assert number(figure(dom, "open_connections")) >= 1
        assert number(figure(dom, "runners_alive")) == 1
        assert figure(dom, "namespace") == figures["namespace"] == "sluice"
        assert figure(dom, "slots").endswith("/ 256")
        assert re.search(r"<td>completed</td><td>\d+</td>", dom), "streams ended by status"
        ttft = re.search(r"<td>time to first token \(model\)</td><td>([\d.,]+)</td>", dom)
        assert ttft and float(ttft.group(1).replace(",", "")) > 0

        shot = tmp_path / "dashboard.png"
        await browse(suite.gateway + "/dashboard", tmp_path / "p2", f"--screenshot={shot}")
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (1280, 900)
        assert len(png) > 20_000, "a page of figures, not a blank one"
    finally:
        await sluice.cancel(created["id"])
        received = await asyncio.wait_for(reading, 30)
    assert final(received).json()["finish_reason"] == "cancelled"
    assert text(received)


async def test_sluice_top_prints_the_same_figures(
    suite: Stack, sluice: SluiceClient, session: aiohttp.ClientSession
) -> None:
    await complete_one(sluice, session)
    status, _ = await sluice.create_raw(b"{")
    assert status == 400
    await until_dashboard(
        session,
        suite,
        lambda d: d["totals"].get("sluice_http_errors", {}).get("invalid_request", 0) >= 1,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "libs.tools.cli",
        "top",
        "--once",
        "--gateway",
        suite.gateway,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    screen = out.decode()
    assert "\x1b[" not in screen, "no colour codes when the output is not a terminal"
    assert re.search(r"streams running \d+ / 256 slots", screen), screen
    assert re.search(r"runners alive 1\b", screen), screen
    assert "namespace sluice" in screen, screen
    assert re.search(r"ended\s+.*completed \d+", screen), screen
    assert re.search(r"errors\s+.*invalid_request \d+", screen), screen
    assert "time to first token (model)" in screen
