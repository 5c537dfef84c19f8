"""``sluice bench floor``: the same token frames over bare sockets, with no sluice at all.

One process serves ``--streams`` SSE responses of ``--tokens`` frames at
``--tokens-per-s`` (every due frame once a millisecond, as sluice's simulated model
emits them), framed by the streamer's own ``token_frame``; the same client processes
as ``sluice bench latency`` read them. What this costs in CPU and latency is the least
any server on this machine pays for that traffic with the clients beside it, the
baseline to read ``sluice bench connections --hold 0`` against.

sluice's tokens take more hops than that by design, and on a small machine each hop
between processes costs a wake-up. ``--through bus`` adds sluice's hops in bare code:
an emitter process publishes each due token on NATS (a subject per stream) and a relay
process subscribed to them writes the frames; ``--through log,bus`` has the emitter
append each token to a Redis Stream per stream first, waiting for the reply, as
sluice's runner logs before it publishes. They start their own NATS (and Redis). The gap
between these floors and sluice is what sluice's code costs; the gap between ``none``
and ``log,bus``, what its architecture costs on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import redis

from libs.common.process import prepare_process
from libs.tools.bench import latency
from libs.tools.bench.bare import HOST, NatsLink, RedisLink, Response
from libs.tools.bench.reader import follow
from libs.tools.bench.stats import emit, error_label, line, summary
from libs.tools.bench.usage import cpu_s, format_shares, own_cpu_s
from libs.tools.servers import Server, free_port, nats_server, redis_server

NEEDS_SUITE = False
TICK_S = 0.001
START = b"floor.start"  # a relay's request for a stream's tokens: its number
TOKENS = b"floor.token."  # + the stream's number: its tokens, "<seq> <emit ns>"
LOG_KEY = b"floor:"  # + the stream's number: its Redis Stream
HOPS = {
    "none": "written by the process that schedules it",
    "bus": "published on NATS by an emitter, written by a relay",
    "log,bus": "appended to Redis by an emitter (reply awaited), published on NATS, "
    "written by a relay",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    latency.add_arguments(parser)
    parser.set_defaults(streams=1000, tokens=500, ramp_s=5.0, workers=2)
    add_through(parser)


def add_through(parser: argparse.ArgumentParser) -> None:
    """``--through``: the floor's hops (``capacity --floor`` searches with it too)."""
    parser.add_argument(
        "--through",
        choices=tuple(HOPS),
        default="none",
        help="the hops between processes each token takes, as in sluice: none; bus (NATS "
        "from an emitter to a relay); log,bus (a Redis XADD first, then NATS)",
    )


class _Stream(Response):
    """One response of the direct floor: its frames are due ``interval`` apart from the request on."""

    def __init__(self, streams: set[_Stream], tokens: int, interval: float) -> None:
        super().__init__(tokens)
        self._streams, self._interval = streams, interval
        self._sent = 0
        self.due = 0.0

    def opened(self) -> None:
        self.due = time.monotonic()
        self._streams.add(self)

    def emit_due(self, now: float) -> None:
        while self.due <= now:
            self._sent += 1
            self.due += self._interval
            if self.token(self._sent, time.time_ns()):
                self._streams.discard(self)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._streams.discard(self)


async def _serve(port: int, tokens: int, tokens_per_s: float, ready: EventType) -> None:
    streams: set[_Stream] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Stream(streams, tokens, 1 / tokens_per_s), HOST, port, backlog=4096
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


class _Schedule:
    """One stream's tokens in the emitter: the next is due at ``due``."""

    def __init__(self, number: bytes) -> None:
        self.subject, self.key = TOKENS + number, LOG_KEY + number
        self.due = time.monotonic()
        self.sent = 0


class _Emitter(NatsLink):
    """Stands for the runner: every due token, logged first if it has a Redis link, then
    published, each tick's tokens of every stream in one write to each server."""

    def __init__(self, tokens: int, interval: float) -> None:
        super().__init__(self._start)
        self._tokens, self._interval = tokens, interval
        self._streams: list[_Schedule] = []

    def _start(self, _subject: bytes, number: bytes) -> None:
        self._streams.append(_Schedule(number))

    def take_due(self, now: float) -> list[tuple[_Schedule, bytes]]:
        """The tokens due by ``now``, each with its payload; finished streams are dropped."""
        batch, finished = [], False
        for stream in self._streams:
            while stream.due <= now and stream.sent < self._tokens:
                stream.sent += 1
                stream.due += self._interval
                batch.append((stream, b"%d %d" % (stream.sent, time.time_ns())))
                finished = finished or stream.sent == self._tokens
        if finished:
            self._streams = [s for s in self._streams if s.sent < self._tokens]
        return batch

    async def emit(self, log: RedisLink | None) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            batch = self.take_due(time.monotonic())
            if not batch:
                continue
            if log is not None:
                await log.xadd([(stream.key, payload) for stream, payload in batch])
            self.publish([(stream.subject, payload) for stream, payload in batch])


async def _emit(
    nats_port: int, redis_port: int | None, tokens: int, tokens_per_s: float, ready: EventType
) -> None:
    loop = asyncio.get_running_loop()
    _, emitter = await loop.create_connection(
        lambda: _Emitter(tokens, 1 / tokens_per_s), HOST, nats_port
    )
    log = None
    if redis_port is not None:
        _, log = await loop.create_connection(RedisLink, HOST, redis_port)
    emitter.subscribe(START)
    await emitter.flush()
    ready.set()
    await emitter.emit(log)


def _emitter(
    nats_port: int, redis_port: int | None, tokens: int, tokens_per_s: float, ready: EventType
) -> None:
    prepare_process()
    asyncio.run(_emit(nats_port, redis_port, tokens, tokens_per_s, ready))


class _Relay(NatsLink):
    """Stands for the streamer: asks the emitter for each response's tokens and writes
    them as they come from NATS."""

    def __init__(self) -> None:
        super().__init__(self._deliver)
        self._responses: dict[bytes, Response] = {}
        self._numbers = itertools.count()

    def open(self, response: Response) -> bytes:
        number = b"%d" % next(self._numbers)
        self._responses[TOKENS + number] = response
        self.publish([(START, number)])
        return TOKENS + number

    def close(self, subject: bytes) -> None:
        self._responses.pop(subject, None)

    def _deliver(self, subject: bytes, payload: bytes) -> None:
        response = self._responses.get(subject)
        if response is None:
            return
        seq, ts = payload.split(b" ")
        if response.token(int(seq), int(ts)):
            del self._responses[subject]


class _Relayed(Response):
    """One response of the relay: its tokens are asked for once its request has arrived."""

    def __init__(self, tokens: int, relay: _Relay) -> None:
        super().__init__(tokens)
        self._relay = relay
        self._subject = b""

    def opened(self) -> None:
        self._subject = self._relay.open(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.close(self._subject)


async def _relay_tokens(port: int, nats_port: int, tokens: int, ready: EventType) -> None:
    loop = asyncio.get_running_loop()
    _, relay = await loop.create_connection(_Relay, HOST, nats_port)
    relay.subscribe(TOKENS + b"*")
    await relay.flush()
    server = await loop.create_server(lambda: _Relayed(tokens, relay), HOST, port, backlog=4096)
    ready.set()
    async with server:
        await server.serve_forever()


def _relay(port: int, nats_port: int, tokens: int, ready: EventType) -> None:
    prepare_process()
    asyncio.run(_relay_tokens(port, nats_port, tokens, ready))


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


def _spawn(
    context: SpawnContext, stack: ExitStack, target: Callable[..., None], *args: Any
) -> SpawnProcess:
    """``target(*args, ready)`` in a process of its own, stopped with the stack, once ready."""
    ready = context.Event()
    process = context.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    stack.callback(process.terminate)
    if not ready.wait(30):
        raise RuntimeError(f"{target.__name__} did not start within 30 s")
    return process


def _start(
    args: argparse.Namespace, through: str, port: int, context: SpawnContext, stack: ExitStack
) -> tuple[dict[str, int], Server | None]:
    """The processes a token goes through, by name (their pids), and Redis if it is logged."""
    if through == "none":
        direct = _spawn(context, stack, _server, port, args.tokens, args.tokens_per_s)
        return {"server": direct.pid or 0}, None
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-floor-")))
    nats = nats_server(workdir=workdir / "nats")
    log = redis_server(workdir=workdir / "redis", appendonly=False) if "log" in through else None
    servers = [server for server in (nats, log) if server is not None]
    for server in servers:
        stack.callback(server.stop)
        server.start()
    relay = _spawn(context, stack, _relay, port, nats.port, args.tokens)
    emitter = _spawn(
        context,
        stack,
        _emitter,
        nats.port,
        log.port if log else None,
        args.tokens,
        args.tokens_per_s,
    )
    pids = {"emitter": emitter.pid or 0, "relay": relay.pid or 0}
    pids.update({s.name: s.process.pid for s in servers if s.process is not None})
    return pids, log


def _logged(server: Server) -> int:
    """The entries of every stream the emitter logged, read back from Redis."""
    with redis.Redis(port=server.port) as client:
        keys = list(client.scan_iter(match=LOG_KEY + b"*", count=1000))
        return sum(int(client.xlen(key)) for key in keys)


def run(args: argparse.Namespace, gateway: str | None) -> dict[str, Any]:
    through = args.through
    context = multiprocessing.get_context("spawn")
    port = free_port()
    url = f"http://{HOST}:{port}/floor"
    shares = [
        args.streams // args.workers + (i < args.streams % args.workers)
        for i in range(args.workers)
    ]
    with ExitStack() as stack:
        pids, log = _start(args, through, port, context, stack)
        steady = latency.SteadyState(args.ramp_s, 0.0, args.tokens / args.tokens_per_s)
        runs = [
            (url, n, args.ramp_s, args.tokens_per_s, steady.begin_of(k, args), steady.window)
            for k, n in enumerate(shares)
        ]
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        with context.Pool(args.workers) as pool:
            samples = pool.starmap(_client, runs)
        elapsed = steady.elapsed_s()
        cpu = {name: (cpu_s(pid) - before[name]) / elapsed for name, pid in pids.items()}
        logged = _logged(log) if log is not None else None
    total = latency.Sample()
    for sample in samples:
        total.merge(sample)
    cpu["clients"] = total.client_cpu_s / elapsed
    expected = args.streams * args.tokens
    result = {
        "mode": "floor",
        "through": through,
        "streams": args.streams,
        "tokens_per_s_each": args.tokens_per_s,
        "tokens_each": args.tokens,
        "delivery_ms": summary(total.delivery_ms),
        "schedule_lag_ms": summary(total.lag_ms),
        **steady.figures(total),
        "tokens_delivered": total.tokens,
        "delivered_tokens_per_s": total.tokens / elapsed,
        "logged": logged,
        "cpu": cpu,
        "errors": dict(total.errors),
    }
    logged_line = [] if logged is None else [f"  entries logged in Redis {logged}/{expected}"]
    emit(
        f"floor: {args.streams} bare SSE responses x {args.tokens} frames at "
        f"{args.tokens_per_s:g}/s, {args.workers} client process(es), no sluice; "
        f"each frame {HOPS[through]}",
        [
            line("per-token delivery latency", total.delivery_ms),
            line("per-token lag behind the schedule", total.lag_ms),
            *steady.lines(total),
            f"  tokens delivered {total.tokens}/{expected} in {elapsed:.1f}s"
            f" = {result['delivered_tokens_per_s']:.0f} tokens/s; errors "
            f"{dict(total.errors) or 'none'}",
            *logged_line,
            f"  CPU: {format_shares(cpu)}",
        ],
        result,
        args.json,
    )
    return result
