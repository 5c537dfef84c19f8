"""``sluice runner``: drive a model backend for the streams the coordinator places here."""

from __future__ import annotations

from libs.common.service import run
from libs.common.settings import load_settings
from services.runner.app import create_app


def main() -> None:
    settings = load_settings()
    run(create_app(settings), settings.runner_port)
