"""``sluice streamer``: serve token streams to clients as Server-Sent Events."""

from __future__ import annotations

from libs.common.service import run
from libs.common.settings import load_settings
from services.streamer.app import create_app


def main() -> None:
    settings = load_settings()
    run(create_app(settings), settings.streamer_port)
