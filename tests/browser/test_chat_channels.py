"""Reasoning and tool calls on the chat page, in headless Chromium: what a person sees.

The page asks for them through its address (``?reasoning=N&tools=demo``). Each answer
is checked against the same request replayed by a plain client, so the card's final
arguments are compared with an independent ``done``.
"""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

import aiohttp
import pytest

from libs.client.http import SluiceClient
from libs.tools.browser import open_chat
from services.runner.backends.sim import sim_reasoning
from tests.browser.conftest import artifact
from tests.integration.helpers import final, read_stream
from tests.netcut import LinkedStack

pytestmark = pytest.mark.timeout(120)
ANSWER = "#history .turn:last-child .answer"
CARD = f"{ANSWER} .tool-call"
WAIT_MS = 30_000

COUNT_REDRAWS = """() => {
  window.redrawnWhileForming = 0;
  new MutationObserver((records) => {
    for (const record of records) {
      const card = record.target.closest && record.target.closest(".tool-call");
      if (card && record.removedNodes.length && !card.dataset.complete) window.redrawnWhileForming += 1;
    }
  }).observe(document.getElementById("history"), { subtree: true, childList: true });
}"""


def fields(tokens_per_s: float) -> str:
    return json.dumps({"model": "sim", "sim": {"tokens_per_s": tokens_per_s, "ttft_ms": 50}})


async def send(page: Any, prompt: str) -> None:
    await page.fill("#prompt", prompt)
    await page.press("#prompt", "Enter")


async def wait_until(page: Any, condition: str) -> Any:
    """Waits for a JS expression over ``answer`` (the last answer element) to be truthy; its value."""
    handle = await page.wait_for_function(
        f"() => {{ const answer = document.querySelector({ANSWER!r}); return answer && ({condition}); }}",
        timeout=WAIT_MS,
    )
    return await handle.json_value()


async def replayed_done(linked: LinkedStack, page: Any) -> dict[str, Any]:
    """``done`` of the page's last request sent again by a plain client (the sim is deterministic)."""
    request = await page.eval_on_selector(ANSWER, "answer => answer.turn.request")
    body = {k: v for k, v in request.items() if k not in ("conversation_id", "supersede")}
    async with aiohttp.ClientSession() as session:
        created = await SluiceClient(session, linked.stack.gateway).create(**body)
        done: dict[str, Any] = final(await read_stream(session, created["events_url"])).json()
    return done


def pretty(arguments: str) -> str:
    """The arguments as the page shows a complete call: JSON indented by two."""
    return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)


async def test_reasoning_streams_collapsed_and_the_tool_card_ends_with_dones_arguments(
    linked: LinkedStack, page: Any
) -> None:
    prompt = "what is the weather in Lisbon?"
    await open_chat(page, linked.stack.gateway, fields(tokens_per_s=40), "?reasoning=40&tools=demo")
    await page.evaluate(COUNT_REDRAWS)
    await send(page, prompt)

    thinking = await wait_until(
        page,
        "answer.querySelector('.reasoning[data-state=streaming] .reasoning-text')?.textContent.length > 0"
        " && [answer.querySelector('.reasoning').open,"
        " answer.querySelector('.reasoning summary').textContent]",
    )
    assert thinking == [False, "thinking…"]
    await page.screenshot(path=artifact("reasoning_streaming"), full_page=True)
    forming = await wait_until(
        page,
        "(() => { const card = answer.querySelector('.tool-call:not([data-complete])');"
        " return card && card.querySelector('.tool-arguments').textContent.length > 4"
        " && [card.querySelector('.tool-name').textContent,"
        " card.querySelector('.tool-arguments').textContent,"
        " card.querySelector('.tool-status').textContent]; })()",
    )
    await page.screenshot(path=artifact("tool_call_forming"), full_page=True)
    await page.wait_for_selector(f"{ANSWER}[data-state='done']", timeout=WAIT_MS)

    done = await replayed_done(linked, page)
    [call] = done["tool_calls"]
    assert forming[0] == call["name"] == "get_weather" and forming[2] == "forming…"
    assert call["arguments"].startswith(forming[1]) and forming[1] != call["arguments"]
    assert await page.get_attribute(ANSWER, "data-finish-reason") == "tool_calls"
    assert await page.text_content(f"{ANSWER} .state") == "answered with a tool call"
    assert await page.text_content(f"{CARD} .tool-name") == "get_weather"
    assert await page.text_content(f"{CARD} .tool-status") == "complete"
    assert await page.text_content(f"{CARD} .tool-arguments") == pretty(call["arguments"])
    assert await page.eval_on_selector(ANSWER, "a => a.turn.stream.answer.toolCalls()") == [call]
    assert await page.evaluate("() => window.redrawnWhileForming") == 0

    reasoning = f"{ANSWER} .reasoning"
    assert await page.eval_on_selector(reasoning, "details => details.open") is False
    assert await page.text_content(f"{reasoning} summary") == "thought · 40 tokens"
    expected = "".join(islice(sim_reasoning(f"user: {prompt}", 0), 40))
    assert await page.text_content(f"{reasoning} .reasoning-text") == expected
    assert not await page.is_visible(f"{reasoning} .reasoning-text")
    await page.click(f"{reasoning} summary")
    assert await page.is_visible(f"{reasoning} .reasoning-text")


async def test_a_network_cut_mid_tool_call_leaves_the_card_exact(
    linked: LinkedStack, page: Any
) -> None:
    await open_chat(page, linked.stack.gateway, fields(tokens_per_s=6), "?tools=demo")
    await send(page, "weather for the weekend in Porto?")
    await wait_until(
        page,
        "answer.querySelector('.tool-call:not([data-complete]) .tool-arguments')?.textContent.length > 0",
    )
    linked.link.cut()
    try:
        await page.wait_for_selector(f"{ANSWER}[data-state='reconnecting']", timeout=WAIT_MS)
        assert await page.get_attribute(CARD, "data-complete") is None
        await page.screenshot(path=artifact("tool_call_reconnecting"), full_page=True)
    finally:
        linked.link.restore()
    await page.wait_for_selector(f"{ANSWER}[data-state='done']", timeout=WAIT_MS)

    done = await replayed_done(linked, page)
    [call] = done["tool_calls"]
    assert await page.eval_on_selector(ANSWER, "a => a.turn.stream.answer.toolCalls()") == [call]
    assert await page.text_content(f"{CARD} .tool-arguments") == pretty(call["arguments"])
    assert await page.get_attribute(CARD, "data-complete") == "true"
    assert await page.locator(CARD).count() == 1


async def test_an_unknown_tools_preset_is_refused_before_anything_is_sent(
    linked: LinkedStack, page: Any
) -> None:
    await open_chat(page, linked.stack.gateway, fields(tokens_per_s=100), "?tools=everything")
    await send(page, "anything")
    await page.wait_for_selector(f"{ANSWER}[data-state='error']", timeout=WAIT_MS)
    state = await page.text_content(f"{ANSWER} .state")
    assert state == 'error: unknown tools preset "everything" (the page knows "demo")'
    assert await page.get_attribute(ANSWER, "data-stream-id") is None


async def test_a_bad_reasoning_count_gets_the_servers_error(linked: LinkedStack, page: Any) -> None:
    await open_chat(page, linked.stack.gateway, fields(tokens_per_s=100), "?reasoning=-3")
    await send(page, "anything")
    await page.wait_for_selector(f"{ANSWER}[data-state='error']", timeout=WAIT_MS)
    state = await page.text_content(f"{ANSWER} .state")
    assert state is not None and "reasoning_tokens" in state and ">= 0" in state


async def test_stop_mid_tool_call_leaves_the_card_raw_and_marked_incomplete(
    linked: LinkedStack, page: Any
) -> None:
    await open_chat(page, linked.stack.gateway, fields(tokens_per_s=4), "?tools=demo")
    await send(page, "weather in Faro?")
    await wait_until(page, "answer.querySelector('.tool-arguments')?.textContent.length > 0")
    await page.click("#stop")
    await page.wait_for_selector(f"{ANSWER}[data-state='cancelled']", timeout=WAIT_MS)
    [call] = await page.eval_on_selector(ANSWER, "a => a.turn.stream.answer.toolCalls()")
    assert call["name"] == "get_weather" and call["arguments"]
    assert await page.text_content(f"{CARD} .tool-arguments") == call["arguments"]
    assert await page.text_content(f"{CARD} .tool-status") == "incomplete"
    assert await page.get_attribute(CARD, "data-complete") is None
