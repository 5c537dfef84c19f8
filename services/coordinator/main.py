"""``sluice coordinator``: admit, queue and place streams; supersede and debounce."""

from __future__ import annotations

from libs.common.service import run
from libs.common.settings import load_settings
from services.coordinator.app import create_app


def main() -> None:
    settings = load_settings()
    run(create_app(settings), settings.coordinator_port)
