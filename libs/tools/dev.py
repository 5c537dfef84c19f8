"""``sluice dev``: the whole suite on one machine, no Docker.

Uses the NATS and Redis at ``SLUICE_NATS_URL`` / ``SLUICE_REDIS_URL`` when they
answer; otherwise starts its own, on the configured port when it is free and on a
free port when something else holds it (it never fights for a taken port). Then the
four services as separate processes. Ctrl-C or SIGTERM stops everything it started, and
so does the death of any of them: it says which one died and exits non-zero. Unless
``SLUICE_SECRET`` is set, each run signs its read tokens with a fresh random one.

On servers it did not start (someone else's, or another ``sluice dev``'s), the suite
takes a namespace of its own unless ``SLUICE_NAMESPACE`` names one: two suites on one
NATS and Redis would otherwise serve each other's streams and sum each other's figures.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from libs.common import names
from libs.common.settings import load_settings
from libs.tools import helptext
from libs.tools.servers import (
    Server,
    free_port,
    nats_answers,
    nats_server,
    port_is_free,
    redis_answers,
    redis_server,
)
from libs.tools.stack import SERVICES, Stack

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class Stop(Exception):
    """SIGINT or SIGTERM arrived while the suite was starting."""


class Child(Protocol):
    """A process ``sluice dev`` started and watches: a server or a service."""

    name: str
    log_path: Path
    process: subprocess.Popen[bytes] | None


def _own_port(url: str, default: int) -> int:
    port = urlparse(url).port or default
    return port if port_is_free(port) else free_port()


def _ensure(kind: str, url: str, workdir: Path, started: list[Server], reused: list[str]) -> str:
    if (nats_answers if kind == "nats" else redis_answers)(url):
        print(f"  {kind:<11} {url} (already running, reused)")
        reused.append(kind)
        return url
    port = _own_port(url, 4222 if kind == "nats" else 6379)
    server = (
        nats_server(port, workdir / kind) if kind == "nats" else redis_server(port, workdir / kind)
    )
    started.append(server.start())
    print(f"  {kind:<11} {server.url} (started here; log {server.log_path})")
    return server.url if kind == "nats" else f"{server.url}/0"


def main(argv: list[str]) -> None:
    parser = helptext.parser("sluice dev", __doc__, paragraphs=3)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="logs and data (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-dev-"))
    workdir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    print("sluice dev: starting")
    stack: Stack | None = None
    died: str | None = None
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop_starting)
    try:
        reused: list[str] = []
        nats_url = _ensure("nats", settings.nats_url, workdir, servers, reused)
        redis_url = _ensure("redis", settings.redis_url, workdir, servers, reused)
        defaults = {name: getattr(settings, f"{name}_port") for name in SERVICES}
        ports = {
            name: port if port_is_free(port) else free_port() for name, port in defaults.items()
        }
        for name, port in ports.items():
            if port != defaults[name]:
                print(f"  {name:<11} port {defaults[name]} is taken: moved to {port}")
        stack = Stack(nats_url, redis_url, workdir)
        stack.env[names.NAMESPACE_VARIABLE] = _namespace(settings.namespace, reused)
        if not settings.secret:
            stack.env["SLUICE_SECRET"] = secrets.token_hex(32)
        stack.env["SLUICE_PUBLIC_GATEWAY_URL"] = f"http://127.0.0.1:{ports['gateway']}"
        stack.env["SLUICE_PUBLIC_STREAMER_URL"] = f"http://127.0.0.1:{ports['streamer']}"
        stack.start(ports)
        _banner(stack, ports, workdir)
        died = _wait_for_stop([*servers, *stack.services])
    except Stop:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # further ones wait for the stop
        print("\nsluice dev: stopping")
        if stack is not None:
            stack.stop()
        for server in reversed(servers):
            server.stop()
    if died is not None:
        raise SystemExit(f"sluice dev: stopped because {died}")


def _namespace(configured: str, reused: list[str]) -> str:
    """The configured namespace, or a fresh one when sharing servers and none was asked for."""
    if not reused or os.environ.get(names.NAMESPACE_VARIABLE):
        print(f"  namespace   {configured}")
        return configured
    own = f"dev-{secrets.token_hex(3)}"
    print(
        f"  namespace   {own} (its own, as it shares {' and '.join(reused)}; set {names.NAMESPACE_VARIABLE} to choose)"
    )
    return own


def _banner(stack: Stack, ports: dict[str, int], workdir: Path) -> None:
    for name in SERVICES:
        print(f"  {name:<11} http://127.0.0.1:{ports[name]}  (/healthz /readyz /metrics)")
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    streamer = f"http://127.0.0.1:{ports['streamer']}"
    print(f"  logs        {workdir}\n")
    print(f"  chat page        {gateway}/")
    print(f"  dashboard        {gateway}/dashboard   (or: sluice top --gateway {gateway})")
    print(f"  OpenAI base_url  {streamer}/v1")
    print(f"  control socket   ws://127.0.0.1:{ports['gateway']}/v1/control")
    print(f"  terminal         sluice chat --gateway {gateway}")
    print("\nOr with curl (creates a stream, then follows its events):\n")
    print(
        f"  curl -sN \"$(curl -s -X POST {gateway}/v1/streams -H 'Content-Type: application/json' \\\n"
        '      -d \'{"prompt": "hello", "sim": {"tokens": 40}}\' \\\n'
        '      | python3 -c \'import sys, json; print(json.load(sys.stdin)["events_url"])\')"\n'
    )
    print("Ctrl-C stops everything.", flush=True)


def _stop_starting(signum: int, frame: object) -> None:
    """While starting, a stop signal interrupts whatever runs, as Ctrl-C does by default."""
    raise Stop


def _wait_for_stop(children: Sequence[Child]) -> str | None:
    """Wait for SIGINT or SIGTERM (None), or for a child to die (which one, and how).

    The signals are blocked and taken with ``sigwait``, so no handler runs in the
    middle of this thread (a handler that takes a lock the thread holds hangs for
    good), and signals that follow wait until the stop is done. Blocked signals are
    inherited, so they are blocked only once every child has started.
    """
    awaited = {*STOP_SIGNALS, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, awaited)
    while True:
        died = _first_dead(children)
        if died is not None:
            print(f"\nsluice dev: {died}", flush=True)
            return died
        if signal.sigwait(awaited) in STOP_SIGNALS:
            return None


def _first_dead(children: Sequence[Child]) -> str | None:
    for child in children:
        code = child.process.poll() if child.process is not None else None
        if code is not None:
            return f"{child.name} exited with {code}; see {child.log_path}"
    return None
