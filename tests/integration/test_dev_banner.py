"""``sluice dev`` tells a newcomer where everything is, and when it had to move a port."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from libs.tools.servers import child_env, free_port
from tests.conftest import own_servers

pytestmark = pytest.mark.timeout(120)
SERVICES = ("gateway", "streamer", "coordinator", "runner")


def read_banner(process: subprocess.Popen[str], timeout_s: float = 60.0) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ctrl-C stops everything."):
            return "".join(lines)
    raise AssertionError("no banner:\n" + "".join(lines))


def test_dev_prints_the_page_urls_and_a_moved_port(tmp_path: Path) -> None:
    with own_servers(tmp_path / "servers") as (nats, redis):
        run_dev_with_a_taken_gateway_port(nats.url, f"{redis.url}/0", tmp_path)


def run_dev_with_a_taken_gateway_port(nats_url: str, redis_url: str, tmp_path: Path) -> None:
    """The dev suite on its own NATS and Redis, so its runner never joins another suite."""
    ports = {name: free_port() for name in SERVICES}
    taken = socket.socket()
    taken.bind(("127.0.0.1", ports["gateway"]))
    taken.listen()
    env = {f"SLUICE_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    env |= {"SLUICE_NATS_URL": nats_url, "SLUICE_REDIS_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "libs.tools.cli", "dev", "--workdir", str(tmp_path / "dev")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env(env),
    )
    try:
        banner = read_banner(process)
        moved = re.search(rf"gateway +port {ports['gateway']} is taken: moved to (\d+)", banner)
        assert moved, banner
        gateway = f"http://127.0.0.1:{moved.group(1)}"
        assert f"chat page        {gateway}/\n" in banner
        assert f"dashboard        {gateway}/dashboard" in banner
        assert f"OpenAI base_url  http://127.0.0.1:{ports['streamer']}/v1\n" in banner
        assert f"control socket   ws://127.0.0.1:{moved.group(1)}/v1/control\n" in banner
        with urllib.request.urlopen(gateway + "/", timeout=5) as page:
            assert b"<title>sluice chat</title>" in page.read()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
        taken.close()
