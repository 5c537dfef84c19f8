"""Moving answers off runners that stop (handoff) or die (failover), fenced by epochs.

A stream moves when a coordinator places it again: :meth:`StreamStore.move` raises
its epoch and names the new runner in one script, so of several coordinators that saw
the same runner die only one moves each stream, and from that instant the log refuses
every write of the attempt before. The old runner is then told (``Fence`` on the
stream's control subject) so that, if it is alive after all, it stops at once; the
new attempt goes on at the seq after the last logged token.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client as NATS

from libs.common import names
from libs.common.retry import retry_forever
from libs.common.store import StreamMeta, StreamStore
from libs.common.wire import Fence, Submit, control_codec, submit_json_decode


@dataclass(frozen=True, slots=True)
class Move:
    """A stream to place again: the runner that had it, and why (``handoff`` or ``lost``)."""

    from_runner: str
    cause: str


def held_by(meta: StreamMeta | None, runner_id: str) -> bool:
    """The stream has not ended and is still ``runner_id``'s (or was never started)."""
    return meta is not None and not meta.finished_ns and meta.runner_id in ("", runner_id)


def request_of(meta: StreamMeta) -> Submit | None:
    """The stream's request as admitted, which a continuation needs; None if not recorded."""
    return submit_json_decode(meta.submit) if meta.submit else None


async def begin_move(
    nc: NATS, store: StreamStore, stream_id: str, move: Move, to_runner: str
) -> int | None:
    """Hand the stream to ``to_runner`` as a new attempt and fence the old one; its epoch.

    None: the stream ended meanwhile, or another coordinator moved it first.
    """
    epoch = await retry_forever(
        lambda: store.move(stream_id, move.from_runner, to_runner), "move", stream_id
    )
    if epoch is not None:
        fence = control_codec.encode(Fence(epoch=epoch))
        await retry_forever(
            lambda: nc.publish(names.stream_subject(stream_id, "control"), fence),
            "publish",
            stream_id,
        )
    return epoch
