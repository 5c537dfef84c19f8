"""A stream that starts between a reader's meta read and its subscription still shows
``running``: the reader reads the status once more when its subscription is in place."""

from __future__ import annotations

import asyncio
from typing import cast

from libs.common.store import StreamStore
from libs.common.wire import Done, StatusChange
from services.streamer.delivery import _started_meanwhile
from tests.unit.test_reader_numbering import TIMEOUT_S, Client, Log, reader


class StartedLog(Log):
    """A log whose stream's status reads ``running`` by now."""

    def __init__(self) -> None:
        super().__init__(0)
        self.status_reads = 0

    async def status(self, stream_id: str) -> str | None:
        self.status_reads += 1
        return "running"


async def statuses_written(also_heard: StatusChange | None) -> list[str]:
    log, client = StartedLog(), Client()
    read = reader(log, client, 0)
    await read.open(StatusChange(status="queued"))
    await _started_meanwhile(cast(StreamStore, log), read)
    if also_heard is not None:
        read.status(also_heard)  # the runner's own `running`, had it been heard too
    log.entries.append(Done(finish_reason="stop", tokens=0))
    read.offer(Done(finish_reason="stop", tokens=0))
    await asyncio.wait_for(read.serve(), TIMEOUT_S)
    assert log.status_reads == 1
    return [event["status"] for kind, event in client.events() if kind == "status"]


async def test_a_start_missed_before_the_subscription_is_shown() -> None:
    assert await statuses_written(None) == ["queued", "running"]


async def test_a_start_heard_as_well_is_shown_once() -> None:
    running = StatusChange(status="running", runner_id="runner-1")
    assert await statuses_written(running) == ["queued", "running"]
