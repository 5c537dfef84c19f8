"""Secure defaults with real processes: secrets that cannot be forged, keys that do not leak."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from libs.client.http import SluiceClient
from libs.common.auth import mint_read_token
from libs.tools.servers import free_port
from libs.tools.stack import Service, Stack
from tests.conftest import FAST_ENV, private_suite
from tests.integration.helpers import final, read_stream, sim

NEW_SECRET = "a-new-secret-that-signs-every-token-now"
OLD_SECRET = "the-old-secret-still-verifying-its-tokens"
HASHED_KEY = "key-of-bob-stored-only-as-its-digest"
ADMIN_TOKEN = "operator-token-for-metrics"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two tenants: alice's key inline, bob's in a keys file by its SHA-256; two secrets."""
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys"
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    keys_file.write_text(f"# mounted from a Secret\nsha256:{digest}:bob\n")
    env = {
        "SLUICE_SECRET": f"{NEW_SECRET},{OLD_SECRET}",
        "SLUICE_API_KEYS": "key-of-alice:alice",
        "SLUICE_API_KEYS_FILE": str(keys_file),
        "SLUICE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    yield from private_suite(tmp_path_factory, "secure", env)


@pytest.mark.parametrize(
    "env",
    [
        {"SLUICE_API_KEYS": "k:acme"},
        {"SLUICE_API_KEYS": "k:acme", "SLUICE_SECRET": "short"},
        {"SLUICE_ENV": "production", "SLUICE_SECRET": "sluice-dev-secret"},
        {"SLUICE_API_KEYS": "k-without-a-tenant", "SLUICE_SECRET": NEW_SECRET},
    ],
)
def test_a_service_refuses_to_start_with_a_forgeable_secret_or_a_bad_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    clean = {**FAST_ENV, "SLUICE_SECRET": "", **env, "SLUICE_GATEWAY_PORT": str(free_port())}
    service = Service("gateway", free_port(), clean, tmp_path / "gateway.log").start()
    assert service.process is not None
    assert service.process.wait(timeout=30) != 0
    log = (tmp_path / "gateway.log").read_text()
    assert "bad configuration" in log and "SLUICE_" in log
    assert "k-without-a-tenant" not in log and "short" not in log


async def test_a_read_token_names_neither_the_tenant_nor_the_key(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    for key, tenant in (("key-of-alice", "alice"), (HASHED_KEY, "bob")):
        created = await SluiceClient(session, keyed.gateway, api_key=key).create(
            prompt="hi", sim=sim(tokens=3)
        )
        url = created["events_url"]
        encoded = base64.urlsafe_b64encode(tenant.encode()).rstrip(b"=").decode()
        assert tenant not in url and key not in url and encoded not in url
        assert final(await read_stream(session, url)).type == "done"


async def test_a_token_signed_by_a_secret_in_rotation_still_reads(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    created = await SluiceClient(session, keyed.gateway, api_key="key-of-alice").create(
        prompt="hi", sim=sim(tokens=3)
    )
    stream_id = created["id"]
    base = f"{keyed.streamer}/v1/streams/{stream_id}/events?token="
    old = mint_read_token(OLD_SECRET.encode(), stream_id, 60)
    assert final(await read_stream(session, base + old)).type == "done"
    forged = mint_read_token(b"sluice-dev-secret", stream_id, 60)
    async with session.get(base + forged) as refused:
        assert refused.status == 403


async def test_an_api_key_in_the_query_string_counts_only_on_the_control_socket(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    body = {"prompt": "hi", "sim": sim(tokens=1)}
    async with session.post(f"{keyed.gateway}/v1/streams?api_key=key-of-alice", json=body) as r:
        assert r.status == 401 and (await r.json())["error"]["type"] == "unauthorized"
    async with session.ws_connect(f"{keyed.gateway}/v1/control?api_key=key-of-alice") as ws:
        await ws.send_json({"type": "ping", "ref": "p"})
        assert (await ws.receive_json(timeout=10))["type"] == "pong"


async def status_of(session: aiohttp.ClientSession, url: str, **headers: str) -> int:
    async with session.get(url, headers=headers) as answer:
        if answer.status != 200:
            assert "error" in await answer.json()
        return answer.status


async def test_operator_endpoints_need_the_admin_token_on_the_public_port(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    for service in keyed.services:
        assert await status_of(session, f"{service.url}/metrics") == 401
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert await status_of(session, f"{service.url}/metrics", **bearer) == 200
    gateway = keyed.gateway
    assert await status_of(session, f"{gateway}/dashboard/stats") == 401
    assert await status_of(session, f"{gateway}/dashboard?admin_token={ADMIN_TOKEN}") == 200
    assert await status_of(session, f"{gateway}/dashboard/stats?admin_token=nope") == 401


async def test_with_an_admin_port_operator_endpoints_are_served_there_alone(
    keyed: Stack, session: aiohttp.ClientSession
) -> None:
    admin_port = free_port()
    gateway = keyed.add("gateway", SLUICE_ADMIN_PORT=str(admin_port))
    try:
        gateway.wait_ready()
        admin = f"http://127.0.0.1:{admin_port}"
        assert await status_of(session, f"{gateway.url}/metrics") == 404
        assert await status_of(session, f"{gateway.url}/dashboard") == 404
        assert await status_of(session, f"{admin}/metrics") == 200
        assert await status_of(session, f"{admin}/dashboard/stats") == 200
        assert await status_of(session, f"{admin}/readyz") == 200
        assert await status_of(session, f"{admin}/v1/streams/st_x") == 404
        alice = SluiceClient(session, gateway.url, api_key="key-of-alice")
        created = await alice.create(prompt="hi", sim=sim(tokens=2))
        assert final(await read_stream(session, created["events_url"])).type == "done"
    finally:
        gateway.stop()
        keyed.services.remove(gateway)
