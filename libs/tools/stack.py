"""The four services as real processes: for ``sluice dev``, the tests and the benchmark."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from libs.tools.servers import ServerError, child_env, die_with_parent, free_port, terminate

SERVICES = ("coordinator", "runner", "streamer", "gateway")


def wait_ready(
    url: str, process: subprocess.Popen[bytes] | None, what: str, timeout_s: float
) -> None:
    """Until ``url``/readyz answers 200; a ``process`` that exits first fails at once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"{what} not ready within {timeout_s}s")


def page_origins(gateway_port: int) -> str:
    """The origins of the gateway's own chat page, which reads SSE from another port."""
    return f"http://127.0.0.1:{gateway_port},http://localhost:{gateway_port}"


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "libs.tools.cli", self.name],
                env=child_env(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        wait_ready(self.url, self.process, f"{self.name} (see {self.log_path})", timeout_s)

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        terminate(self.process, signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        terminate(self.process, signal.SIGKILL, timeout_s=10)


@dataclass
class Stack:
    """Four services (and any extra replicas) sharing one NATS and one Redis."""

    nats_url: str
    redis_url: str
    logdir: Path
    env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    def base_env(self) -> dict[str, str]:
        return {
            "SLUICE_NATS_URL": self.nats_url,
            "SLUICE_REDIS_URL": self.redis_url,
            "SLUICE_HOST": "127.0.0.1",
            **self.env,
        }

    def add(self, name: str, port: int | None = None, **extra: str) -> Service:
        """Start one more process of ``name`` (a replica) on its own port."""
        port = port or free_port()
        index = sum(1 for s in self.services if s.name == name)
        env = {**self.base_env(), f"SLUICE_{name.upper()}_PORT": str(port), **extra}
        if name == "runner":
            env.setdefault("SLUICE_RUNNER_ID", f"runner-{port}")
        service = Service(name, port, env, self.logdir / f"{name}-{index}.log")
        self.services.append(service.start())
        return service

    def start(self, ports: dict[str, int] | None = None) -> Stack:
        ports = ports or {name: free_port() for name in SERVICES}
        self.env.setdefault("SLUICE_PUBLIC_STREAMER_URL", f"http://127.0.0.1:{ports['streamer']}")
        self.env.setdefault("SLUICE_PUBLIC_GATEWAY_URL", f"http://127.0.0.1:{ports['gateway']}")
        self.env.setdefault("SLUICE_CORS_ORIGINS", page_origins(ports["gateway"]))
        for name in SERVICES:
            self.add(name, ports[name])
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        for service in self.services:
            service.wait_ready()

    def first(self, name: str) -> Service:
        return next(
            s for s in self.services if s.name == name and s.process and s.process.poll() is None
        )

    @property
    def gateway(self) -> str:
        return self.first("gateway").url

    @property
    def streamer(self) -> str:
        return self.first("streamer").url

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
