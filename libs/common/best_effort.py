"""NATS operations whose failure must not stop the caller, and is logged rather than raised.

A failed unsubscribe or a lost heartbeat or lease must not break the cleanup or the
loop around it, but must not vanish either: on a connection that is closing (shutdown)
the failure is expected and logged at debug, anything else is a warning.
"""

from __future__ import annotations

import logging

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

_CLOSING = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.BadSubscriptionError,
)


async def unsubscribe(subscription: Subscription, stream_id: str = "") -> None:
    """Drop a subscription; on a closing connection it is gone anyway."""
    try:
        await subscription.unsubscribe()
    except nats.errors.Error as exc:
        _log_failure(f"unsubscribe from {subscription.subject}", exc, stream_id)


async def publish(nc: NATS, subject: str, payload: bytes, stream_id: str = "") -> bool:
    """Publish once, without retrying; False if it failed."""
    try:
        await nc.publish(subject, payload)
    except nats.errors.Error as exc:
        _log_failure(f"publish to {subject}", exc, stream_id)
        return False
    return True


def _log_failure(what: str, exc: nats.errors.Error, stream_id: str) -> None:
    level = logging.DEBUG if isinstance(exc, _CLOSING) else logging.WARNING
    log.log(level, "%s failed: %r", what, exc, extra={"stream_id": stream_id})
