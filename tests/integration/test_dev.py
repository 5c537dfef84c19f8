"""``sluice dev``: a signal, or a child's death, stops the whole suite and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.tools.servers import child_env, free_port
from libs.tools.stack import SERVICES

CHILDREN = len(SERVICES) + 2  # and its own NATS and Redis
STARTUP_S = 120.0
STOP_S = 90.0


class Dev:
    """A running ``sluice dev``, its output in a file, its children by pid."""

    def __init__(self, workdir: Path) -> None:
        env = {
            "SLUICE_NATS_URL": f"nats://127.0.0.1:{free_port()}",
            "SLUICE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            **{f"SLUICE_{name.upper()}_PORT": str(free_port()) for name in SERVICES},
        }
        self.gateway = f"http://127.0.0.1:{env['SLUICE_GATEWAY_PORT']}"
        self.output = workdir / "dev.out"
        argv = [sys.executable, "-m", "libs.tools.cli", "dev", "--workdir", str(workdir)]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                argv, env=child_env(env), stdout=out, stderr=subprocess.STDOUT
            )
        self.children: list[int] = []

    def wait_until_serving(self) -> None:
        """Until every child runs and the gateway, started last, is ready."""
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output.read_text()
            self.children = children_of(self.process.pid)
            if len(self.children) == CHILDREN and ready(self.gateway):
                return
            time.sleep(0.1)
        pytest.fail(f"sluice dev did not come up in {STARTUP_S:g}s:\n{self.output.read_text()}")

    def wait_until_watching(self) -> None:
        """Until ``sluice dev`` is past starting: its main thread waits in ``sigwait``."""
        deadline = time.monotonic() + STARTUP_S
        wchan = Path(f"/proc/{self.process.pid}/wchan")
        while "sigtimedwait" not in wchan.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait_for_exit(self) -> int:
        try:
            return self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sluice dev still running {STOP_S:g}s later:\n{self.output.read_text()}")

    def child_running(self, argv_part: str) -> int:
        return next(pid for pid in self.children if argv_part in cmdline(pid))

    def kill_all(self) -> None:
        for pid in [*self.children, self.process.pid]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    suite = Dev(tmp_path)
    try:
        suite.wait_until_serving()
        yield suite
    finally:
        suite.kill_all()


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as answer:
            status: int = answer.status
    except OSError:
        return False
    return status == 200


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_stops_the_whole_suite(dev: Dev, sig: signal.Signals) -> None:
    assert all(alive(pid) for pid in dev.children)
    dev.process.send_signal(sig)
    assert dev.wait_for_exit() == 0, dev.output.read_text()
    assert not [pid for pid in dev.children if alive(pid)], "every child is gone"


def test_signals_repeated_while_stopping_do_not_hang_it(dev: Dev) -> None:
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        dev.process.send_signal(sig)
        time.sleep(0.05)
    assert dev.wait_for_exit() == 0, dev.output.read_text()
    assert not [pid for pid in dev.children if alive(pid)]


def test_a_crashed_service_is_named_and_stops_the_rest(dev: Dev) -> None:
    dev.wait_until_watching()
    runner = dev.child_running("libs.tools.cli runner")
    os.kill(runner, signal.SIGKILL)
    assert dev.wait_for_exit() != 0
    output = dev.output.read_text()
    assert "runner exited with -9" in output, output
    assert "Traceback" not in output, "named by the watch, not by a failed start"
    assert not [pid for pid in dev.children if alive(pid)], "the others were stopped"


def test_a_stop_signal_while_starting_stops_what_had_started(tmp_path: Path) -> None:
    dev = Dev(tmp_path)
    try:
        deadline = time.monotonic() + STARTUP_S
        while len(dev.children) < 3 and time.monotonic() < deadline:
            dev.children = children_of(dev.process.pid)
            time.sleep(0.02)
        dev.process.send_signal(signal.SIGTERM)
        assert dev.wait_for_exit() == 0, dev.output.read_text()
        assert len(dev.children) >= 3, "it was stopped while starting the services"
        assert not [pid for pid in dev.children if alive(pid)], dev.output.read_text()
    finally:
        dev.kill_all()


def test_children_of_a_killed_sluice_dev_die_with_it(dev: Dev) -> None:
    dev.process.kill()
    dev.process.wait()
    deadline = time.monotonic() + STOP_S
    while [pid for pid in dev.children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [cmdline(pid) for pid in dev.children if alive(pid)]
