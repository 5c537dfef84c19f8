"""The chat page in a real Chromium, for the browser tests and ``sluice bench browser``.

Playwright drives Debian's ``chromium`` (no browser download) through a fresh,
empty profile. The timings are taken inside the page with the Performance API and
a ``MutationObserver``, so they measure what a person sees: the moment the DOM
shows the status, the first token, or stops changing after Stop.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """The system's Chromium, or None (``apt-get install chromium`` provides it)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A Playwright browser context on the system Chromium with a new empty profile."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no chromium on PATH: apt-get install -y chromium fonts-liberation")
    with tempfile.TemporaryDirectory(prefix="sluice-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                Path(profile),
                executable_path=executable,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1100, "height": 800},
            )
            try:
                yield context
            finally:
                await context.close()


async def open_chat(page: Any, gateway: str, request_fields: str, query: str = "") -> Any:
    """Load the chat page (with ``query``, e.g. ``?tools=demo``) in ``page``, its request
    fields set to the JSON ``request_fields``."""
    await page.goto(gateway.rstrip("/") + "/" + query)
    await page.wait_for_selector("body[data-ready='1']")
    await page.evaluate(
        "fields => { document.getElementById('options').value = fields; }", request_fields
    )
    return page


ANSWER_TIMINGS = """
async (prompt) => {
  const box = document.getElementById("prompt");
  box.value = prompt;
  const sent = performance.now();
  document.getElementById("composer").requestSubmit();
  const answer = document.querySelector("#history .turn:last-child .answer");
  const body = answer.querySelector(".body");
  const seen = {};
  await new Promise((resolve) => {
    const look = () => {
      const state = answer.dataset.state;
      const now = performance.now();
      if (seen.status === undefined && ["queued", "thinking", "streaming"].includes(state)) seen.status = now;
      if (seen.token === undefined && body.textContent.length) seen.token = now;
      if (["done", "cancelled", "superseded", "error"].includes(state)) { observer.disconnect(); resolve(); }
    };
    const observer = new MutationObserver(look);
    observer.observe(answer, { subtree: true, childList: true, characterData: true, attributes: true });
    look();
  });
  return {
    status_ms: seen.status - sent,
    first_token_ms: seen.token - sent,
    model_ttft_ms: Number(answer.dataset.ttftMs),
    state: answer.dataset.state,
    text: body.textContent,
  };
}
"""

STOP_TIMING = """
async ([prompt, afterChars, watchMs]) => {
  document.getElementById("prompt").value = prompt;
  document.getElementById("composer").requestSubmit();
  const answer = document.querySelector("#history .turn:last-child .answer");
  const body = answer.querySelector(".body");
  await new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (body.textContent.length >= afterChars) { observer.disconnect(); resolve(); }
    });
    observer.observe(body, { subtree: true, childList: true, characterData: true });
  });
  const pressed = performance.now();
  document.getElementById("stop").click();
  const frozenText = body.textContent;
  let lastChange = pressed;
  const observer = new MutationObserver(() => { lastChange = performance.now(); });
  observer.observe(body, { subtree: true, childList: true, characterData: true });
  const handled = performance.now();
  await new Promise((resolve) => setTimeout(resolve, watchMs));
  observer.disconnect();
  return {
    frozen_ms: Math.max(lastChange, handled) - pressed,
    changed_after_stop: body.textContent !== frozenText,
    text_at_stop: frozenText,
  };
}
"""


async def answer_timings(page: Any, prompt: str) -> dict[str, Any]:
    """Send ``prompt`` and time its status, first token and end as they appear in the DOM."""
    result: dict[str, Any] = await page.evaluate(ANSWER_TIMINGS, prompt)
    return result


async def stop_timing(
    page: Any, prompt: str, after_chars: int = 40, watch_ms: int = 1500
) -> dict[str, Any]:
    """Send ``prompt``, press Stop once ``after_chars`` are shown, and time until the text froze."""
    result: dict[str, Any] = await page.evaluate(STOP_TIMING, [prompt, after_chars, watch_ms])
    return result
