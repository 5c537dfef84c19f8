"""Stream state in Redis: the token log (a Redis Stream) and the meta hash.

Log entries carry the same msgpack bytes as the live subject, with entry id
``0-<last seq>`` so a retried write is refused as a duplicate, and the terminal
entry at ``1-0`` so nothing can be appended after the end. Ending a stream is one
atomic script that only the first finaliser wins (runner, coordinator or cancel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypedDict, Unpack

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from redis.crc import key_slot

from libs.common import names
from libs.common.connections import RedisClient
from libs.common.direct_redis import Command, DirectRedis
from libs.common.settings import Settings
from libs.common.wire import Done, Failed, TokenBatch, TokensMessage, tokens_codec

log = logging.getLogger(__name__)

TERMINAL_ENTRY_ID = b"1-0"
READ_CHUNK = 512

_FINISH = """
if ARGV[4] ~= '' and (redis.call('HGET', KEYS[1], 'epoch') or '0') ~= ARGV[4] then return 0 end
if redis.call('HSETNX', KEYS[1], 'finished_ns', ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '1-0', 'm', ARGV[2])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


_APPEND = """
local stale = {}
for i = 1, #KEYS / 2 do
  if (redis.call('HGET', KEYS[2 * i], 'epoch') or '0') ~= ARGV[3 * i + 1] then
    stale[#stale + 1] = i
  else
    local added = redis.pcall('XADD', KEYS[2 * i - 1], 'MAXLEN', '~', ARGV[1], ARGV[3 * i - 1], 'm', ARGV[3 * i])
    if type(added) == 'table' and added.err and not string.find(added.err, 'equal or smaller', 1, true) then
      return added
    end
  end
end
return stale
"""

_START = """
if redis.call('HEXISTS', KEYS[1], 'finished_ns') == 1 then return nil end
if (redis.call('HGET', KEYS[1], 'epoch') or '0') ~= ARGV[3] then return nil end
local owner = redis.call('HGET', KEYS[1], 'runner_id')
if ARGV[3] == '0' and owner and owner ~= '' and owner ~= ARGV[1] then return nil end
local logged = 0
local last = redis.call('XREVRANGE', KEYS[2], '(1-0', '-', 'COUNT', 1)[1]
if last then logged = tonumber(string.match(last[1], '%d+$')) end
if ARGV[3] ~= '0' then
  local handoffs = redis.call('HGET', KEYS[1], 'handoffs')
  redis.call('HSET', KEYS[1], 'handoffs', handoffs and (handoffs .. ',' .. logged) or tostring(logged))
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'recomputed', logged) end
end
redis.call('HSET', KEYS[1], 'status', 'running', 'runner_id', ARGV[1])
redis.call('HSETNX', KEYS[1], 'started_ns', ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'cancel_reason', 'cancel_requested_ns', 'handoffs', 'recomputed', 'started_ns')
return {state[1], state[2], logged, state[3], state[4], state[5]}
"""

_MOVE = """
if redis.call('HEXISTS', KEYS[1], 'finished_ns') == 1 then return nil end
local owner = redis.call('HGET', KEYS[1], 'runner_id') or ''
if owner ~= '' and owner ~= ARGV[1] then return nil end
redis.call('HSET', KEYS[1], 'runner_id', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'epoch', 1)
"""

_ADMIT = """
local added = redis.call('SADD', KEYS[1], ARGV[1])
local active = redis.call('SCARD', KEYS[1])
if active > tonumber(ARGV[2]) then
  if added == 1 then
    redis.call('SREM', KEYS[1], ARGV[1])
    active = active - 1
  end
  return {0, active, false}
end
local previous = false
if KEYS[2] then previous = redis.call('SET', KEYS[2], ARGV[1], 'GET', 'EX', ARGV[3]) end
return {1, active, previous}
"""


class LogNotReplicated(TimeoutError):
    """Fewer replicas than ``SLUICE_LOG_SYNC_REPLICAS`` acknowledged a commit in time."""


class StreamMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The ``<ns>:meta:{<id>}`` hash; every field optional so partial writes stay valid."""

    status: str = "queued"
    tenant: str = ""
    model: str = ""
    conversation_id: str = ""
    runner_id: str = ""
    tokens: int = 0
    finish_reason: str = ""
    created_ns: int = 0
    started_ns: int = 0
    first_token_ns: int = 0
    finished_ns: int = 0
    ttft_ms: float | None = None
    duration_ms: float | None = None
    abandon_after_s: float | None = None
    cancel_requested_ns: int = 0
    cancel_reason: str = ""
    tokens_after_cancel: int | None = None
    cancel_to_stop_ms: float | None = None
    error_type: str = ""
    error_message: str = ""
    tokens_unread: int | None = None
    traceparent: str = ""
    epoch: int = 0
    submit: str = ""


class MetaFields(TypedDict, total=False):
    """A partial write of :class:`StreamMeta`: the same names, checked by mypy and at run time.

    ``None`` leaves a field as it is.
    """

    status: str
    tenant: str
    model: str
    conversation_id: str
    runner_id: str
    tokens: int
    finish_reason: str
    created_ns: int
    started_ns: int
    first_token_ns: int
    finished_ns: int
    ttft_ms: float | None
    duration_ms: float | None
    abandon_after_s: float | None
    cancel_requested_ns: int
    cancel_reason: str
    tokens_after_cancel: int | None
    cancel_to_stop_ms: float | None
    error_type: str
    error_message: str
    tokens_unread: int | None
    traceparent: str
    epoch: int
    submit: str


_META_FIELDS = frozenset(StreamMeta.__struct_fields__)


class Admission(msgspec.Struct, frozen=True):
    """What admitting did: the tenant's active streams after it; the conversation's last."""

    admitted: bool
    active: int
    previous: str | None = None


class Claim(msgspec.Struct, frozen=True):
    """What a runner learns when it starts an attempt.

    ``logged`` tokens are in the log already (the attempt goes on at ``logged + 1``);
    ``handoffs`` is the logged count at each continuation so far, ``recomputed`` the
    tokens continuations generated again, ``started_ns`` when the first attempt
    started; a cancel recorded meanwhile is passed on.
    """

    cancel_reason: str = ""
    cancel_requested_ns: int = 0
    logged: int = 0
    handoffs: list[int] = []
    recomputed: int = 0
    started_ns: int = 0


class Feedback(msgspec.Struct, frozen=True):
    """One entry of the ``sluice:feedback`` Redis stream: a client's rating of a stream."""

    tenant: str
    stream_id: str
    rating: int
    comment: str
    ts: int


def _as_fields(values: dict[str, Any]) -> dict[Any, Any]:
    return {key: str(value) for key, value in values.items() if value is not None}


def _meta_fields(fields: MetaFields) -> dict[Any, Any]:
    """The hash fields to write; a name that :class:`StreamMeta` lacks is a TypeError."""
    unknown = fields.keys() - _META_FIELDS
    if unknown:
        raise TypeError(f"not fields of the stream meta: {', '.join(sorted(unknown))}")
    return _as_fields(dict(fields))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_payload(fields: dict[Any, Any] | None) -> bytes:
    return bytes((fields or {})[b"m"])


def _raw_entry_payload(fields: list[bytes]) -> bytes:
    """The payload of an entry as Redis sends it: ``[b"m", payload]``."""
    return _entry_payload(dict(zip(fields[::2], fields[1::2], strict=True)))


def _flat(fields: dict[Any, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def stream_store(redis: RedisClient, settings: Settings) -> StreamStore:
    """The store as every service configures it: its hot paths on a direct connection
    where the server allows one (one server, plain TCP, no replicas to wait for)."""
    direct = None
    if not settings.redis_cluster and not settings.log_sync_replicas:
        direct = DirectRedis.from_url(settings.redis_url)
    return StreamStore(
        redis,
        settings.log_ttl_s,
        settings.log_maxlen,
        sync_replicas=settings.log_sync_replicas,
        sync_timeout_ms=settings.log_sync_timeout_ms,
        direct=direct,
    )


class StreamStore:
    """Reads and writes one stream's log and meta; shared by every service.

    With ``direct`` (:mod:`libs.common.direct_redis`), opening a stream, reading its
    meta and log, committing tokens and ending it go down that connection, and the
    rest through ``redis``, the same server.
    """

    def __init__(
        self,
        redis: RedisClient,
        ttl_s: int,
        maxlen: int,
        sync_replicas: int = 0,
        sync_timeout_ms: int = 1000,
        direct: DirectRedis | None = None,
    ) -> None:
        self.redis = redis
        self.direct = direct
        self.cluster = isinstance(redis, aioredis.RedisCluster)
        self.sync_replicas = sync_replicas
        self.sync_timeout_ms = sync_timeout_ms
        self.ttl_s = ttl_s
        self.maxlen = maxlen
        self.read_chunk = READ_CHUNK
        self._append = redis.register_script(_APPEND)
        self._finish = redis.register_script(_FINISH)
        self._start = redis.register_script(_START)
        self._admit = redis.register_script(_ADMIT)
        self._move = redis.register_script(_MOVE)

    async def admit(self, stream_id: str, meta: StreamMeta, limit: int) -> Admission:
        """Take a place among the tenant's ``limit`` active streams and make the stream
        its conversation's current one; the meta is written first.

        The count and the add are one script on the tenant's slot, so a burst cannot
        slip past the limit; the meta lives in the stream's own slot (a Redis Cluster
        runs no script across slots), so it is written before and deleted on a refusal:
        a refusal leaves nothing, and a crash in between leaves an expiring meta that
        no client ever learnt of, never a place kept for nothing.
        """
        meta_key = names.meta_key(stream_id)
        keys = [names.tenant_active_key(meta.tenant)]
        if meta.conversation_id:
            keys.append(names.conversation_key(meta.tenant, meta.conversation_id))
        args: list[str | int] = [stream_id, limit, self.ttl_s]
        fields = _as_fields(msgspec.to_builtins(meta))
        write_meta: list[Command] = [
            ("HSET", meta_key, *_flat(fields)),
            ("EXPIRE", meta_key, self.ttl_s * 24),
        ]
        if self.cluster:  # the tenant's keys live on another node: after the meta, not beside
            await self._in_order(*write_meta)
            admitted, active, previous = await self._admit(keys=keys, args=args)
        else:  # one connection runs them in order: still the meta first
            _, _, (admitted, active, previous) = await self._in_order(
                *write_meta, ("EVAL", _ADMIT, len(keys), *keys, *args)
            )
        if not admitted:
            await self.redis.delete(meta_key)
        return Admission(
            admitted=bool(admitted),
            active=int(active),
            previous=None if previous is None else _text(previous),
        )

    async def meta(self, stream_id: str) -> StreamMeta | None:
        if self.direct is not None:
            flat = await self.direct.call("HGETALL", names.meta_key(stream_id))
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
        else:
            raw = await self.redis.hgetall(names.meta_key(stream_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return msgspec.convert(fields, StreamMeta, strict=False)

    async def status(self, stream_id: str) -> str | None:
        """The stream's status alone; None if its meta is gone."""
        key = names.meta_key(stream_id)
        if self.direct is not None:
            raw = await self.direct.call("HGET", key, "status")
        else:
            raw = await self.redis.hget(key, "status")
        return None if raw is None else _text(raw)

    async def update(self, stream_id: str, **fields: Unpack[MetaFields]) -> None:
        await self.redis.hset(names.meta_key(stream_id), mapping=_meta_fields(fields))

    async def append(self, entries: list[tuple[str, TokenBatch, bytes, int]]) -> set[str]:
        """Log batches of any number of streams in one command; returns the fenced streams.

        Each batch is written only if its attempt's epoch is still the stream's (checked
        in the same script, so a runner that lost the stream can never slip a write
        past a continuation); the streams whose batches were refused are returned.
        One script call instead of a pipeline of XADDs: redis-py spends ~20 µs of
        client CPU on each pipelined command and ~2 µs on each script argument (on a
        Redis Cluster, one call per slot, all at once, as a script stays in one slot). A
        replayed batch (a retry after a lost reply) is refused by Redis as a
        duplicate id and skipped, which is exactly the idempotence a retry needs.
        """
        groups: dict[int, tuple[list[str], list[bytes | int], list[str]]] = {}
        for stream_id, batch, payload, epoch in entries:
            log_key = names.log_key(stream_id)  # the meta key shares its hash tag, so its slot
            keys, args, ids = groups.setdefault(self._slot(log_key), ([], [self.maxlen], []))
            keys += (log_key, names.meta_key(stream_id))
            args += (b"0-%d" % batch.last, payload, epoch)
            ids.append(stream_id)
        stale = await asyncio.gather(
            *(self._durably(self._append, keys, args) for keys, args, _ in groups.values())
        )
        return {
            ids[int(index) - 1]
            for (_, _, ids), refused in zip(groups.values(), stale, strict=True)
            for index in refused or ()
        }

    async def _durably(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a log-writing script; with ``sync_replicas``, not done until that many
        replicas hold its writes, so a failover's promoted replica has every entry
        anyone was shown.

        ``WAIT`` counts the replicas that acknowledged the writes of the connection it
        is sent on, so the script and the ``WAIT`` go down one connection, pipelined.
        """
        if not self.sync_replicas:
            if self.direct is not None:
                return await self.direct.call("EVAL", script.script, len(keys), *keys, *args)
            return await script(keys=keys, args=args)
        if isinstance(self.redis, aioredis.RedisCluster):
            await self.redis.initialize()
            target: dict[str, Any] = {"target_nodes": self.redis.get_node_from_key(keys[0])}
            pipe: Any = self.redis.pipeline()
        else:
            target, pipe = {}, self.redis.pipeline(transaction=False)
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args, **target)
        pipe.execute_command("WAIT", self.sync_replicas, self.sync_timeout_ms, **target)
        try:
            result, acknowledged = await pipe.execute()
        except (redis.exceptions.ConnectionError, OSError, RuntimeError, AttributeError) as lost:
            await self._relearn_slots()
            raise redis.exceptions.ConnectionError(f"log commit lost its node: {lost}") from lost
        if acknowledged < self.sync_replicas:
            raise LogNotReplicated(
                f"{acknowledged} of {self.sync_replicas} replicas within {self.sync_timeout_ms} ms"
            )
        return result

    async def _relearn_slots(self) -> None:
        """After a node is lost, ask the cluster who serves each slot now.

        The pipeline above names its node itself, so redis-py's own refresh after a
        failed command does not run for it; a retry would go to the dead master again.
        A connection to a dead node can surface from redis-py's cluster pipeline as a
        ``RuntimeError`` (closed transport) or ``AttributeError`` (no writer), so the
        caller maps those to ``ConnectionError`` here, at this one boundary.
        """
        if not isinstance(self.redis, aioredis.RedisCluster):
            return
        try:
            await self.redis.nodes_manager.initialize()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("slot map refresh failed: %r", exc)

    def _slot(self, key: str) -> int:
        """The key's Redis Cluster slot; one server takes any keys in one script."""
        return key_slot(key.encode()) if self.cluster else 0

    async def logged_tokens(self, stream_id: str) -> int:
        """How many tokens the log holds: the id of its last token entry."""
        entries = await self.redis.xrevrange(names.log_key(stream_id), max="(1-0", count=1)
        if not entries:
            return 0
        return int(_text(entries[0][0] or b"0-0").split("-")[1])

    async def mark_running(
        self, stream_id: str, runner_id: str, epoch: int = 0, regenerates: bool = False
    ) -> Claim | None:
        """Start attempt ``epoch`` unless the stream ended, moved on, or another runner has it.

        None means: do not generate — the stream ended before it could start (cancelled
        while placed), it was moved to a later attempt, or a start that arrived late
        (the coordinator gave up on this runner and placed the stream elsewhere) lost
        to the runner that started first. A continuation (``epoch`` > 0) records where
        it took over and, if it ``regenerates`` the logged tokens, counts them.
        """
        keys = [names.meta_key(stream_id), names.log_key(stream_id)]
        args: list[Any] = [runner_id, time.time_ns(), epoch, int(regenerates)]
        if self.direct is not None:
            result = await self.direct.call("EVAL", _START, len(keys), *keys, *args)
        else:
            result = await self._start(keys=keys, args=args)
        if result is None:
            return None
        reason, requested, logged, handoffs, recomputed, started = result
        return Claim(
            cancel_reason=_text(reason or b""),
            cancel_requested_ns=int(requested or 0),
            logged=int(logged),
            handoffs=[int(n) for n in _text(handoffs or b"").split(",") if n],
            recomputed=int(recomputed or 0),
            started_ns=int(started or 0),
        )

    async def move(self, stream_id: str, from_runner: str, to_runner: str) -> int | None:
        """Give the stream to ``to_runner`` as a new attempt; its epoch, or None if it
        ended or someone already moved it away from ``from_runner``.

        Raising the epoch is the fence: from here on the log refuses every write of the
        attempts before, in the same script that would append it.
        """
        epoch = await self._move(keys=[names.meta_key(stream_id)], args=[from_runner, to_runner])
        return None if epoch is None else int(epoch)

    async def finish(
        self,
        stream_id: str,
        terminal: Done | Failed,
        payload: bytes,
        attempt: int | None = None,
        known_tenant: str | None = None,
        **fields: Unpack[MetaFields],
    ) -> bool:
        """End the stream once: log the terminal entry, set meta, start the TTL clock.

        Returns False when another finaliser got there first (the stream keeps its end),
        or when ``attempt`` (an epoch) is given and the stream has moved to a later one.
        The tenant's place is given back first, in its own slot: a crash in between can
        let the tenant run one stream over its limit for a while, never keep a place
        forever. A caller that knows the stream's tenant saves reading it; on one
        server, without replicas to wait for, the two go in one round trip, in order.
        """
        meta_key = names.meta_key(stream_id)
        tenant = known_tenant
        if tenant is None:
            known = await self.redis.hget(meta_key, "tenant")
            tenant = None if known is None else _text(known)
        keys = [meta_key, names.log_key(stream_id)]
        pairs = _flat(_meta_fields(fields))
        args: list[Any] = [
            time.time_ns(),
            payload,
            self.ttl_s,
            "" if attempt is None else attempt,
            *pairs,
        ]
        if tenant is None:
            return bool(await self._durably(self._finish, keys, args))
        release = names.tenant_active_key(tenant)
        if self.cluster or self.sync_replicas:
            await self.redis.srem(release, stream_id)
            return bool(await self._durably(self._finish, keys, args))
        _, won = await self._in_order(
            ("SREM", release, stream_id), ("EVAL", _FINISH, len(keys), *keys, *args)
        )
        return bool(won)

    async def _in_order(self, *commands: Command) -> list[Any]:
        """Commands of one node in one round trip, run in order: down the direct
        connection, else a redis-py pipeline without MULTI. Replies are raw either way
        (only ``HSET``, ``EXPIRE``, ``SREM`` and scripts go here)."""
        if self.direct is not None:
            return await self.direct.execute(*commands)
        pipe: Any = (
            self.redis.pipeline() if self.cluster else self.redis.pipeline(transaction=False)
        )
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())

    async def read(
        self, stream_id: str, after_seq: int, count: int = READ_CHUNK
    ) -> list[TokensMessage]:
        """Log entries after token ``after_seq``, in order, at most ``count``."""
        key, start = names.log_key(stream_id), f"(0-{after_seq}"
        if self.direct is not None:
            raw = await self.direct.call("XRANGE", key, start, "+", "COUNT", count)
            return [tokens_codec.decode(_raw_entry_payload(fields)) for _, fields in raw]
        entries = await self.redis.xrange(key, min=start, max="+", count=count)
        return [tokens_codec.decode(_entry_payload(fields)) for _, fields in entries or ()]

    async def logged_batches(self, stream_id: str) -> list[TokenBatch]:
        """Every logged batch, in order: what a continuation goes on from."""
        batches: list[TokenBatch] = []
        after = 0
        while True:
            messages = await self.read(stream_id, after)
            for message in messages:
                if isinstance(message, TokenBatch):
                    batches.append(message)
                    after = message.last
            if len(messages) < self.read_chunk:
                return batches

    async def log_exists(self, stream_id: str) -> bool:
        return bool(await self.redis.exists(names.log_key(stream_id)))

    async def record_feedback(self, feedback: Feedback, maxlen: int) -> None:
        """Append to the one feedback stream, trimmed (roughly, so cheaply) to ``maxlen``."""
        fields = _as_fields(msgspec.to_builtins(feedback))
        await self.redis.xadd(names.FEEDBACK_STREAM, fields, maxlen=maxlen, approximate=True)
