"""Best-effort NATS calls never raise a NATS error, and never drop one silently."""

from __future__ import annotations

import logging
from typing import cast

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from libs.common import best_effort


class ClosedSubscription:
    subject = "sluice.stream.st_x.lifecycle"

    async def unsubscribe(self) -> None:
        raise nats.errors.ConnectionClosedError


class FullClient:
    async def publish(self, subject: str, payload: bytes) -> None:
        raise nats.errors.OutboundBufferLimitError


class BrokenClient:
    async def publish(self, subject: str, payload: bytes) -> None:
        raise KeyError("a bug, not an outage")


async def test_unsubscribe_on_a_closed_connection_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger=best_effort.__name__):
        await best_effort.unsubscribe(cast(Subscription, ClosedSubscription()), "st_x")
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG
    assert "unsubscribe from sluice.stream.st_x.lifecycle failed" in record.getMessage()


async def test_a_failed_publish_is_a_warning_and_false(caplog: pytest.LogCaptureFixture) -> None:
    client = cast(NATS, FullClient())
    assert not await best_effort.publish(client, "sluice.runner.heartbeat", b"beat")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "heartbeat" in record.getMessage()


async def test_an_error_that_is_not_from_nats_is_raised() -> None:
    with pytest.raises(KeyError):
        await best_effort.publish(cast(NATS, BrokenClient()), "sluice.runner.heartbeat", b"")
