"""``sluice bench floor``: the same token frames over bare sockets, with no sluice at all.

One process serves ``--streams`` SSE responses of ``--tokens`` frames at
``--tokens-per-s`` (every due frame once a millisecond, as sluice's simulated model
emits them), framed by the streamer's own ``token_frame``; the same client processes
as ``sluice bench latency`` read them. What this costs in CPU and latency is the least
any server on this machine pays for that traffic with the clients beside it, the
baseline to read ``sluice bench connections --hold 0`` against.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from multiprocessing.synchronize import Event as EventType
from typing import Any, cast

from libs.common import sse
from libs.common.process import prepare_process
from libs.tools.bench import latency
from libs.tools.bench.reader import follow
from libs.tools.bench.stats import emit, error_label, line, summary
from libs.tools.bench.usage import cpu_s, format_shares, own_cpu_s
from libs.tools.servers import free_port

NEEDS_SUITE = False
TICK_S = 0.001
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    latency.add_arguments(parser)
    parser.set_defaults(streams=1000, tokens=500, ramp_s=5.0, workers=2)


def _chunk(frame: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class _Stream(asyncio.Protocol):
    """One response: its frames are due ``interval`` apart from the request on."""

    def __init__(self, streams: set[_Stream], tokens: int, interval: float) -> None:
        self._streams, self._tokens, self._interval = streams, tokens, interval
        self._transport: asyncio.Transport | None = None
        self._request = b""
        self._sent = 0
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._request += data
        if self._transport is not None and b"\r\n\r\n" in self._request and not self.due:
            self._transport.write(HEAD + _chunk(sse.RETRY))
            self.due = time.monotonic()
            self._streams.add(self)

    def emit_due(self, now: float) -> None:
        assert self._transport is not None
        while self.due <= now and self._sent < self._tokens:
            self._sent += 1
            frame = sse.token_frame(self._sent, [" token"], time.time_ns())
            self._transport.write(_chunk(frame))
            self.due += self._interval
        if self._sent == self._tokens:
            done = sse.json_frame("done", {"finish_reason": "stop"}, self._sent)
            self._transport.write(_chunk(done) + b"0\r\n\r\n")
            self._streams.discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._streams.discard(self)


async def _serve(port: int, tokens: int, tokens_per_s: float, ready: EventType) -> None:
    streams: set[_Stream] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Stream(streams, tokens, 1 / tokens_per_s), "127.0.0.1", port, backlog=4096
    )
    ready.set()
    async with server:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for stream in list(streams):
                stream.emit_due(now)


def _server(port: int, tokens: int, tokens_per_s: float, ready: EventType) -> None:
    prepare_process()
    asyncio.run(_serve(port, tokens, tokens_per_s, ready))


async def _read(
    url: str, count: int, ramp_s: float, tokens_per_s: float, begin_ns: int, steady: latency.Window
) -> latency.Sample:
    sample = latency.Sample()
    lead_s = latency.wait_until(begin_ns)

    async def one(index: int) -> None:
        await asyncio.sleep(lead_s + ramp_s * index / max(1, count))
        tally = latency.Tally(sample, time.time_ns(), tokens_per_s, steady)
        try:
            await follow(url, tally.on_event)
        except Exception as exc:
            sample.errors[error_label(exc)] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return sample


def _client(
    url: str, count: int, ramp_s: float, tokens_per_s: float, begin_ns: int, steady: latency.Window
) -> latency.Sample:
    prepare_process()
    started = own_cpu_s()
    sample = asyncio.run(_read(url, count, ramp_s, tokens_per_s, begin_ns, steady))
    sample.client_cpu_s = own_cpu_s() - started
    return sample


def run(args: argparse.Namespace, gateway: str | None) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    port, ready = free_port(), context.Event()
    server = context.Process(
        target=_server, args=(port, args.tokens, args.tokens_per_s, ready), daemon=True
    )
    server.start()
    ready.wait(30)
    assert server.pid is not None
    url = f"http://127.0.0.1:{port}/floor"
    shares = [
        args.streams // args.workers + (i < args.streams % args.workers)
        for i in range(args.workers)
    ]
    steady = latency.SteadyState(args.ramp_s, 0.0, args.tokens / args.tokens_per_s)
    runs = [
        (url, n, args.ramp_s, args.tokens_per_s, steady.begin_of(k, args), steady.window)
        for k, n in enumerate(shares)
    ]
    server_cpu = cpu_s(server.pid)
    with context.Pool(args.workers) as pool:
        samples = pool.starmap(_client, runs)
    elapsed = steady.elapsed_s()
    cpu = {"server": (cpu_s(server.pid) - server_cpu) / elapsed}
    server.terminate()
    total = latency.Sample()
    for sample in samples:
        total.merge(sample)
    cpu["clients"] = total.client_cpu_s / elapsed
    result = {
        "mode": "floor",
        "streams": args.streams,
        "tokens_per_s_each": args.tokens_per_s,
        "tokens_each": args.tokens,
        "delivery_ms": summary(total.delivery_ms),
        "schedule_lag_ms": summary(total.lag_ms),
        **steady.figures(total),
        "tokens_delivered": total.tokens,
        "delivered_tokens_per_s": total.tokens / elapsed,
        "cpu": cpu,
        "errors": dict(total.errors),
    }
    emit(
        f"floor: {args.streams} bare SSE responses x {args.tokens} frames at "
        f"{args.tokens_per_s:g}/s, {args.workers} client process(es), no sluice",
        [
            line("per-token delivery latency", total.delivery_ms),
            line("per-token lag behind the schedule", total.lag_ms),
            *steady.lines(total),
            f"  tokens delivered {total.tokens}/{args.streams * args.tokens} in {elapsed:.1f}s"
            f" = {result['delivered_tokens_per_s']:.0f} tokens/s; errors "
            f"{dict(total.errors) or 'none'}",
            f"  CPU: {format_shares(cpu)}",
        ],
        result,
        args.json,
    )
    return result
