"""Container HEALTHCHECK: GET /healthz on the port of the sluice service this container runs.

One image serves four services on four ports, so the check finds which one runs here
from the container's command line (``sluice <service>``) and reads that service's
``SLUICE_<SERVICE>_PORT`` (default as in the settings). ``HEALTHCHECK_PORT`` overrides both.
Exit 0 when healthy, 1 otherwise, as Docker expects.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path

DEFAULT_PORTS = {"gateway": 8080, "streamer": 8081, "coordinator": 8082, "runner": 8083}


def service_from_argv(argv: list[str]) -> str | None:
    """The service named by a ``sluice <service>`` command line, if it is one."""
    for first, second in pairwise(argv):
        if Path(first).name == "sluice" and second in DEFAULT_PORTS:
            return second
    return None


def process_argvs(proc: Path = Path("/proc")) -> Iterable[list[str]]:
    """Command lines of the container's processes, PID 1 first (it is sluice unless an init runs)."""
    pids = sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for pid in pids:
        try:
            raw = (pid / "cmdline").read_bytes()
        except OSError:
            continue
        yield [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def health_port(env: Mapping[str, str], argvs: Iterable[list[str]]) -> int:
    if env.get("HEALTHCHECK_PORT"):
        return int(env["HEALTHCHECK_PORT"])
    for argv in argvs:
        service = service_from_argv(argv)
        if service:
            return int(env.get(f"SLUICE_{service.upper()}_PORT") or DEFAULT_PORTS[service])
    raise SystemExit("healthcheck: no 'sluice <service>' process found")


def main() -> int:
    port = health_port(os.environ, process_argvs())
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: port {port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
