"""The Dockerfile builds one slim, non-root image whose command is the service."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import ModuleType

import pytest
from deploy_support import DEPLOY, ROOT, SERVICES

HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def only(name: str) -> str:
    (found,) = [args for instruction, args in instructions() if instruction == name]
    return found


def test_entrypoint_is_the_sluice_cli() -> None:
    assert json.loads(only("ENTRYPOINT")) == ["sluice"]


def test_documented_commands_are_the_services() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert "sluice gateway|coordinator|runner|streamer" in docs
    assert set(re.findall(r"docker run \S+ (\w+)", (ROOT / "Dockerfile").read_text())) <= set(
        SERVICES
    )


def test_cli_accepts_every_service_command() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from libs.tools.cli import main; main(['--help'])"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^  (\w+) ", done.stdout, re.MULTILINE)
    assert set(SERVICES) <= set(listed), done.stdout


def test_build_is_multi_stage_on_slim_python() -> None:
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in (ROOT / "Dockerfile").read_text()
    stages = [args for instruction, args in instructions() if instruction == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    runs = [args for instruction, args in instructions() if instruction == "RUN"]
    installs = [run for run in runs if "pip install" in run or "pip wheel" in run]
    assert installs and all("--no-cache-dir" in run for run in installs)
    assert any("--no-index" in run for run in installs), "the runtime installs only built wheels"


def test_runs_as_a_non_root_user() -> None:
    user = only("USER").split(":")[0]
    assert user not in {"root", "0"}


def test_healthcheck_runs_the_shipped_script() -> None:
    healthcheck = only("HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "python"
    copies = [args.split() for instruction, args in instructions() if instruction == "COPY"]
    assert ["deploy/docker/healthcheck.py", command[1]] in copies


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last match wins)."""
    verdict = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        candidates = prefixes + parts if raw.strip().lstrip("!").startswith("**/") else prefixes
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            verdict = not negated
    return verdict


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "requirements-build.lock",
        "libs/common/settings.py",
        "services/__init__.py",
        "deploy/docker/healthcheck.py",
    ],
)
def test_build_context_holds_the_package(path: str) -> None:
    assert not ignored(path)


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        "tests/deploy/test_image.py",
        "deploy/k8s/base/kustomization.yaml",
        "libs/common/__pycache__/settings.cpython-311.pyc",
        "docs/deploy.md",
    ],
)
def test_build_context_leaves_out_the_rest(path: str) -> None:
    assert ignored(path)


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sluice_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "port"), SERVICES.items())
def test_healthcheck_finds_the_service_port_from_the_command(
    healthcheck: ModuleType, name: str, port: int
) -> None:
    argvs = [["/sbin/docker-init", "--", "sluice", name]]
    assert healthcheck.health_port({}, argvs) == port
    python = [["/usr/local/bin/python3.11", "/usr/local/bin/sluice", name]]
    assert healthcheck.health_port({f"SLUICE_{name.upper()}_PORT": "9999"}, python) == 9999


def test_healthcheck_port_override_wins(healthcheck: ModuleType) -> None:
    assert healthcheck.health_port({"HEALTHCHECK_PORT": "7000"}, [["sluice", "runner"]]) == 7000


def test_healthcheck_without_a_sluice_process_fails(healthcheck: ModuleType) -> None:
    with pytest.raises(SystemExit):
        healthcheck.health_port({}, [["sh"], ["sluice", "dev"]])


class Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthz_port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_exits_zero_when_healthz_answers(
    healthcheck: ModuleType, healthz_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHCHECK_PORT", str(healthz_port))
    assert healthcheck.main() == 0


def test_healthcheck_exits_one_when_nothing_listens(
    healthcheck: ModuleType, healthz_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHCHECK_PORT", "1")
    assert healthcheck.main() == 1


def locked(name: str) -> dict[str, tuple[str, list[str]]]:
    """{package: (version, hashes)} of a lock written by `make lock`."""
    text = re.sub(r"\\\n", " ", (ROOT / name).read_text())
    entries = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
            entries[match.group(1).lower().replace("_", "-")] = (match.group(2), hashes)
    return entries


def test_every_locked_dependency_carries_hashes() -> None:
    for name in ("requirements.lock", "requirements-build.lock"):
        entries = locked(name)
        assert entries, name
        for package, (version, hashes) in entries.items():
            assert hashes, f"{name}: {package}=={version} has no hash"


def test_lock_pins_what_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = locked("requirements.lock")
    for requirement in project["dependencies"]:
        name, version = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)", requirement).groups()  # type: ignore[union-attr]
        assert lock[name.lower()][0] == version, f"{requirement}: run `make lock`"
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert [r.split(">=")[0] for r in build] == list(locked("requirements-build.lock"))


def test_build_installs_only_hashed_locked_dependencies() -> None:
    runs = [args for instruction, args in instructions() if instruction == "RUN"]
    resolving = [run for run in runs if "pip wheel" in run or "pip install" in run]
    for run in resolving:
        for command in run.split("&&"):
            if "--no-index" in command or "--no-deps" in command:
                continue
            assert "--require-hashes" in command, command
            assert re.search(r"-r requirements(-build)?\.lock", command), command
    wheel_of_sluice = [r for r in runs if "pip wheel" in r and r.rstrip().endswith(" .")]
    assert wheel_of_sluice and "--no-build-isolation" in wheel_of_sluice[0]
