"""Stopping and ending streams, the same way from every place that can.

The request is written to the stream's meta before it is published, so a runner
that picks the stream up a moment later still sees it (no lost cancel in the gap
between placement and subscription).
"""

from __future__ import annotations

import time
from typing import Unpack

from nats.aio.client import Client as NATS

from libs.common import metrics, names
from libs.common.api import FINAL_STATUSES
from libs.common.retry import retry_forever
from libs.common.store import MetaFields, StreamStore
from libs.common.wire import (
    Cancel,
    Done,
    Failed,
    StatusChange,
    control_codec,
    lifecycle_codec,
    tokens_codec,
)

CANCEL_REASONS = frozenset({"cancelled", "superseded", "abandoned"})


async def request_cancel(nc: NATS, store: StreamStore, stream_id: str, reason: str) -> bool:
    """Ask whoever holds the stream to stop; False if it had already ended."""
    meta = await store.meta(stream_id)
    if meta is None or meta.status in FINAL_STATUSES:
        return False
    now = time.time_ns()
    await store.update(stream_id, cancel_requested_ns=now, cancel_reason=reason)
    message = Cancel(reason=reason, requested_ns=now)
    await nc.publish(names.stream_subject(stream_id, "control"), control_codec.encode(message))
    return True


async def end_stream(
    nc: NATS,
    store: StreamStore,
    stream_id: str,
    terminal: Done | Failed,
    attempt: int | None = None,
    known_tenant: str | None = None,
    **fields: Unpack[MetaFields],
) -> bool:
    """Write the stream's end once and announce it; False if it had already ended.

    A runner passes its ``attempt``'s epoch: an attempt fenced by a continuation
    cannot end the stream; and the stream's tenant, ``known_tenant``, which saves a read.
    """
    status = fields["status"] = status_of(terminal)
    if isinstance(terminal, Done):
        fields.setdefault("finish_reason", terminal.finish_reason)
    else:
        fields["finish_reason"] = "error"
        fields["error_type"] = terminal.type
        fields["error_message"] = terminal.message
    payload = tokens_codec.encode(terminal)
    won = False

    async def write() -> None:
        nonlocal won
        won = await store.finish(stream_id, terminal, payload, attempt, known_tenant, **fields)

    await retry_forever(write, "log finish", stream_id)
    if not won:
        return False
    lifecycle = lifecycle_codec.encode(StatusChange(status=status))
    await retry_forever(
        lambda: nc.publish(names.stream_subject(stream_id, "tokens"), payload), "publish", stream_id
    )
    await retry_forever(
        lambda: nc.publish(names.stream_subject(stream_id, "lifecycle"), lifecycle),
        "publish",
        stream_id,
    )
    reason = terminal.type if isinstance(terminal, Failed) else terminal.finish_reason
    metrics.streams_finished.add(1, {"status": status, "reason": reason})
    return True


def status_of(terminal: Done | Failed) -> str:
    """The stream's final status for its terminal message."""
    if isinstance(terminal, Failed):
        return "failed"
    return terminal.finish_reason if terminal.finish_reason in CANCEL_REASONS else "completed"
