"""``sluice bench browser``: what a person sees in the chat page, timed in a real Chromium.

Each answer is sent from the chat page as a person sends it, and timed with the
page's Performance API: send to status visible, send to first token visible minus
the model's own time to first token (what sluice and the page add), and Stop to
text frozen (the last change of the answer's text after Stop was pressed). It needs
Debian's ``chromium`` and the ``playwright`` package (both in ``make test``'s
prerequisites); it downloads no browser.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from libs.tools.bench.stats import emit, line, summary
from libs.tools.browser import answer_timings, chromium, chromium_path, open_chat, stop_timing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--answers", type=int, default=20, help="answers timed (and as many Stops)")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer")
    parser.add_argument("--tokens-per-s", type=float, default=100.0, help="the model's speed")
    parser.add_argument("--ttft-ms", type=int, default=200, help="the model's time to first token")


async def _measure(args: argparse.Namespace, gateway: str) -> dict[str, list[float]]:
    sim = {"tokens": args.tokens, "tokens_per_s": args.tokens_per_s, "ttft_ms": args.ttft_ms}
    long_sim = {**sim, "tokens": 100_000}
    figures: dict[str, list[float]] = {"status": [], "first_token_over_model": [], "frozen": []}
    async with chromium() as context:
        page = await context.new_page()
        await open_chat(
            page, gateway, json.dumps({"model": "sim", "sim": sim, "max_tokens": 100_000})
        )
        for index in range(args.answers):
            timed = await answer_timings(page, f"question {index} about rivers and code")
            figures["status"].append(timed["status_ms"])
            figures["first_token_over_model"].append(
                timed["first_token_ms"] - timed["model_ttft_ms"]
            )
        await page.evaluate(
            "fields => { document.getElementById('options').value = fields; }",
            json.dumps({"model": "sim", "sim": long_sim, "max_tokens": 100_000}),
        )
        for index in range(args.answers):
            stopped = await stop_timing(page, f"stop {index}", after_chars=30, watch_ms=300)
            figures["frozen"].append(stopped["frozen_ms"])
            await page.wait_for_selector(
                "#history .turn:last-child .answer[data-state='cancelled']", timeout=30_000
            )
    return figures


def run(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    if chromium_path() is None:
        raise SystemExit("sluice bench browser: needs chromium (apt-get install chromium)")
    figures = asyncio.run(_measure(args, gateway))
    result = {
        "mode": "browser",
        "answers": args.answers,
        "send_to_status_visible_ms": summary(figures["status"]),
        "first_token_visible_minus_model_ttft_ms": summary(figures["first_token_over_model"]),
        "stop_to_text_frozen_ms": summary(figures["frozen"]),
    }
    emit(
        f"browser: {args.answers} answers of {args.tokens} tokens at {args.tokens_per_s:g} tokens/s"
        f" (model TTFT {args.ttft_ms} ms), then {args.answers} Stops, in headless Chromium",
        [
            line("send -> status visible", figures["status"]),
            line("first token visible - model TTFT", figures["first_token_over_model"]),
            line("Stop -> text frozen", figures["frozen"]),
        ],
        result,
        args.json,
    )
    return result
