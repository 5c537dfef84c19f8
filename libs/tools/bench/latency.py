"""``sluice bench latency``: N concurrent streams, client-side TTFT and per-token delivery latency.

Delivery latency is the client's receive time minus the frame's ``ts`` (the runner's
emit stamp of its first token): what sluice adds on top of the model's own timing.
Schedule lag is the receive time minus when the simulated model was due to produce the
token (the first token's stamp plus i / tokens-per-s): it also counts a runner that
falls behind its own model, which the emit stamp hides.
The client may run in several processes so that it is not the bottleneck it measures.

Percentiles over a whole run mix the ramp (streams still opening, each costing the
suite far more than a token) with the steady state the throughput targets are about,
so lag is also reported over the tokens due while every stream was running, with how
busy the whole machine was over that window.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from libs.client.http import SluiceClient
from libs.common.process import prepare_process
from libs.common.sse import Event, token_data
from libs.tools.bench.reader import follow
from libs.tools.bench.stats import emit, error_label, line, summary
from libs.tools.bench.usage import MachineBusy, own_cpu_s


@dataclass
class Sample:
    ttft_ms: list[float] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    steady_lag_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    client_cpu_s: float = 0.0

    def merge(self, other: Sample) -> None:
        self.ttft_ms += other.ttft_ms
        self.status_ms += other.status_ms
        self.delivery_ms += other.delivery_ms
        self.lag_ms += other.lag_ms
        self.steady_lag_ms += other.steady_lag_ms
        self.tokens += other.tokens
        self.errors.update(other.errors)
        self.client_cpu_s += other.client_cpu_s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams")
    parser.add_argument(
        "--tokens-per-s", type=float, default=50.0, help="each stream's model speed"
    )
    parser.add_argument("--tokens", type=int, default=250, help="tokens per stream")
    parser.add_argument("--ttft-ms", type=int, default=50, help="the model's time to first token")
    parser.add_argument(
        "--ramp-s", type=float, default=1.0, help="spread stream starts over this long"
    )
    parser.add_argument("--workers", type=int, default=1, help="client processes")


Window = tuple[int, int]
NO_WINDOW: Window = (0, 0)
SETTLE_S = 1.0  # after the last stream's first token, before the steady state counts
LEAD_S = 2.0  # for the client processes to start and import before the first stream opens


def steady_window(started_ns: int, ramp_s: float, first_token_s: float, run_s: float) -> Window:
    """Wall-clock ns when tokens fall due with every stream running: the last stream's
    first token (plus a settling second) to the first stream's last."""
    return (
        started_ns + int((ramp_s + first_token_s + SETTLE_S) * 1e9),
        started_ns + int((first_token_s + run_s) * 1e9),
    )


def wait_until(begin_ns: int) -> float:
    """Seconds from now to ``begin_ns``, the wall-clock instant every client process
    opens its first stream at, so that the steady window is the same for all of them."""
    return max(0.0, (begin_ns - time.time_ns()) / 1e9)


class SteadyState:
    """A run's start, :data:`LEAD_S` from now, its steady window, and how busy the
    machine is over that window."""

    def __init__(self, ramp_s: float, first_token_s: float, run_s: float) -> None:
        self.begin_ns = time.time_ns() + int(LEAD_S * 1e9)
        self.begin_mono = time.monotonic() + LEAD_S
        self.window = steady_window(self.begin_ns, ramp_s, first_token_s, run_s)
        self._busy = MachineBusy(*self.window)
        self._busy.start()

    def begin_of(self, worker: int, args: argparse.Namespace) -> int:
        """When client process ``worker`` opens its first stream: the processes take turns,
        one stream apart, so that streams open evenly over the ramp, not in step."""
        return self.begin_ns + int(worker * args.ramp_s / max(1, args.streams) * 1e9)

    def elapsed_s(self) -> float:
        return max(0.0, time.monotonic() - self.begin_mono)

    def figures(self, sample: Sample) -> dict[str, Any]:
        self._busy.join(timeout=SETTLE_S)  # the window closed before the run's last token
        return {
            "steady_lag_ms": summary(sample.steady_lag_ms),
            "steady_machine_busy": self._busy.share,
            "steady_machine_stolen": self._busy.stolen,
            "machine_cores": os.cpu_count(),
        }

    def lines(self, sample: Sample) -> list[str]:
        busy, stolen = self._busy.share, self._busy.stolen
        seconds = max(0.0, (self.window[1] - self.window[0]) / 1e9)
        load = "?" if busy is None else f"{100 * busy:.0f}% busy, {100 * (stolen or 0):.0f}% stolen"
        return [
            line("  the same, every stream running", sample.steady_lag_ms),
            f"    (tokens due over {seconds:.1f}s; the machine: {load} of "
            f"{100 * (os.cpu_count() or 1)}%)",
        ]


class Tally:
    """One stream's events into the run's sample, as they arrive."""

    def __init__(
        self, sample: Sample, started_ns: int, tokens_per_s: float, steady: Window = NO_WINDOW
    ) -> None:
        self.sample = sample
        self.started_ns = started_ns
        self.interval_ns = 1e9 / tokens_per_s
        self.steady_from, self.steady_until = steady
        self.first_event = True
        self.first_token = True
        self.origin_ns = 0.0  # when token 0 was due, from the first token's stamp

    def on_event(self, event: Event, at_ns: int) -> None:
        sample = self.sample
        if self.first_event:
            sample.status_ms.append((at_ns - self.started_ns) / 1e6)
            self.first_event = False
        if event.type == "token":
            data = token_data.decode(event.data)
            last, count = data.seq, data.n
            if self.first_token:
                sample.ttft_ms.append((at_ns - self.started_ns) / 1e6)
                self.first_token = False
                self.origin_ns = data.ts - (last - count + 1) * self.interval_ns
            sample.delivery_ms.extend([(at_ns - data.ts) / 1e6] * count)
            first_due = self.origin_ns + (last - count + 1) * self.interval_ns
            late_ms, step_ms = (at_ns - first_due) / 1e6, self.interval_ns / 1e6
            lags = [late_ms - i * step_ms for i in range(count)]
            sample.lag_ms += lags
            if self.steady_from <= first_due < self.steady_until:
                sample.steady_lag_ms += lags
            sample.tokens += count
        elif event.type == "error":
            error: Any = event.json()
            sample.errors[error.get("type", "error")] += 1


async def one_stream(
    client: SluiceClient, body: dict[str, Any], delay_s: float, sample: Sample, steady: Window
) -> None:
    await asyncio.sleep(delay_s)
    tally = Tally(sample, time.time_ns(), body["sim"]["tokens_per_s"], steady)
    try:
        created = await client.create(**body)
        await follow(created["events_url"], tally.on_event)
    except Exception as exc:
        sample.errors[error_label(exc)] += 1


@dataclass(frozen=True)
class ClientRun:
    """One client process's share of the run: its streams, and when they open."""

    gateway: str
    count: int
    body: dict[str, Any]
    ramp_s: float
    offset: int  # the first stream's number across all client processes
    begin_ns: int
    steady: Window


async def run_streams(run: ClientRun) -> Sample:
    sample = Sample()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = SluiceClient(session, run.gateway)
        lead_s = wait_until(run.begin_ns)
        await asyncio.gather(
            *(
                one_stream(
                    client,
                    {**run.body, "prompt": f"bench {run.offset + i}"},
                    lead_s + run.ramp_s * i / max(1, run.count),
                    sample,
                    run.steady,
                )
                for i in range(run.count)
            )
        )
    return sample


def _worker(run: ClientRun) -> Sample:
    prepare_process()
    started = own_cpu_s()
    sample = asyncio.run(run_streams(run))
    sample.client_cpu_s = own_cpu_s() - started
    return sample


def run(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    body = {
        "max_tokens": args.tokens,
        "sim": {"tokens": args.tokens, "tokens_per_s": args.tokens_per_s, "ttft_ms": args.ttft_ms},
    }
    shares = [
        args.streams // args.workers + (1 if i < args.streams % args.workers else 0)
        for i in range(args.workers)
    ]
    offsets = [sum(shares[:i]) for i in range(args.workers)]
    steady = SteadyState(args.ramp_s, args.ttft_ms / 1000, args.tokens / args.tokens_per_s)
    runs = [
        ClientRun(gateway, n, body, args.ramp_s, o, steady.begin_of(k, args), steady.window)
        for k, (n, o) in enumerate(zip(shares, offsets, strict=True))
    ]
    if args.workers == 1:
        samples = [_worker(runs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            samples = pool.map(_worker, runs)
    elapsed = steady.elapsed_s()
    total = Sample()
    for sample in samples:
        total.merge(sample)
    result = {
        "mode": "latency",
        "streams": args.streams,
        "tokens_per_s_each": args.tokens_per_s,
        "tokens_each": args.tokens,
        "model_ttft_ms": args.ttft_ms,
        "status_frame_ms": summary(total.status_ms),
        "client_ttft_ms": summary(total.ttft_ms),
        "delivery_ms": summary(total.delivery_ms),
        "schedule_lag_ms": summary(total.lag_ms),
        **steady.figures(total),
        "tokens_delivered": total.tokens,
        "tokens_expected": args.streams * args.tokens,
        "delivered_tokens_per_s": total.tokens / elapsed if elapsed else 0.0,
        "elapsed_s": elapsed,
        "client_cpu": total.client_cpu_s / elapsed if elapsed else 0.0,
        "errors": dict(total.errors),
    }
    emit(
        f"latency: {args.streams} streams x {args.tokens} tokens at {args.tokens_per_s:g} tokens/s "
        f"(model TTFT {args.ttft_ms} ms), {args.workers} client process(es)",
        [
            line("first event (status) after POST", total.status_ms),
            line("time to first token (client)", total.ttft_ms),
            line("per-token delivery latency", total.delivery_ms),
            line("per-token lag behind the model", total.lag_ms),
            *steady.lines(total),
            f"  tokens delivered {total.tokens}/{args.streams * args.tokens} "
            f"in {elapsed:.1f}s = {result['delivered_tokens_per_s']:.0f} tokens/s; errors {dict(total.errors) or 'none'}",
            f"  client processes: {100 * result['client_cpu']:.0f}% of one core",
        ],
        result,
        args.json,
    )
    return result
