"""The chat page in headless Chromium, against the suite whose streamer sits behind a cuttable link.

The page comes from the gateway and reads SSE from another origin (the link in front
of the streamer), as under ``sluice dev``, so CORS is exercised by every test.
Screenshots go to ``tests/artifacts/browser/``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from libs.tools.browser import chromium, chromium_path

ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "browser"

if chromium_path() is None:
    pytest.skip(
        "no chromium on PATH (apt-get install chromium fonts-liberation; .ci/run does)",
        allow_module_level=True,
    )
if importlib.util.find_spec("playwright") is None:
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)


def artifact(name: str) -> str:
    """Where a test keeps the screenshot ``name`` (a .png under the artifacts folder)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / f"{name}.png")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as context:
        yield context


@pytest.fixture
async def page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh tab whose last look is kept as a screenshot; an uncaught script error fails the test."""
    tab = await browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    assert errors == [], f"the page threw: {errors}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    await tab.close()
