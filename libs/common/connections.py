"""NATS and Redis connections as every service opens them."""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.connection import HiredisRespSerializer
from redis.driver_info import DriverInfo

from libs.common.direct_nats import DirectNATS
from libs.common.settings import Settings

log = logging.getLogger(__name__)

DRIVER_INFO = DriverInfo()

RedisClient = aioredis.Redis | aioredis.RedisCluster
"""What :func:`connect_redis` answers: one server's client, or a Redis Cluster's."""


def nats_servers(url: str) -> list[str]:
    """``SLUICE_NATS_URL`` as a server list: one URL, or a cluster's, comma-separated."""
    return [server.strip() for server in url.split(",") if server.strip()]


async def connect_nats(settings: Settings, name: str) -> DirectNATS:
    """Connect with reconnect forever: services ride out a NATS restart.

    Given a cluster's servers, a lost connection moves to another node (and to any
    the cluster announces later); subscriptions are replayed there by nats-py, and
    what was published meanwhile waits in the ``pending_size`` buffer.
    """

    async def disconnected() -> None:
        log.warning("nats disconnected", extra={"service": name})

    async def reconnected() -> None:
        log.info("nats reconnected", extra={"service": name})

    async def error(exc: Exception) -> None:
        log.warning("nats error: %s", exc, extra={"service": name})

    client = DirectNATS()
    await client.connect(
        nats_servers(settings.nats_url),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,  # type: ignore[arg-type]  # annotated int, sleeps any number
        connect_timeout=2,
        allow_reconnect=True,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        pending_size=64 * 1024 * 1024,
        tls=_nats_tls(settings.nats_tls_ca),
    )
    return client


def _nats_tls(ca_file: str) -> ssl.SSLContext | None:
    """Trust ``SLUICE_NATS_TLS_CA``; without it, ``tls://`` URLs trust the system's CAs."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def connect_redis(settings: Settings) -> RedisClient:
    """A pooled client; commands reconnect on their own after Redis restarts.

    With ``SLUICE_REDIS_CLUSTER`` set, redis-py's cluster client, started from every
    node ``SLUICE_REDIS_URL`` lists (comma-separated): it learns the slot map, sends
    each command to its key's master and follows a failover to the promoted replica.

    The pool blocks when all its connections are busy: a burst of thousands of readers
    catching up at once waits its turn instead of failing with ``MaxConnectionsError``.
    Plain TCP connections pack commands with hiredis (TLS and Unix sockets keep
    redis-py's own connection classes). Every connection shares one
    :data:`DRIVER_INFO`: without it, each new connection looked redis-py's version up
    in the installed package's metadata, which was 40% of the coordinator's work while
    a burst of streams grew its pool.
    """
    tls: dict[str, Any] = {"ssl_ca_certs": settings.redis_tls_ca} if settings.redis_tls_ca else {}
    if settings.redis_cluster:
        return _connect_cluster(settings.redis_url, tls)
    extra: dict[str, Any] = {"driver_info": DRIVER_INFO}
    scheme = urlsplit(settings.redis_url).scheme
    if scheme == "redis":
        extra["connection_class"] = HiredisPackedConnection
    elif scheme == "rediss":
        extra.update(tls)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        **extra,
        decode_responses=False,
        socket_connect_timeout=2,
        socket_timeout=5,
        max_connections=512,
        timeout=5,
    )
    return aioredis.Redis(connection_pool=pool)


def _connect_cluster(url: str, tls: dict[str, Any]) -> aioredis.RedisCluster:
    """Each node's connections are redis-py's own (hiredis packing steps aside here)."""
    first, *others = [node.strip() for node in url.split(",") if node.strip()]
    startup = [
        ClusterNode(parts.hostname or "localhost", parts.port or 6379)
        for parts in map(urlsplit, others)
    ]
    return aioredis.RedisCluster.from_url(
        first,
        startup_nodes=startup,
        driver_info=DRIVER_INFO,
        decode_responses=False,
        socket_connect_timeout=2,
        socket_timeout=5,
        max_connections=512,
        **(tls if urlsplit(first).scheme == "rediss" else {}),
    )


class HiredisPackedConnection(aioredis.Connection):
    """redis-py's asyncio connection, packing commands in C.

    The asyncio one packs in Python and re-copies its buffer for every argument, and
    redis-py's hiredis serializer still inspects every argument in Python first; a
    runner's log commit is one script call with three arguments per token. Commands
    whose name has a space (``SCRIPT LOAD``) and arguments hiredis refuses
    (``bytearray``) take redis-py's own path.
    """

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if (" " if isinstance(head, str) else b" ") not in head:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = self._packer.pack(*args)
        return packed
