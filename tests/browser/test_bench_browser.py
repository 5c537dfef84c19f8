"""``sluice bench browser`` reports the three figures a person feels, measured in Chromium."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from libs.tools.servers import child_env
from tests.netcut import LinkedStack

pytestmark = pytest.mark.timeout(180)


async def test_bench_browser_times_answers_and_stops(linked: LinkedStack, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [
        *(sys.executable, "-m", "libs.tools.cli", "bench", "browser"),
        *("--gateway", linked.stack.gateway, "--answers", "3", "--json", str(out)),
    ]
    finished = await asyncio.to_thread(
        subprocess.run, command, env=child_env({}), capture_output=True, timeout=150
    )
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    figures = json.loads(out.read_text())
    for key in (
        "send_to_status_visible_ms",
        "first_token_visible_minus_model_ttft_ms",
        "stop_to_text_frozen_ms",
    ):
        assert figures[key]["n"] == 3
        assert 0 <= figures[key]["p50"] <= figures[key]["max"] < 10_000
