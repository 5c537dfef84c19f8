"""``sluice bench primitives``: what each building block of a stream open costs on this machine.

Opening a stream takes HTTP requests, NATS round trips and subscriptions, and Redis
commands, across six processes. This mode runs each of those building blocks alone,
with no sluice code around it, and reports the CPU each process spent per operation,
so that what sluice's own code adds to an open can be told from what its blocks cost.

Each party is a process of its own, started as the services start (uvloop, see
:func:`prepare_process`), against a nats-server and a redis-server of the mode's own;
NATS and Redis are connected to as the services connect (:mod:`libs.common.connections`).
A process's CPU is its user plus system time from the moment every party is set up
until the last operation is done. Operations go about a millisecond apart, as a
stream's steps and tokens do: back to back (``--back-to-back``) syscalls and wakeups
batch up and flatter every figure. The first row is what that pacing alone costs the
client, to read the client column against.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web
from nats.aio.msg import Msg

from libs.common import sse
from libs.common.connections import connect_nats, connect_redis
from libs.common.direct_nats import DirectNATS
from libs.common.process import prepare_process
from libs.common.settings import Settings
from libs.tools.bench.reader import follow
from libs.tools.bench.stats import emit
from libs.tools.bench.usage import cpu_ns
from libs.tools.servers import Server, free_port, nats_server, redis_server

NEEDS_SUITE = False
GAP_S = 0.001
BATCH = 32
START_S = 60.0
SUBJECT = "bench.primitives"
TOKEN = b"t" * 40
REPLY = b'{"type":"accepted","runner":"runner-1","queued":0,"position":0,"stream":"s-00000001"}'
REQUEST = msgspec.json.encode(
    {
        "model": "sim",
        "prompt": "Explain, in a few short paragraphs, why the sky looks blue at noon "
        "and red at sunset, and what that has to do with the size of the molecules "
        "in the air. Keep it plain, and end with one sentence a child could follow.",
        "max_tokens": 250,
        "sim": {"tokens": 250, "tokens_per_s": 50.0, "ttft_ms": 50},
    }
)
META: dict[Any, Any] = {f"field-{i}": "0123456789" for i in range(8)}  # as a stream's meta
TTL_S = 3600
ADMIT = """
local n = redis.call('SCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return {0, n} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, n + 1}
"""


class _Create(msgspec.Struct):
    model: str
    prompt: str
    max_tokens: int
    sim: dict[str, float]


class _Created(msgspec.Struct):
    id: str
    model: str
    status: str
    max_tokens: int
    created_ns: int
    events_url: str
    socket_url: str
    status_url: str
    cancel_url: str


@dataclass(frozen=True)
class Plan:
    """What every party of a row is told: ``ops`` operations in calls of ``batch``."""

    ops: int
    gap_s: float
    batch: int = 1
    http_url: str = ""
    nats_url: str = ""
    redis_url: str = ""


@dataclass(frozen=True)
class Gate:
    """How a party says it is set up, then waits until every party of its row is."""

    ready: EventType
    go: EventType

    async def open(self) -> None:
        self.ready.set()
        await asyncio.to_thread(self.go.wait)


Role = Callable[[Plan, Gate], Awaitable[object]]
"""A party: sets up, opens its gate, does its share; what it answers is kept alive
(the server or connection it keeps serving through) until the row is over."""


async def _drive(plan: Plan, op: Callable[[int], Awaitable[object]]) -> None:
    for first in range(0, plan.ops, plan.batch):
        await op(first)
        if plan.gap_s:
            await asyncio.sleep(plan.gap_s)


async def _nothing(_: int) -> None:
    return None


async def _pace(plan: Plan, gate: Gate) -> None:
    await gate.open()
    await _drive(plan, _nothing)


async def _create(request: web.Request) -> web.Response:
    body = msgspec.json.decode(await request.read(), type=_Create)
    base = f"http://{request.host}/v1/streams/s-00000001"
    created = _Created(
        "s-00000001",
        body.model,
        "queued",
        body.max_tokens,
        time.time_ns(),
        f"{base}/events",
        f"{base}/socket".replace("http", "ws", 1),
        base,
        f"{base}/cancel",
    )
    return web.Response(
        body=msgspec.json.encode(created), status=201, content_type="application/json"
    )


async def _events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    await response.write(sse.token_frame(1, [" token"], time.time_ns()))
    await response.write_eof()
    return response


async def _http_server(plan: Plan, gate: Gate) -> object:
    app = web.Application()
    app.router.add_post("/v1/streams", _create)
    app.router.add_get("/v1/streams/{id}/events", _events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    url = urlsplit(plan.http_url)
    await web.TCPSite(runner, url.hostname, url.port).start()
    await gate.open()
    return runner


async def _http_post(plan: Plan, gate: Gate, keepalive: bool) -> object:
    connector = aiohttp.TCPConnector(force_close=not keepalive)
    session = aiohttp.ClientSession(connector=connector)
    url, headers = f"{plan.http_url}/v1/streams", {"Content-Type": "application/json"}

    async def post(_: int) -> None:
        async with session.post(url, data=REQUEST, headers=headers) as response:
            msgspec.json.decode(await response.read(), type=_Created)

    await gate.open()
    await _drive(plan, post)
    return session


def _ignore(*_: Any) -> None:
    return None


async def _sse_get(plan: Plan, gate: Gate) -> None:
    url = f"{plan.http_url}/v1/streams/s-00000001/events"
    await gate.open()
    await _drive(plan, lambda _: follow(url, _ignore))


async def _nats(plan: Plan, name: str) -> DirectNATS:
    return await connect_nats(Settings(nats_url=plan.nats_url), name)


async def _responder(plan: Plan, gate: Gate) -> object:
    nc = await _nats(plan, "responder")

    async def answer(message: Msg) -> None:
        await message.respond(REPLY)

    await nc.subscribe(SUBJECT, cb=answer)
    await nc.flush()
    await gate.open()
    return nc


async def _requester(plan: Plan, gate: Gate) -> object:
    nc = await _nats(plan, "requester")
    await gate.open()
    await _drive(plan, lambda _: nc.request(SUBJECT, REQUEST, timeout=10))
    return nc


async def _subscriber(plan: Plan, gate: Gate) -> object:
    """Takes the messages as the streamer takes tokens: a direct subscription."""
    nc = await _nats(plan, "subscriber")
    received, every = [0], asyncio.Event()

    def on_message(_subject: str, _data: bytes) -> None:
        received[0] += 1
        if received[0] == plan.ops:
            every.set()

    await nc.subscribe_direct(SUBJECT, on_message)
    await nc.flush()
    await gate.open()
    await every.wait()
    return nc


async def _publisher(plan: Plan, gate: Gate) -> object:
    nc = await _nats(plan, "publisher")

    async def publish(_: int) -> None:
        for _ in range(plan.batch):
            await nc.publish(SUBJECT, TOKEN)

    await gate.open()
    await _drive(plan, publish)
    return nc


async def _sub_unsub(plan: Plan, gate: Gate) -> object:
    """As the streamer's hub follows a stream: subscribe, flush (the subscription is
    in place once the server answers), and later unsubscribe."""
    nc = await _nats(plan, "subscriber")

    async def churn(index: int) -> None:
        subscription = await nc.subscribe_direct(f"{SUBJECT}.{index}", _ignore)
        await nc.flush()
        await subscription.unsubscribe()

    await gate.open()
    await _drive(plan, churn)
    await nc.flush()  # the server has read the last UNSUB
    return nc


async def _redis(plan: Plan, gate: Gate, commands: str) -> object:
    """The commands of an admission (see ``Store.admit``): the meta, its expiry, the script."""
    redis = connect_redis(Settings(redis_url=plan.redis_url))
    sha = await redis.script_load(ADMIT)

    def queue(target: Any, index: int) -> list[Awaitable[Any]]:
        key = f"bench:meta:{index}"
        return [
            target.hset(key, mapping=META),
            target.expire(key, TTL_S),
            target.evalsha(sha, 1, "bench:active", index, plan.ops, TTL_S),
        ]

    async def sequential(index: int) -> None:
        for command in queue(redis, index):
            await command

    async def pipelined(index: int) -> None:
        pipe = redis.pipeline(transaction=False)
        queue(pipe, index)
        await pipe.execute()

    ops: dict[str, Callable[[int], Awaitable[object]]] = {
        "hset": lambda index: redis.hset(f"bench:meta:{index}", mapping=META),
        "evalsha": lambda index: redis.evalsha(sha, 1, "bench:active", index, plan.ops, TTL_S),
        "sequential": sequential,
        "pipelined": pipelined,
    }
    await gate.open()
    await _drive(plan, ops[commands])
    return redis


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    client: Role
    peer: Role | None = None
    server: str | None = None  # "nats" or "redis": the server whose CPU counts
    batch: int = 1


ROWS = (
    Row("pacing", "pacing alone: a 1 ms sleep", _pace),
    Row("http_post", "HTTP POST, a connection each", partial(_http_post, keepalive=False), _http_server),
    Row("http_post_keepalive", "HTTP POST, keep-alive", partial(_http_post, keepalive=True), _http_server),
    Row("sse_get", "SSE GET: head, one frame, end", _sse_get, _http_server),
    Row("nats_request", "NATS request/reply", _requester, _responder, "nats"),
    Row("nats_publish", "NATS publish 40 B, one by one", _publisher, _subscriber, "nats"),
    Row("nats_publish_batched", f"NATS publish 40 B, {BATCH} at once", _publisher, _subscriber, "nats", BATCH),
    Row("nats_sub_unsub", "NATS SUB, flush, UNSUB", _sub_unsub, None, "nats"),
    Row("redis_hset", "Redis HSET of 8 fields", partial(_redis, commands="hset"), None, "redis"),
    Row("redis_evalsha", "Redis EVALSHA, small script", partial(_redis, commands="evalsha"), None, "redis"),
    Row("redis_sequential", "Redis HSET+EXPIRE+EVALSHA in turn", partial(_redis, commands="sequential"), None, "redis"),
    Row("redis_pipelined", "Redis the same 3 in one pipeline", partial(_redis, commands="pipelined"), None, "redis"),
)  # fmt: skip
COLUMNS = ("client", "peer", "server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ops", type=int, default=1500, help="operations per row (about 2 s each, paced)"
    )
    parser.add_argument("--back-to-back", action="store_true", help="no pause between operations")


def _party(role: Role, plan: Plan, gate: Gate, finished: EventType) -> None:
    prepare_process()
    asyncio.run(_play(role, plan, gate, finished))


async def _play(role: Role, plan: Plan, gate: Gate, finished: EventType) -> None:
    _kept = await role(plan, gate)
    finished.set()
    await asyncio.Event().wait()  # serve on, and stay to be measured, until terminated


def _measure(row: Row, plan: Plan, servers: dict[str, Server]) -> dict[str, float]:
    """Each party's and the server's CPU over the row, in µs per operation."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    roles = {"client": row.client, "peer": row.peer}
    parties: dict[str, tuple[BaseProcess, EventType, EventType]] = {}
    pids: dict[str, int] = {}
    try:
        for label, role in roles.items():
            if role is not None:
                gate, finished = Gate(context.Event(), go), context.Event()
                process = context.Process(target=_party, args=(role, plan, gate, finished))
                process.start()
                assert process.pid is not None
                parties[label], pids[label] = (process, gate.ready, finished), process.pid
        if row.server is not None:
            server = servers[row.server].process
            assert server is not None
            pids["server"] = server.pid
        for label, (_, ready, _) in parties.items():
            if not ready.wait(START_S):
                raise RuntimeError(f"{row.name}: the {label} was not ready in {START_S:g}s")
        before = {label: cpu_ns(pid) for label, pid in pids.items()}
        go.set()
        for label, (_, _, finished) in parties.items():
            if not finished.wait(START_S + plan.ops * 0.01):
                raise RuntimeError(f"{row.name}: the {label} did not finish")
        return {
            label: (cpu_ns(pid) - before[label]) / plan.ops / 1e3 for label, pid in pids.items()
        }
    finally:
        for started, _, _ in parties.values():
            started.terminate()
            started.join()


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"  {'operation':<36}" + "".join(f"{c:>9}" for c in (*COLUMNS, "total"))]
    for row in rows:
        cells = [row["us_per_op"].get(column) for column in COLUMNS] + [row["total_us"]]
        figures = "".join("        -" if v is None else f"{v:9.1f}" for v in cells)
        lines.append(f"  {row['name']:<36}{figures}")
    return lines


def run(args: argparse.Namespace, gateway: str | None) -> dict[str, Any]:
    gap_s = 0.0 if args.back_to_back else GAP_S
    rows = [row for row in ROWS if gap_s or row.key != "pacing"]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as workdir:
        servers = {
            "nats": nats_server(workdir=Path(workdir) / "nats"),
            "redis": redis_server(workdir=Path(workdir) / "redis", appendonly=False),
        }
        try:
            for server in servers.values():
                server.start()
            urls = {"nats_url": servers["nats"].url, "redis_url": f"{servers['redis'].url}/0"}
            for row in rows:
                ops = math.ceil(args.ops / row.batch) * row.batch
                http_url = f"http://127.0.0.1:{free_port()}"
                plan = Plan(ops, gap_s, row.batch, http_url, **urls)
                us = _measure(row, plan, servers)
                total = sum(us.values())
                results.append(
                    {
                        "key": row.key,
                        "name": row.name,
                        "ops": ops,
                        "us_per_op": us,
                        "total_us": total,
                    }
                )
        finally:
            for server in servers.values():
                server.stop()
    pace = "back to back" if args.back_to_back else f"{GAP_S * 1e3:g} ms apart"
    result = {"mode": "primitives", "ops": args.ops, "gap_ms": gap_s * 1e3, "rows": results}
    emit(
        f"primitives: µs of CPU per operation by process, {args.ops} of each, {pace}",
        [
            *_table(results),
            "  client: the process doing the operations"
            + (" (its figure includes the first row's pacing);" if gap_s else ";"),
            "  peer: the one answering (aiohttp server, NATS responder or subscriber);",
            "  server: nats-server or redis-server",
        ],
        result,
        args.json,
    )
    return result
