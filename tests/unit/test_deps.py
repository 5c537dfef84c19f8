"""``make deps``: installs only what is missing, and as a user names the one command to run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from libs.tools import deps
from tests.unit.helpers import executable


def test_deps_lists_only_the_tools_missing_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(tmp_path, "chromium")
    executable(tmp_path, "nginx")
    executable(tmp_path, "openssl")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert deps.missing() == ["promtool"]
    assert deps.packages(deps.missing()) == ["prometheus"]


def test_deps_names_the_one_command_to_run() -> None:
    assert "Run once: sudo make deps" in deps.advice(["promtool"], apt=True)
    assert "package manager (Debian: prometheus)" in deps.advice(["promtool"], apt=False)


def test_deps_as_a_user_fails_with_that_command_and_installs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    executable(tmp_path, "apt-get")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(deps, "install", lambda tools: pytest.fail("installed as a user"))
    assert deps.main() == 1
    assert "sudo make deps" in capsys.readouterr().err


def test_image_deps_name_podman_and_debootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    executable(tmp_path, "apt-get")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(deps.LOCATIONS, "dnsname", str(tmp_path / "cni" / "dnsname"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert deps.main(["--image"]) == 1
    assert (
        "podman runc catatonit golang-github-containernetworking-plugin-dnsname debootstrap"
        in capsys.readouterr().err
    )


def test_the_image_tools_bring_what_compose_needs_of_podman() -> None:
    compose = (Path(__file__).parents[2] / "docker-compose.yml").read_text()
    assert "init: true" in compose  # podman runs catatonit for it, a package of its own
    assert "nats://nats:4222" in compose  # service names resolve through CNI's dnsname
    packages = deps.packages(list(deps.IMAGE_TOOLS))
    assert {"catatonit", "golang-github-containernetworking-plugin-dnsname"} <= set(packages)


def test_a_tool_that_is_no_command_is_looked_for_where_its_package_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in ("podman", "catatonit", "debootstrap"):
        executable(tmp_path, command)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(deps.LOCATIONS, "dnsname", str(tmp_path / "cni" / "dnsname"))
    assert deps.missing(deps.IMAGE_TOOLS) == ["dnsname"]
    executable(tmp_path / "cni", "dnsname")
    assert deps.missing(deps.IMAGE_TOOLS) == []
