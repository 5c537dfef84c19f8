"""The image as shipped: built by `make image` with podman, each service run from it.

Marked `image`: it builds the image (minutes on a cold machine) with podman, so it
runs only with SLUICE_IMAGE_TESTS=1 (see deploy_support.image_test_marks).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from deploy_support import DEPLOY, PODMAN_ENV, ROOT, SERVICES, image_test_marks, podman

from libs.tools.servers import Server, free_port, nats_server, redis_server

pytestmark = image_test_marks()

IMAGE = "localhost/sluice:deploy-test"


@pytest.fixture(scope="module")
def image() -> str:
    """`make image`'s script, as CI and a developer run it."""
    done = subprocess.run(
        [str(DEPLOY / "docker" / "build-image.sh"), IMAGE],
        cwd=ROOT,
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return IMAGE


@pytest.fixture(scope="module")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp("image-backing")
    nats = nats_server(workdir=workdir).start()
    redis = redis_server(workdir=workdir).start()
    try:
        yield nats, redis
    finally:
        nats.stop()
        redis.stop()


def ready(port: int, timeout_s: float = 90) -> dict[str, object]:
    """/readyz's answer once it says ready; fails with the last answer after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as answer:
                body: dict[str, object] = json.loads(answer.read())
                if body.get("ready") is True:
                    return body
                last = body
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"/readyz on {port} not ready within {timeout_s}s: {last}")


@pytest.fixture(scope="module", params=sorted(SERVICES))
def container(
    request: pytest.FixtureRequest, image: str, backing: tuple[Server, Server]
) -> Iterator[tuple[str, int]]:
    """One service from the image, locked down as docker-compose.yml runs it."""
    service: str = request.param
    nats, redis = backing
    port = free_port()
    name = f"sluice-test-{service}-{os.getpid()}"
    podman(
        "run", "--detach", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--env", f"SLUICE_NATS_URL={nats.url}", "--env", f"SLUICE_REDIS_URL={redis.url}",
        "--env", f"SLUICE_{service.upper()}_PORT={port}",
        image, service,
    )  # fmt: skip
    try:
        ready(port)
        yield name, port
    finally:
        logs = podman("logs", name, check=False)
        print(f"--- {name} ---\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        podman("rm", "--force", "--time", "10", name, check=False)


def test_service_is_ready_from_the_image(container: tuple[str, int]) -> None:
    _, port = container
    assert ready(port) == {"ready": True, "nats": True, "redis": True}


def test_healthcheck_command_passes_in_the_container(container: tuple[str, int]) -> None:
    name, _ = container
    config = json.loads(podman("inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout)
    assert config["Test"] == ["CMD", "python", "/usr/local/bin/sluice-healthcheck"]
    assert podman("healthcheck", "run", name, check=False).returncode == 0


def test_runs_as_the_unprivileged_user(container: tuple[str, int]) -> None:
    name, _ = container
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    assert podman("exec", name, "id", "-g").stdout.strip() == "10001"


def test_root_filesystem_is_read_only_and_tmp_writable(container: tuple[str, int]) -> None:
    name, _ = container
    refused = podman("exec", name, "touch", "/usr/local/lib/probe", check=False)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    podman("exec", name, "touch", "/tmp/probe")


def test_healthcheck_fails_when_the_service_stops_answering(
    image: str, backing: tuple[Server, Server]
) -> None:
    """The HEALTHCHECK is not a constant: pointed at a port nothing serves, it fails."""
    name = f"sluice-test-unhealthy-{os.getpid()}"
    podman(
        "run", "--detach", "--name", name, "--network", "host", "--read-only",
        "--env", f"SLUICE_RUNNER_PORT={free_port()}", "--env", f"HEALTHCHECK_PORT={free_port()}",
        "--env", f"SLUICE_NATS_URL={backing[0].url}", "--env", f"SLUICE_REDIS_URL={backing[1].url}",
        image, "runner",
    )  # fmt: skip
    try:
        assert podman("healthcheck", "run", name, check=False).returncode != 0
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)
