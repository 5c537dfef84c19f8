"""``sluice ... --help`` prints plain help and starts nothing."""

from __future__ import annotations

import importlib

import pytest

from libs.tools import cli
from libs.tools.bench import modes

COMMANDS = [*cli.SERVICES, *cli.TOOLS]


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"] if argv else ["--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("service", list(cli.SERVICES))
def test_a_service_prints_help_and_does_not_start(
    service: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    module = importlib.import_module(f"services.{service}.main")
    monkeypatch.setattr(module, "main", lambda: started.append(service))
    text = help_of(capsys, service)
    assert text.startswith(f"usage: sluice {service}")
    assert f"SLUICE_{service.upper()}_PORT" in text
    assert started == []


@pytest.mark.parametrize(
    "argv", [[], *([c] for c in COMMANDS), *(["bench", m] for m in modes())], ids=str
)
def test_help_texts_are_plain_words(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, *argv)
    assert "usage:" in text
    for markup in ("``", ":class:", ":func:", ":mod:", ":data:", "add_arguments", "SUITE_ENV"):
        assert markup not in text


def test_the_overview_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys)
    assert all(f"  {command} " in text for command in COMMANDS)


def test_an_unknown_command_is_refused_with_the_overview() -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["gatway"])
    assert "unknown command 'gatway'" in str(exited.value.code)


def test_a_service_refuses_arguments_it_does_not_take(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["gateway", "--port", "9"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --port 9" in capsys.readouterr().err
