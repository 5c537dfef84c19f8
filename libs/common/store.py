"""Stream state in Redis: the token log (a Redis Stream) and the meta hash.

Log entries carry the same msgpack bytes as the live subject, with entry id
``0-<last seq>`` so a retried write is refused as a duplicate, and the terminal
entry at ``1-0`` so nothing can be appended after the end. Ending a stream is one
atomic script that only the first finaliser wins (runner, coordinator or cancel).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from libs.common import names
from libs.common.wire import Done, Failed, TokenBatch, TokensMessage, tokens_codec

TERMINAL_ENTRY_ID = b"1-0"
READ_CHUNK = 512

_FINISH = """
if redis.call('HSETNX', KEYS[1], 'finished_ns', ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '1-0', 'm', ARGV[2])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if tenant then redis.call('SREM', string.format(ARGV[4], tenant), KEYS[3]) end
return 1
"""


_APPEND = """
for i = 1, #KEYS do
  local added = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], ARGV[2 * i], 'm', ARGV[2 * i + 1])
  if type(added) == 'table' and added.err and not string.find(added.err, 'equal or smaller', 1, true) then
    return added
  end
end
return #KEYS
"""

_START = """
if redis.call('HEXISTS', KEYS[1], 'finished_ns') == 1 then return nil end
local owner = redis.call('HGET', KEYS[1], 'runner_id')
if owner and owner ~= '' and owner ~= ARGV[1] then return nil end
redis.call('HSET', KEYS[1], 'status', 'running', 'runner_id', ARGV[1], 'started_ns', ARGV[2])
return redis.call('HMGET', KEYS[1], 'cancel_reason', 'cancel_requested_ns')
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
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[2], ARGV[3])
local previous = false
if KEYS[3] then previous = redis.call('SET', KEYS[3], ARGV[1], 'GET', 'EX', ARGV[4]) end
return {1, active, previous}
"""


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


class Admission(msgspec.Struct, frozen=True):
    """What admitting did: the tenant's active streams after it; the conversation's last."""

    admitted: bool
    active: int
    previous: str | None = None


class Feedback(msgspec.Struct, frozen=True):
    """One entry of the ``sluice:feedback`` Redis stream: a client's rating of a stream."""

    tenant: str
    stream_id: str
    rating: int
    comment: str
    ts: int


def _as_fields(values: dict[str, Any]) -> dict[Any, Any]:
    return {key: str(value) for key, value in values.items() if value is not None}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_payload(fields: dict[Any, Any] | None) -> bytes:
    return bytes((fields or {})[b"m"])


class StreamStore:
    """Reads and writes one stream's log and meta; shared by every service."""

    def __init__(self, redis: aioredis.Redis, ttl_s: int, maxlen: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.maxlen = maxlen
        self.read_chunk = READ_CHUNK
        self._append = redis.register_script(_APPEND)
        self._finish = redis.register_script(_FINISH)
        self._start = redis.register_script(_START)
        self._admit = redis.register_script(_ADMIT)

    async def admit(self, stream_id: str, meta: StreamMeta, limit: int) -> Admission:
        """Take a place among the tenant's ``limit`` active streams, write the meta and
        make the stream its conversation's current one, in one round trip.

        One script, so a burst cannot slip past the limit between the count and the
        add, and a refusal changes nothing: no place kept, no meta, no conversation.
        """
        keys = [names.tenant_active_key(meta.tenant), names.meta_key(stream_id)]
        if meta.conversation_id:
            keys.append(names.conversation_key(meta.tenant, meta.conversation_id))
        fields = _as_fields(msgspec.to_builtins(meta))
        pairs = [item for pair in fields.items() for item in pair]
        admitted, active, previous = await self._admit(
            keys=keys, args=[stream_id, limit, self.ttl_s * 24, self.ttl_s, *pairs]
        )
        return Admission(
            admitted=bool(admitted),
            active=int(active),
            previous=None if previous is None else _text(previous),
        )

    async def meta(self, stream_id: str) -> StreamMeta | None:
        raw = await self.redis.hgetall(names.meta_key(stream_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return msgspec.convert(fields, StreamMeta, strict=False)

    async def update(self, stream_id: str, **fields: Any) -> None:
        await self.redis.hset(names.meta_key(stream_id), mapping=_as_fields(fields))

    async def append(self, entries: list[tuple[str, TokenBatch, bytes]]) -> None:
        """Log batches of any number of streams in one command.

        One script call instead of a pipeline of XADDs: redis-py spends ~20 µs of
        client CPU on each pipelined command and ~2 µs on each script argument. A
        replayed batch (a retry after a lost reply) is refused by Redis as a
        duplicate id and skipped, which is exactly the idempotence a retry needs.
        """
        keys: list[str] = []
        args: list[bytes | int] = [self.maxlen]
        for stream_id, batch, payload in entries:
            keys.append(names.log_key(stream_id))
            args += (b"0-%d" % batch.last, payload)
        await self._append(keys=keys, args=args)

    async def logged_tokens(self, stream_id: str) -> int:
        """How many tokens the log holds: the id of its last token entry."""
        entries = await self.redis.xrevrange(names.log_key(stream_id), max="(1-0", count=1)
        if not entries:
            return 0
        return int(_text(entries[0][0] or b"0-0").split("-")[1])

    async def mark_running(self, stream_id: str, runner_id: str) -> tuple[str, int] | None:
        """Record the start unless the stream ended or another runner has it.

        Returns (cancel reason, ns) of a cancel recorded meanwhile. None means: do not
        generate — the stream ended before it could start (cancelled while placed), or a
        start that arrived late (the coordinator gave up on this runner and placed the
        stream elsewhere) lost to the runner that started first.
        """
        result = await self._start(
            keys=[names.meta_key(stream_id)], args=[runner_id, time.time_ns()]
        )
        if result is None:
            return None
        reason, requested = result
        return (reason or b"").decode(), int(requested or 0)

    async def finish(
        self, stream_id: str, terminal: Done | Failed, payload: bytes, **fields: Any
    ) -> bool:
        """End the stream once: log the terminal entry, set meta, start the TTL clock.

        Returns False when another finaliser got there first (the stream keeps its end).
        """
        now = time.time_ns()
        pairs = [item for pair in _as_fields(fields).items() for item in pair]
        won = await self._finish(
            keys=[names.meta_key(stream_id), names.log_key(stream_id), stream_id],
            args=[now, payload, self.ttl_s, names.TENANT_ACTIVE_TEMPLATE, *pairs],
        )
        return bool(won)

    async def read(
        self, stream_id: str, after_seq: int, count: int = READ_CHUNK
    ) -> list[TokensMessage]:
        """Log entries after token ``after_seq``, in order, at most ``count``."""
        entries = await self.redis.xrange(
            names.log_key(stream_id), min=f"(0-{after_seq}", max="+", count=count
        )
        return [tokens_codec.decode(_entry_payload(fields)) for _, fields in entries or ()]

    async def log_exists(self, stream_id: str) -> bool:
        return bool(await self.redis.exists(names.log_key(stream_id)))

    async def record_feedback(self, feedback: Feedback, maxlen: int) -> None:
        """Append to the one feedback stream, trimmed (roughly, so cheaply) to ``maxlen``."""
        fields = _as_fields(msgspec.to_builtins(feedback))
        await self.redis.xadd(names.FEEDBACK_STREAM, fields, maxlen=maxlen, approximate=True)
