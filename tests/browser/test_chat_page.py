"""The chat page as a person uses it, in headless Chromium: what the DOM shows, and when."""

from __future__ import annotations

import asyncio
import json
from itertools import islice
from typing import Any

import aiohttp
import pytest

from libs.client.http import SluiceClient
from libs.common.settings import Settings
from libs.tools.browser import answer_timings, open_chat, stop_timing
from services.runner.backends.sim import sim_tokens
from tests.browser.conftest import artifact
from tests.netcut import LinkedStack

pytestmark = pytest.mark.timeout(120)
LAST_ANSWER = "#history .turn:last-child .answer"
WAIT_MS = 30_000


def fields(tokens: int, tokens_per_s: float, ttft_ms: int = 50) -> str:
    sim = {"tokens": tokens, "tokens_per_s": tokens_per_s, "ttft_ms": ttft_ms}
    return json.dumps({"model": "sim", "sim": sim})


def expected_text(prompt: str, tokens: int) -> str:
    """The sim's answer to a conversation whose only message is ``prompt``."""
    return "".join(islice(sim_tokens(f"user: {prompt}", 0), tokens))


async def chat(linked: LinkedStack, page: Any, request_fields: str) -> Any:
    return await open_chat(page, linked.stack.gateway, request_fields)


async def raw_text(page: Any, selector: str = LAST_ANSWER) -> str:
    """The answer's Markdown as the page received it (what its copy button copies)."""
    text: str = await page.eval_on_selector(selector, "answer => answer.turn.text")
    return text


async def wait_state(page: Any, state: str, selector: str = LAST_ANSWER) -> None:
    await page.wait_for_selector(f"{selector}[data-state='{state}']", timeout=WAIT_MS)


async def send(page: Any, prompt: str) -> None:
    await page.fill("#prompt", prompt)
    await page.press("#prompt", "Enter")


async def test_status_comes_before_the_first_token_and_code_renders_as_code(
    linked: LinkedStack, page: Any
) -> None:
    prompt = "how do I read a file in python?"
    await chat(linked, page, fields(tokens=90, tokens_per_s=120, ttft_ms=600))
    timings = await answer_timings(page, prompt)
    assert timings["state"] == "done"
    assert timings["status_ms"] < timings["first_token_ms"]
    assert timings["first_token_ms"] >= timings["model_ttft_ms"] * 0.9
    assert await raw_text(page) == expected_text(prompt, 90)
    code = await page.text_content(f"{LAST_ANSWER} pre[data-language='python'] code")
    assert code is not None and code.startswith("def read_file(items):")
    figures = await page.text_content(f"{LAST_ANSWER} .figures")
    assert figures is not None and "90 tokens" in figures and "tokens/s" in figures


async def test_thinking_state_shows_until_the_first_token(linked: LinkedStack, page: Any) -> None:
    await chat(linked, page, fields(tokens=20, tokens_per_s=100, ttft_ms=3000))
    await send(page, "what is a sluice gate")
    await wait_state(page, "thinking")
    assert await page.text_content(f"{LAST_ANSWER} .state") == "thinking…"
    assert await page.text_content(f"{LAST_ANSWER} .body") == ""
    await wait_state(page, "done")


async def test_stop_freezes_the_text_at_once_and_done_reports_it(
    linked: LinkedStack, page: Any
) -> None:
    prompt = "tell me about rivers and tides"
    await chat(linked, page, fields(tokens=2000, tokens_per_s=50))
    stopped = await stop_timing(page, prompt, after_chars=40, watch_ms=1500)
    assert not stopped["changed_after_stop"]
    await wait_state(page, "cancelled")
    shown = await page.eval_on_selector(LAST_ANSWER, "a => a.turn.tokens")
    assert await raw_text(page) == expected_text(prompt, shown)
    finished = await page.eval_on_selector(LAST_ANSWER, "a => Number(a.dataset.tokens)")
    assert shown <= finished < 2000
    figures = await page.text_content(f"{LAST_ANSWER} .figures")
    assert figures is not None and "cancel to stop" in figures
    assert await page.is_disabled("#stop")


async def test_network_loss_mid_answer_resumes_and_completes_exactly_once(
    linked: LinkedStack, page: Any
) -> None:
    prompt = "explain backpressure in streams"
    await chat(linked, page, fields(tokens=150, tokens_per_s=50))
    await send(page, prompt)
    await page.wait_for_function(
        f"document.querySelector({LAST_ANSWER!r} + ' .body').textContent.length > 40",
        timeout=WAIT_MS,
    )
    linked.link.cut()
    try:
        await wait_state(page, "reconnecting")
        await page.screenshot(path=artifact("network_loss_reconnecting"), full_page=True)
    finally:
        linked.link.restore()
    await wait_state(page, "done")
    assert await raw_text(page) == expected_text(prompt, 150)


async def test_edit_and_resend_supersedes_the_answer_in_flight(
    linked: LinkedStack, page: Any
) -> None:
    await chat(linked, page, fields(tokens=2000, tokens_per_s=40))
    await send(page, "write a long essay on rivers")
    first = "#history .turn:nth-child(1) .answer"
    await page.wait_for_function(
        f"document.querySelector({first!r} + ' .body').textContent.length > 20", timeout=WAIT_MS
    )
    await page.click("#history .turn:nth-child(1) .edit")
    assert await page.input_value("#prompt") == "write a long essay on rivers"
    await page.evaluate(
        "() => { document.getElementById('options').value = "
        + json.dumps(fields(tokens=30, tokens_per_s=200))
        + " }"
    )
    await send(page, "write a short note on rivers")
    await wait_state(page, "superseded", first)
    await wait_state(page, "done", "#history .turn:nth-child(2) .answer")
    assert await page.get_attribute(first, "data-finish-reason") == "superseded"
    second = await raw_text(page, "#history .turn:nth-child(2) .answer")
    assert second == expected_text("write a short note on rivers", 30)


async def test_a_multibyte_prompt_comes_back_in_the_answer(linked: LinkedStack, page: Any) -> None:
    await chat(linked, page, fields(tokens=12, tokens_per_s=200))
    await send(page, "héllo 你好 🌊")
    await wait_state(page, "done")
    shown = await page.text_content(f"{LAST_ANSWER} .body")
    assert shown is not None and shown.startswith(" On héllo, 你好 and 🌊:")


async def test_a_follow_up_carries_the_conversation_so_far(linked: LinkedStack, page: Any) -> None:
    await chat(linked, page, fields(tokens=10, tokens_per_s=300))
    await send(page, "what is a weir")
    await wait_state(page, "done")
    first = await raw_text(page)
    await send(page, "and a sluice?")
    await wait_state(page, "done", "#history .turn:nth-child(2) .answer")
    conversation = f"user: what is a weir\nassistant: {first}\nuser: and a sluice?"
    assert await raw_text(page) == "".join(islice(sim_tokens(conversation, 0), 10))


async def test_a_queued_answer_shows_its_position_then_runs(linked: LinkedStack, page: Any) -> None:
    """Every runner slot is held by a slow stream: the page's answer waits in line, visibly."""
    hold = {"tokens": 10_000, "tokens_per_s": 1, "ttft_ms": 0}
    async with aiohttp.ClientSession() as session:
        api = SluiceClient(session, linked.stack.gateway)
        blockers = await asyncio.gather(
            *(
                api.create(prompt="hold", sim=hold, max_tokens=10_000, abandon_after_s=None)
                for _ in range(Settings().runner_slots)
            )
        )
        try:
            await chat(linked, page, fields(tokens=10, tokens_per_s=300))
            await send(page, "is it my turn")
            await page.wait_for_selector(
                f"{LAST_ANSWER}[data-state='queued'] .state:text-is('queued · position 1')",
                timeout=WAIT_MS,
            )
            await page.screenshot(path=artifact("queued_position"), full_page=True)
            await api.cancel(blockers[0]["id"])
            await wait_state(page, "done")
        finally:
            await asyncio.gather(*(api.cancel(blocker["id"]) for blocker in blockers))
    assert await raw_text(page) == expected_text("is it my turn", 10)
