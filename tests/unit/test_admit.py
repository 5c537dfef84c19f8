"""The coordinator's admission around the store's one script: its reservation in the
queue is taken before the script runs and given back when the script refuses."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis.exceptions
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from libs.common.settings import load_settings
from libs.common.store import Admission, StreamMeta, StreamStore
from libs.common.wire import (
    Accepted,
    Rejected,
    RunnerHeartbeat,
    Submit,
    SubmitReply,
    submit_reply_codec,
)
from services.coordinator.coordinator import Coordinator

SCRIPT_WAIT_S = 5.0


class Store:
    """Answers ``admit`` with ``outcome`` once ``release`` is set."""

    def __init__(self, outcome: Admission | Exception) -> None:
        self.outcome = outcome
        self.release = asyncio.Event()
        self.release.set()

    async def admit(self, stream_id: str, meta: StreamMeta, limit: int) -> Admission:
        await self.release.wait()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class Nats:
    async def publish(self, subject: str, payload: bytes) -> None:
        pass


class Reply:
    def __init__(self) -> None:
        self.answer: SubmitReply | None = None

    async def respond(self, data: bytes) -> None:
        self.answer = submit_reply_codec.decode(data)


def coordinator(store: Store, **overrides: Any) -> Coordinator:
    settings = load_settings({}, **overrides)
    return Coordinator(settings, cast(NATS, Nats()), cast(StreamStore, store))


def submit(stream_id: str) -> Submit:
    return Submit(
        id=stream_id, tenant="t", model="sim", messages=[], prompt="p", max_tokens=1, created_ns=1
    )


async def admit(coord: Coordinator, stream_id: str) -> SubmitReply | None:
    reply = Reply()
    await coord._admit(cast(Msg, reply), submit(stream_id))
    return reply.answer


async def refused_at_once(coord: Coordinator, stream_id: str) -> SubmitReply | None:
    """The answer to a submit past the queue bound, which never reaches the (held) script."""
    try:
        return await asyncio.wait_for(admit(coord, stream_id), SCRIPT_WAIT_S)
    except TimeoutError:
        pytest.fail("a submit past the queue bound was let through to the store's script")


async def test_a_tenant_refusal_gives_back_the_reservation() -> None:
    coord = coordinator(Store(Admission(admitted=False, active=2)), tenant_max_streams=2)
    answer = await admit(coord, "st_a")
    assert answer == Rejected(
        type="rate_limited", message="tenant has 2 active streams (limit 2)", retry_after_s=1
    )
    assert not coord.waiting


async def test_redis_unreachable_is_unavailable_and_gives_back_the_reservation() -> None:
    coord = coordinator(Store(redis.exceptions.ConnectionError("down")))
    answer = await admit(coord, "st_a")
    assert isinstance(answer, Rejected) and answer.type == "unavailable"
    assert answer.retry_after_s == 1
    assert not coord.waiting


async def test_a_burst_cannot_pass_the_queue_bound_while_the_script_runs() -> None:
    store = Store(Admission(admitted=True, active=1))
    store.release.clear()
    coord = coordinator(store, queue_max=1)
    first = asyncio.create_task(admit(coord, "st_a"))
    await asyncio.sleep(0)
    assert not coord.waiting["st_a"].ready, "reserved, never placed before its meta exists"
    second = await refused_at_once(coord, "st_b")
    assert isinstance(second, Rejected) and second.type == "overloaded"
    store.release.set()
    assert await first == Accepted(status="queued", position=1)
    assert coord.waiting["st_a"].ready


async def test_free_slots_take_streams_before_the_queue_bound_counts() -> None:
    store = Store(Admission(admitted=True, active=1))
    store.release.clear()
    coord = coordinator(store, queue_max=1)
    coord.registry.beat(
        RunnerHeartbeat(runner_id="r1", slots_total=2, slots_free=2, models=["sim"])
    )
    held = [asyncio.create_task(admit(coord, f"st_{i}")) for i in range(3)]
    await asyncio.sleep(0)
    assert set(coord.waiting) == {"st_0", "st_1", "st_2"}, "two free slots and one queued"
    fourth = await refused_at_once(coord, "st_3")
    assert isinstance(fourth, Rejected) and fourth.type == "overloaded"
    for task in held:
        task.cancel()
