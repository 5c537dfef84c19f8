"""The browser SDK on its own, in Chromium: batching, duplicate frames, control, refusals, CORS."""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

import aiohttp
import pytest

from libs.client.http import SluiceClient
from libs.tools.stack import Stack
from services.runner.backends.sim import sim_reasoning, sim_tokens
from tests.netcut import LinkedStack

pytestmark = pytest.mark.timeout(120)

STREAM_ALL = """
async ([body, skipTo]) => {
  const { Sluice } = await import("/sdk/sluice.js");
  let frames = 0, counting = true;
  const tick = () => { frames += 1; if (counting) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  const batches = [];
  const done = await new Promise((resolve, reject) => {
    new Sluice().stream(body, {
      tokens: (batch) => batches.push(batch.map((t) => [t.seq, t.n, t.text, t.channel])),
      done: resolve,
      error: (e) => reject(new Error(e.message)),
    }).then((stream) => { if (skipTo) stream.lastSeq = skipTo; }, reject);
  });
  counting = false;
  return { batches, frames, done };
}
"""


async def sdk_page(linked: LinkedStack, page: Any) -> Any:
    await page.goto(linked.stack.gateway + "/")
    await page.wait_for_selector("body[data-ready='1']")
    return page


def body(prompt: str, tokens: int, tokens_per_s: float) -> dict[str, Any]:
    sim = {"tokens": tokens, "tokens_per_s": tokens_per_s, "ttft_ms": 0}
    return {"model": "sim", "prompt": prompt, "sim": sim}


async def test_tokens_come_in_order_at_most_once_per_animation_frame(
    linked: LinkedStack, page: Any
) -> None:
    await sdk_page(linked, page)
    result = await page.evaluate(STREAM_ALL, [body("batching", 250, 4000), 0])
    batches = result["batches"]
    assert len(batches) <= result["frames"] + 1
    tokens = [token for batch in batches for token in batch]
    firsts = [seq - n + 1 for seq, n, _, _ in tokens]
    assert firsts == [1] + [seq + 1 for seq, _, _, _ in tokens[:-1]]
    assert tokens[-1][0] == 250 == result["done"]["tokens"]
    text = "".join(text for _, _, text, _ in tokens)
    assert text == "".join(islice(sim_tokens("batching", 0), 250))
    assert {channel for _, _, _, channel in tokens} == {"text"}


async def test_a_frame_the_page_already_has_is_dropped(linked: LinkedStack, page: Any) -> None:
    """As after a resume that overlaps: frames up to the last seen seq never reach the page."""
    await sdk_page(linked, page)
    result = await page.evaluate(STREAM_ALL, [body("duplicates", 30, 40), 10])
    seqs = [seq for batch in result["batches"] for seq, _, _, _ in batch]
    assert seqs and min(seqs) > 10 and seqs[-1] == 30
    assert len(seqs) == len(set(seqs))


async def test_control_frames_are_acknowledged_and_bad_ones_rejected(
    linked: LinkedStack, page: Any
) -> None:
    await sdk_page(linked, page)
    result = await page.evaluate(
        """async (body) => {
          const { Sluice, SluiceError } = await import("/sdk/sluice.js");
          const sluice = new Sluice();
          const stream = await sluice.stream(body, {});
          const pace = await stream.pace(5);
          const feedback = await stream.feedback(1, "useful");
          let refused = null;
          try { await stream.feedback(3); } catch (e) { refused = [e instanceof SluiceError, e.type]; }
          await stream.cancel();
          return { pace: pace.type, feedback: feedback.type, refused };
        }""",
        body("control", 2000, 20),
    )
    assert result == {"pace": "ack", "feedback": "ack", "refused": [True, "invalid_request"]}


async def test_a_refused_create_rejects_with_the_contract_error(
    linked: LinkedStack, page: Any
) -> None:
    await sdk_page(linked, page)
    error = await page.evaluate(
        """async () => {
          const { Sluice } = await import("/sdk/sluice.js");
          try { await new Sluice().create({ prompt: "x", debounce_ms: -1 }); return null; }
          catch (e) { return [e.name, e.type, e.status, e.retryable]; }
        }"""
    )
    assert error == ["SluiceError", "invalid_request", 400, False]


async def test_a_streamer_that_does_not_list_the_origin_cannot_be_read(
    linked: LinkedStack, page: Any, stack: Stack
) -> None:
    """The session suite's streamer admits only its own gateway's page, not this one."""
    async with aiohttp.ClientSession() as session:
        created = await SluiceClient(session, stack.gateway).create(
            prompt="elsewhere", sim={"tokens": 5}
        )
    await sdk_page(linked, page)
    state = await page.evaluate(
        """(url) => new Promise((resolve) => {
          const source = new EventSource(url);
          source.onmessage = () => resolve("read");
          source.addEventListener("status", () => resolve("read"));
          source.onerror = () => { resolve(source.readyState === EventSource.CLOSED ? "refused" : "retrying"); source.close(); };
        })""",
        created["events_url"],
    )
    assert state == "refused"


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


async def test_the_answer_adds_up_each_channel_as_done_reports_it(
    linked: LinkedStack, page: Any
) -> None:
    """Reasoning first, then a tool call in fragments: `stream.answer` holds both exactly."""
    await sdk_page(linked, page)
    sim = {"tokens_per_s": 400, "ttft_ms": 0, "seed": 3, "reasoning_tokens": 25}
    request = {"model": "sim", "prompt": "weather?", "tools": [WEATHER], "sim": sim}
    result = await page.evaluate(
        """async (body) => {
          const { Sluice } = await import("/sdk/sluice.js");
          const channels = [];
          const [done, stream] = await new Promise((resolve, reject) => {
            new Sluice().stream(body, {
              tokens: (batch) => channels.push(...batch.map((t) => t.channel)),
              done: (d, s) => resolve([d, s]),
              error: (e) => reject(new Error(e.message)),
            }).catch(reject);
          });
          const answer = stream.answer;
          return { done, channels, text: answer.text, reasoning: answer.reasoning,
                   calls: answer.toolCalls() };
        }""",
        request,
    )
    done = result["done"]
    assert done["finish_reason"] == "tool_calls" and done["reasoning_tokens"] == 25
    assert result["reasoning"] == "".join(islice(sim_reasoning("weather?", 3), 25))
    assert result["text"] == ""
    assert result["calls"] == done["tool_calls"]
    [call] = result["calls"]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert set(json.loads(call["arguments"])) == {"city", "days"}
    assert result["channels"][0] == "reasoning" and result["channels"][-1] == "tool_call"


async def test_the_answer_appends_fragments_in_linear_time(linked: LinkedStack, page: Any) -> None:
    """200,000 fragments, id and name repeated on each as some servers do: exact, and far
    from quadratic (re-reading the arguments per fragment would take minutes here)."""
    await sdk_page(linked, page)
    result = await page.evaluate(
        """async () => {
          const { Answer } = await import("/sdk/sluice.js");
          const answer = new Answer();
          const started = performance.now();
          for (let i = 0; i < 200000; i++) {
            const call = i % 2;
            answer.add({ channel: "tool_call", text: `"${i}",`,
                         tool_call: { index: call, id: `call_${call}`, name: "f" } });
          }
          answer.add({ channel: "reasoning", text: "hm" });
          answer.add({ channel: "text", text: "ok" });
          const calls = answer.toolCalls();
          return { ms: performance.now() - started, calls: calls.map((c) => [c.id, c.name, c.arguments.length]),
                   head: calls[1].arguments.slice(0, 12), text: answer.text, reasoning: answer.reasoning };
        }"""
    )
    lengths = [sum(len(f'"{i}",') for i in range(parity, 200_000, 2)) for parity in (0, 1)]
    assert result["calls"] == [["call_0", "f", lengths[0]], ["call_1", "f", lengths[1]]]
    assert result["head"] == '"1","3","5",'
    assert (result["text"], result["reasoning"]) == ("ok", "hm")
    assert result["ms"] < 5000
