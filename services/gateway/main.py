"""``sluice gateway``: the control plane: create, inspect and cancel streams; WebSocket control."""

from __future__ import annotations

from libs.common.service import run
from libs.common.settings import load_settings
from services.gateway.app import create_app


def main() -> None:
    settings = load_settings()
    run(create_app(settings), settings.gateway_port)
