"""The coordinator's own state stays bounded, and supersede stays within a tenant."""

from __future__ import annotations

from typing import Any, cast
from unittest.mock import patch

from nats.aio.client import Client as NATS

from libs.common.settings import load_settings
from libs.common.store import StreamMeta, StreamStore
from services.coordinator import coordinator as module
from services.coordinator.coordinator import Coordinator


class Store:
    def __init__(self, metas: dict[str, StreamMeta]) -> None:
        self.metas = metas

    async def meta(self, stream_id: str) -> StreamMeta | None:
        return self.metas.get(stream_id)


def make(metas: dict[str, StreamMeta]) -> Coordinator:
    return Coordinator(load_settings({}), cast(NATS, object()), cast(StreamStore, Store(metas)))


def meta(tenant: str) -> StreamMeta:
    return StreamMeta(status="running", tenant=tenant, model="sim", created_ns=1)


async def test_supersede_never_cancels_another_tenants_stream() -> None:
    cancelled: list[str] = []

    async def cancel(nc: Any, store: Any, stream_id: str, reason: str) -> bool:
        cancelled.append(stream_id)
        return True

    coord = make({"st_theirs": meta("bob"), "st_mine": meta("alice")})
    with patch.object(module, "request_cancel", cancel):
        await coord._supersede("st_theirs", "alice")
        await coord._supersede("st_gone", "alice")
        await coord._supersede("st_mine", "alice")
    assert cancelled == ["st_mine"]


def test_conversation_affinity_is_per_tenant_and_bounded() -> None:
    coord = make({})
    with patch.object(module, "AFFINITY_MAX", 3):
        for index in range(5):
            coord._remember("alice", f"c{index}", f"r{index}")
        coord._remember("bob", "c4", "r-bob")
    assert len(coord._affinity) == 3
    assert coord._affinity[("alice", "c4")] == "r4" and coord._affinity[("bob", "c4")] == "r-bob"
