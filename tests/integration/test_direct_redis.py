"""The store's direct Redis connection, against a real redis-server this module owns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.exceptions

from libs.common.direct_redis import DirectRedis
from libs.tools.servers import Server, free_port, redis_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    own = redis_server(workdir=tmp_path_factory.mktemp("direct-redis"), appendonly=False).start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
async def direct(server: Server) -> AsyncIterator[DirectRedis]:
    connection = DirectRedis.from_url(f"{server.url}/3", timeout_s=2.0)
    assert connection is not None
    try:
        yield connection
    finally:
        connection.close()


async def test_a_pipeline_answers_in_order_and_an_error_reply_raises(direct: DirectRedis) -> None:
    replies = await direct.execute(
        ("DEL", "k", "h"), ("SET", "k", b"v"), ("GET", "k"), ("HSET", "h", "a", 1, "b", 2.5)
    )
    assert replies[1:] == [b"OK", b"v", 2]
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await direct.execute(("GET", "k"), ("LPUSH", "k", "x"), ("GET", "k"))
    assert await direct.call("HGETALL", "h") == [b"a", b"1", b"b", b"2.5"]  # still in step


async def test_a_script_gets_its_keys_and_arguments_and_nil_is_none(direct: DirectRedis) -> None:
    script = "redis.call('SET', KEYS[1], ARGV[1]); return {ARGV[2], redis.call('GET', KEYS[2])}"
    reply = await direct.call("EVAL", script, 2, "s1", "missing", "one", 7)
    assert reply == [b"7", None]
    assert await direct.call("GET", "s1") == b"one"


async def test_concurrent_callers_each_get_their_own_reply(direct: DirectRedis) -> None:
    async def round_trip(i: int) -> bytes:
        await direct.call("SET", f"c{i}", i)
        return bytes(await direct.call("GET", f"c{i}"))

    replies = await asyncio.gather(*(round_trip(i) for i in range(300)))
    assert replies == [str(i).encode() for i in range(300)]


async def test_the_url_selects_the_database(direct: DirectRedis, server: Server) -> None:
    await direct.call("SET", "in-db-3", 1)
    other = DirectRedis.from_url(f"{server.url}/0")
    assert other is not None
    try:
        assert await other.call("EXISTS", "in-db-3") == 0
        assert await direct.call("EXISTS", "in-db-3") == 1
    finally:
        other.close()


def test_only_one_plain_server_is_served_directly() -> None:
    assert DirectRedis.from_url("rediss://h:6380/0") is None
    assert DirectRedis.from_url("redis://a:1,b:2") is None
    direct = DirectRedis.from_url("redis://u:p%40ss@h:6390/2")
    assert direct is not None and (direct.host, direct.port, direct.db) == ("h", 6390, 2)


async def test_a_password_is_sent_before_any_command(tmp_path: Path) -> None:
    locked = redis_server(workdir=tmp_path)
    locked.argv += ["--requirepass", "s3cret"]
    locked.start()
    try:
        wrong = DirectRedis.from_url(f"redis://:nope@127.0.0.1:{locked.port}/0")
        right = DirectRedis.from_url(f"redis://:s3cret@127.0.0.1:{locked.port}/1")
        assert wrong is not None and right is not None
        for _ in range(2):  # refused each time, never a command sent unauthenticated
            with pytest.raises(redis.exceptions.AuthenticationError):
                await wrong.call("PING")
        assert await right.call("PING") == b"PONG"
        wrong.close()
        right.close()
    finally:
        locked.stop()


async def test_a_restarted_server_fails_the_call_then_the_next_reconnects(
    tmp_path: Path,
) -> None:
    own = redis_server(workdir=tmp_path, appendonly=False).start()
    direct = DirectRedis.from_url(own.url)
    assert direct is not None
    try:
        assert await direct.call("PING") == b"PONG"
        own.restart()
        with pytest.raises(redis.exceptions.ConnectionError):
            for _ in range(3):  # the close may reach us between two calls
                await direct.call("PING")
                await asyncio.sleep(0.1)
        assert await direct.call("PING") == b"PONG"
    finally:
        direct.close()
        own.stop()


async def test_a_server_that_stops_answering_fails_the_call_after_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # takes the command, never answers
        await asyncio.sleep(30)

    port = free_port()
    listener = await asyncio.start_server(silent, "127.0.0.1", port)
    direct = DirectRedis("127.0.0.1", port, timeout_s=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError, match="no reply within"):
            await direct.call("PING")
        assert time.monotonic() - started < 3.0  # the timeout, with an order of slack
    finally:
        direct.close()
        listener.close()


async def test_a_loading_server_is_a_busy_loading_error_callers_retry(
    direct: DirectRedis,
) -> None:
    with pytest.raises(redis.exceptions.BusyLoadingError):
        await direct.call("EVAL", "return redis.error_reply('LOADING loading the dataset')", 0)
    with pytest.raises(redis.exceptions.ReadOnlyError):
        await direct.call("EVAL", "return redis.error_reply('READONLY a replica')", 0)


async def test_nothing_listening_is_a_connection_error() -> None:
    direct = DirectRedis("127.0.0.1", free_port(), timeout_s=1.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="connecting"):
        await direct.call("PING")
