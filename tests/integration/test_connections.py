"""The connection shortcuts against real servers: what goes in comes out, in order."""

from __future__ import annotations

import asyncio

import msgspec

from libs.common.connections import connect_nats, connect_redis
from libs.common.settings import Settings


def settings_for(servers: tuple[str, str]) -> Settings:
    return msgspec.structs.replace(Settings(), nats_url=servers[0], redis_url=servers[1])


async def test_direct_and_queued_subscriptions_share_one_connection(
    servers: tuple[str, str],
) -> None:
    settings = settings_for(servers)
    receiver = await connect_nats(settings, "receiver")
    sender = await connect_nats(settings, "sender")
    direct: list[tuple[str, bytes]] = []
    queued: list[bytes] = []
    all_in = asyncio.Event()

    def on_direct(subject: str, data: bytes) -> None:
        direct.append((subject, data))
        if len(direct) == len(expected):
            all_in.set()

    big = b"x" * 200_000  # spans many reads of the receiver's 32 KB buffer
    expected = [(f"conn.direct.{i % 3}", b"%d\r\nMSG a 1 1\r\n" % i) for i in range(2_000)]
    expected.insert(700, ("conn.direct.big", big))
    try:
        await receiver.subscribe_direct("conn.direct.*", on_direct)
        sub = await receiver.subscribe("conn.queued")
        await receiver.flush()
        await sender.publish_many(expected[:1_000])
        await sender.publish("conn.queued", b"in between", headers={"K": "v"})
        await sender.publish_many(expected[1_000:])
        await sender.flush()
        async with asyncio.timeout(10):
            queued.append((await sub.next_msg(timeout=10)).data)
            await all_in.wait()
        assert direct == expected
        assert queued == [b"in between"]
    finally:
        await sender.close()
        await receiver.close()


async def test_commands_packed_in_c_round_trip(servers: tuple[str, str]) -> None:
    redis = connect_redis(settings_for(servers))
    try:
        key = "conn:packed"
        await redis.delete(key)
        await redis.rpush(key, "text", b"\x00bytes\r\n", 42, 2.5, bytearray(b"array"))
        await redis.rpush(key, memoryview(b"view"))
        assert await redis.lrange(key, 0, -1) == [
            b"text",
            b"\x00bytes\r\n",
            b"42",
            b"2.5",
            b"array",
            b"view",
        ]
        script = redis.register_script("return ARGV[1]")  # SCRIPT LOAD: a name with a space
        assert await redis.script_load("return 1")
        assert await script(args=["ok"]) == b"ok"
    finally:
        await redis.aclose()
