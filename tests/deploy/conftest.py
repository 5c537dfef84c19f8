"""Fixtures for the deployment checks: rendered overlays, parsed compose, tools.

Every tool these tests use is required: a missing one fails the run with the package
to install, never a silent skip.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
from deploy_support import MIN_KUSTOMIZE_MAJOR, OVERLAYS, ROOT, render, require_tool, yaml


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = require_tool("kubectl", "kubectl >= 1.27, which embeds kustomize v5")
    version = subprocess.run(
        [path, "version", "--client"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Kustomize Version: v(\d+)", version)
    if not match or int(match.group(1)) < MIN_KUSTOMIZE_MAJOR:
        raise RuntimeError(f"kubectl must embed kustomize v{MIN_KUSTOMIZE_MAJOR}+:\n{version}")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool", "Debian package `prometheus`")


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """Each overlay's objects, as ``kubectl kustomize`` renders them."""
    return {overlay: render(kubectl, overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())
