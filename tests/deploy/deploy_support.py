"""Constants and helpers shared by the deployment checks."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

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
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"deploy tests need `{name}` on PATH (install {package})")
    return path


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
