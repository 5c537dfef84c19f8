from __future__ import annotations

import time
from dataclasses import dataclass
from unittest.mock import patch

from services.coordinator.fairness import FORGET_AFTER_S, TenantShares


@dataclass
class Entry:
    stream_id: str
    tenant: str


def queue(*tenants: str) -> list[Entry]:
    return [Entry(f"{tenant}{index}", tenant) for index, tenant in enumerate(tenants)]


def test_the_next_slot_goes_to_the_tenant_running_fewest_streams() -> None:
    shares = TenantShares()
    for index in range(10):
        shares.placed(f"run{index}", "a", "r1")
    order = [e.tenant for e in shares.order(queue("a", "a", "a", "b"), cap=None)]
    assert order[0] == "b" and order.count("a") == 3


def test_tenants_with_equal_shares_take_turns_oldest_first() -> None:
    order = [e.stream_id for e in TenantShares().order(queue("a", "a", "a", "b", "c"), None)]
    assert order == ["a0", "b3", "c4", "a1", "a2"]


def test_a_tenant_at_its_cap_waits_while_others_go() -> None:
    shares = TenantShares()
    shares.placed("x", "a", "r1")
    shares.placed("y", "a", "r1")
    order = [e.tenant for e in shares.order(queue("a", "a", "b", "b", "b"), cap=2)]
    assert order == ["b", "b"]


def test_an_ended_or_unplaced_stream_frees_its_tenants_share() -> None:
    shares = TenantShares()
    shares.placed("x", "a", "r1")
    shares.placed("x", "a", "r1")
    assert shares.running("a") == 1
    shares.ended("x")
    shares.ended("x")
    assert shares.running("a") == 0


def test_a_stream_its_runner_no_longer_lists_is_forgotten_after_a_while() -> None:
    shares = TenantShares()
    shares.placed("kept", "a", "r1")
    shares.placed("gone", "a", "r1")
    shares.placed("elsewhere", "a", "r2")
    shares.reconcile("r1", ["kept"])
    assert shares.running("a") == 3, "a stream just placed may not be listed yet"
    later = time.monotonic() + FORGET_AFTER_S + 1
    with patch("services.coordinator.fairness.time.monotonic", return_value=later):
        shares.reconcile("r1", ["kept"])
    assert shares.running("a") == 2
