"""``sluice bench upstream``: the same OpenAI-compatible model, called directly and through sluice.

The benchmark serves a paced model itself (``--tokens`` tokens, one every
``--interval-ms``, each stamped when sent), so both routes see the same upstream and
every token's latency is measured on one clock: receive time minus send time. The
suite it starts knows that model as ``upstream``; against a running suite
(``--gateway``), configure ``SLUICE_MODELS`` with the printed URL yourself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import aiohttp
from aiohttp import web

from libs.client.http import SluiceClient, events
from libs.common.sse import SSEParser
from libs.tools.bench.stats import emit, line, summary
from libs.tools.servers import free_port

PORT = free_port()
MODEL = "upstream"
SUITE_ENV = {
    "SLUICE_MODELS": json.dumps({MODEL: {"base_url": f"http://127.0.0.1:{PORT}/v1"}}),
    "SLUICE_TENANT_MAX_STREAMS": "100000",
}
TOKEN = re.compile(r"t(\d+) ")


class PacedModel:
    """An OpenAI-compatible chat endpoint that answers ``t0 t1 ...`` at a fixed pace."""

    def __init__(self, tokens: int, interval_s: float) -> None:
        self.tokens, self.interval_s = tokens, interval_s
        self.sent: dict[str, list[float]] = {}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = body["messages"][-1]["content"]
        stamps = self.sent[key] = []
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = time.monotonic()
        for index in range(self.tokens):
            await asyncio.sleep(max(0.0, start + index * self.interval_s - time.monotonic()))
            stamps.append(time.monotonic())
            delta = {"choices": [{"index": 0, "delta": {"content": f"t{index} "}}]}
            await response.write(b"data: " + json.dumps(delta).encode() + b"\n\n")
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
        return response


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=20, help="concurrent streams per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, alternating the routes")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per answer")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="the model's token pace")


async def _direct(session: aiohttp.ClientSession, key: str) -> tuple[float, dict[int, float]]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": key}], "stream": True}
    arrivals: dict[int, float] = {}
    started = time.monotonic()
    async with session.post(f"http://127.0.0.1:{PORT}/v1/chat/completions", json=body) as answer:
        parser = SSEParser()
        async for chunk in answer.content.iter_any():
            now = time.monotonic()
            for event in parser.feed(chunk):
                if event.data != "[DONE]":
                    for choice in json.loads(event.data)["choices"]:
                        _arrived(choice["delta"].get("content") or "", now, arrivals)
    return started, arrivals


async def _through_sluice(client: SluiceClient, key: str) -> tuple[float, dict[int, float]]:
    arrivals: dict[int, float] = {}
    started = time.monotonic()
    created = await client.create(model=MODEL, messages=[{"role": "user", "content": key}])
    async for received in events(client.session, created["events_url"]):
        if received.type == "token":
            _arrived(received.json()["text"], time.monotonic(), arrivals)
    return started, arrivals


def _arrived(text: str, now: float, arrivals: dict[int, float]) -> None:
    for match in TOKEN.finditer(text):
        arrivals[int(match.group(1))] = now


async def _measure(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    model = PacedModel(args.tokens, args.interval_ms / 1000)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", model.chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    ttft: dict[str, list[float]] = {"direct": [], "sluice": []}
    latency: dict[str, list[float]] = {"direct": [], "sluice": []}
    incomplete = 0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            client = SluiceClient(session, gateway)
            for round_ in range(args.rounds):
                for route in ("direct", "sluice"):
                    keys = [f"{route} {round_} {i}" for i in range(args.streams)]
                    if route == "direct":
                        calls = [_direct(session, key) for key in keys]
                    else:
                        calls = [_through_sluice(client, key) for key in keys]
                    results = await asyncio.gather(*calls)
                    for key, (started, arrivals) in zip(keys, results, strict=True):
                        sent = model.sent.get(key, [])
                        if sorted(arrivals) != list(range(args.tokens)):
                            incomplete += 1
                            continue
                        ttft[route].append((arrivals[0] - started) * 1000)
                        latency[route] += [(arrivals[i] - sent[i]) * 1000 for i in arrivals]
    finally:
        await runner.cleanup()
    return {"ttft": ttft, "latency": latency, "incomplete": incomplete}


def run(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    print(f"upstream model served at http://127.0.0.1:{PORT}/v1 as {MODEL!r}")
    figures = asyncio.run(_measure(args, gateway))
    ttft, latency = figures["ttft"], figures["latency"]
    result = {
        "mode": "upstream",
        **{f"{route}_ttft_ms": summary(ttft[route]) for route in ttft},
        **{f"{route}_token_latency_ms": summary(latency[route]) for route in latency},
        "incomplete_streams": figures["incomplete"],
    }
    emit(
        f"upstream: {args.rounds} rounds x {args.streams} streams x {args.tokens} tokens, "
        f"one every {args.interval_ms:g} ms; direct vs through sluice (native SSE)",
        [
            line("time to first token, direct", ttft["direct"]),
            line("time to first token, sluice", ttft["sluice"]),
            line("per-token latency, direct", latency["direct"]),
            line("per-token latency, sluice", latency["sluice"]),
            f"  incomplete streams: {figures['incomplete']}",
        ],
        result,
        args.json,
    )
    return result
