"""TLS and passwords on both servers, with certificates made for the test.

NATS takes TLS connections from one user; Redis has only a TLS port and one ACL user.
The whole suite streams exactly over them. Which fast paths run there: the direct NATS
parser does (it reads what TLS decrypted), hiredis packing steps aside for ``rediss://``
(redis-py's own TLS connection), and a wrong password is refused by both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from libs.client.http import SluiceClient
from libs.common.connections import HiredisPackedConnection, connect_nats, connect_redis
from libs.common.settings import Settings, load_settings
from libs.tools.secure import make_certs, secured_nats, secured_redis
from libs.tools.servers import Server
from libs.tools.stack import Stack
from tests.conftest import FAST_ENV
from tests.integration.resumable import Schedule, follow, wait_until
from tests.integration.test_faults import assert_exact

USER, PASSWORD = "sluice", "s3cret-for-tests"


class Secured:
    def __init__(self, nats: Server, redis: Server, ca: Path) -> None:
        self.nats, self.redis, self.ca = nats, redis, ca

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        return {
            "SLUICE_NATS_URL": f"tls://{USER}:{password}@127.0.0.1:{self.nats.port}",
            "SLUICE_NATS_TLS_CA": str(self.ca),
            "SLUICE_REDIS_URL": f"rediss://{USER}:{password}@127.0.0.1:{self.redis.port}/0",
            "SLUICE_REDIS_TLS_CA": str(self.ca),
        }

    def settings(self, password: str = PASSWORD) -> Settings:
        return load_settings(self.env(password))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp: Path = tmp_path_factory.mktemp("tls")
    certs = make_certs(tmp / "certs")
    nats = secured_nats(tmp / "nats", certs, USER, PASSWORD).start()
    redis = secured_redis(tmp / "redis", certs, USER, PASSWORD).start()
    try:
        yield Secured(nats, redis, certs.ca)
    finally:
        nats.stop()
        redis.stop()


@pytest.fixture(scope="module")
def stack(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**FAST_ENV, **secured.env()}
    suite = Stack(env["SLUICE_NATS_URL"], env["SLUICE_REDIS_URL"], tmp_path_factory.mktemp("s"))
    suite.env.update(env)
    try:
        yield suite.start()
    finally:
        suite.stop()


async def test_the_suite_streams_and_resumes_exactly_over_tls_with_passwords(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    created = await SluiceClient(session, stack.gateway).create(
        prompt="secured", sim={"tokens": 200, "tokens_per_s": 400}
    )
    transcript = await follow(session, [str(created["events_url"])], Schedule(cuts=[1200]))
    assert transcript.reconnect_reasons[:1] == ["cut"]
    assert_exact([transcript], ["secured"], 200)


async def test_the_direct_nats_parser_reads_messages_over_tls(secured: Secured) -> None:
    settings = secured.settings()
    receiver = await connect_nats(settings, "receiver")
    sender = await connect_nats(settings, "sender")
    got: list[bytes] = []
    try:
        assert receiver._client_id and receiver.connected_url is not None
        assert receiver.connected_url.scheme == "tls"
        await receiver.subscribe_direct("tls.check", lambda _, data: got.append(data))
        await receiver.flush()
        await sender.publish_many([("tls.check", b"%d" % i) for i in range(100)])
        await sender.flush()
        await wait_until(lambda: len(got) == 100, "100 messages through the direct parser")
        assert got == [b"%d" % i for i in range(100)]
    finally:
        await sender.close()
        await receiver.close()


async def test_hiredis_packing_steps_aside_for_rediss_and_commands_still_work(
    secured: Secured,
) -> None:
    client = connect_redis(secured.settings())
    try:
        assert isinstance(client, aioredis.Redis)
        connection_class = client.connection_pool.connection_class
        assert connection_class is aioredis.SSLConnection
        assert not issubclass(connection_class, HiredisPackedConnection)
        assert await client.ping()
        assert await client.acl_whoami() == USER
    finally:
        await client.aclose()


async def test_a_wrong_password_is_refused_by_both(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = secured.settings(password="wrong")
    client = connect_redis(wrong)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()
    caplog.set_level(logging.WARNING, logger="libs.common.connections")
    connecting = asyncio.ensure_future(connect_nats(wrong, "intruder"))
    try:
        await wait_until(
            lambda: "authorization violation" in caplog.text.lower(),
            "NATS refuses the password, and the service says so while it retries",
            timeout_s=10,
        )
        assert not connecting.done(), "a service keeps trying: the password may be rotated"
    finally:
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
