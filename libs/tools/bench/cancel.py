"""``sluice bench cancel``: cancel-to-stop latency, and the tokens wasted per cancelled or abandoned stream.

Cancelled streams are read live until ``--cancel-after-tokens`` tokens arrived, then
cancelled over HTTP or the control WebSocket; the client measures from sending the
cancel to receiving ``done``, and the ``done`` itself carries the runner's figures
(``cancel_to_stop_ms``, ``tokens_after_cancel``). Abandoned streams are read for a few
tokens and then dropped, as a closed tab does; their status tells how many tokens the
model generated that no reader received live (``tokens_unread``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from libs.client.http import SluiceClient, events
from libs.tools.bench.stats import emit, error_label, line, summary

POLL_S = 0.05
MODEL_S = 30  # each stream's answer lasts this long, if no cancel stops it


@dataclass
class Sample:
    cancel_to_done_ms: list[float] = field(default_factory=list)
    cancel_to_stop_ms: list[float] = field(default_factory=list)
    tokens_after_cancel: list[float] = field(default_factory=list)
    abandon_unread: list[float] = field(default_factory=list)
    abandon_tokens: list[float] = field(default_factory=list)
    gone_to_stop_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=100, help="streams to cancel")
    parser.add_argument("--abandoned", type=int, default=20, help="streams to abandon")
    parser.add_argument("--tokens-per-s", type=float, default=50.0, help="each stream's speed")
    parser.add_argument("--ttft-ms", type=int, default=50, help="the model's time to first token")
    parser.add_argument(
        "--cancel-after-tokens", type=int, default=10, help="tokens read before the cancel"
    )
    parser.add_argument("--via", choices=("http", "ws"), default="http", help="how to cancel")
    parser.add_argument(
        "--abandon-after-s", type=float, default=1.0, help="abandon window of abandoned streams"
    )
    parser.add_argument(
        "--ramp-s", type=float, default=5.0, help="spread stream starts over this long"
    )


async def cancelled_stream(
    client: SluiceClient,
    via: str,
    body: dict[str, Any],
    after_tokens: int,
    delay_s: float,
    sample: Sample,
) -> None:
    """One stream read live and cancelled; over ``ws`` it has its own socket, as a tab would."""
    await asyncio.sleep(delay_s)
    if via == "http":
        await read_and_cancel(client, None, body, after_tokens, sample)
        return
    async with client.session.ws_connect(f"{client.gateway}/v1/control") as ws:
        await read_and_cancel(client, ws, body, after_tokens, sample)


async def send_cancel(
    client: SluiceClient, ws: aiohttp.ClientWebSocketResponse | None, stream_id: str
) -> None:
    if ws is None:
        status, answer = await client.cancel(stream_id)
        if status != 202:
            raise RuntimeError(f"cancel answered {status}: {answer}")
        return
    await ws.send_str(msgspec.json.encode({"type": "cancel", "stream_id": stream_id}).decode())


async def read_and_cancel(
    client: SluiceClient,
    ws: aiohttp.ClientWebSocketResponse | None,
    body: dict[str, Any],
    after_tokens: int,
    sample: Sample,
) -> None:
    created = await client.create(**body)
    received = 0
    sent_ns = 0
    async for event in events(client.session, created["events_url"]):
        if event.type == "token":
            received += event.json()["n"]
            if not sent_ns and received >= after_tokens:
                sent_ns = time.time_ns()
                await send_cancel(client, ws, created["id"])
        elif event.type == "done":
            done = event.json()
            if done["finish_reason"] != "cancelled":
                sample.errors[f"finished_{done['finish_reason']}"] += 1
                return
            sample.cancel_to_done_ms.append((event.at_ns - sent_ns) / 1e6)
            sample.cancel_to_stop_ms.append(done["cancel_to_stop_ms"])
            sample.tokens_after_cancel.append(done["tokens_after_cancel"])
        elif event.type == "error":
            sample.errors[event.json().get("type", "error")] += 1


async def abandoned_stream(
    client: SluiceClient, body: dict[str, Any], read_tokens: int, delay_s: float, sample: Sample
) -> None:
    await asyncio.sleep(delay_s)
    created = await client.create(**body)
    received = 0
    async for event in events(client.session, created["events_url"]):
        if event.type == "token":
            received += event.json()["n"]
            if received >= read_tokens:
                break
    gone = time.time()
    deadline = time.monotonic() + 10 * body["abandon_after_s"] + 10
    while time.monotonic() < deadline:
        _, info = await client.get(created["id"])
        if info.get("finished_at"):
            if info["status"] != "abandoned":
                sample.errors[f"finished_{info['status']}"] += 1
                return
            sample.abandon_unread.append(info["tokens_unread"])
            sample.abandon_tokens.append(info["tokens"])
            sample.gone_to_stop_s.append(info["finished_at"] - gone)
            return
        await asyncio.sleep(POLL_S)
    sample.errors["never_abandoned"] += 1


async def guarded(coroutine: Any, sample: Sample) -> None:
    try:
        await coroutine
    except Exception as exc:
        sample.errors[error_label(exc)] += 1


async def run_all(args: argparse.Namespace, gateway: str) -> Sample:
    sample = Sample()
    tokens = args.cancel_after_tokens + int(args.tokens_per_s * MODEL_S)
    model = {"tokens": tokens, "tokens_per_s": args.tokens_per_s, "ttft_ms": args.ttft_ms}
    body = {"max_tokens": tokens, "sim": model}
    count = args.streams + args.abandoned
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        client = SluiceClient(session, gateway)
        jobs = [
            cancelled_stream(
                client,
                args.via,
                {**body, "prompt": f"cancel {i}"},
                args.cancel_after_tokens,
                args.ramp_s * i / count,
                sample,
            )
            for i in range(args.streams)
        ] + [
            abandoned_stream(
                client,
                {**body, "prompt": f"abandon {i}", "abandon_after_s": args.abandon_after_s},
                args.cancel_after_tokens,
                args.ramp_s * (args.streams + i) / count,
                sample,
            )
            for i in range(args.abandoned)
        ]
        await asyncio.gather(*(guarded(job, sample) for job in jobs))
    return sample


def run(args: argparse.Namespace, gateway: str) -> dict[str, Any]:
    started = time.monotonic()
    sample = asyncio.run(run_all(args, gateway))
    elapsed = time.monotonic() - started
    result = {
        "mode": "cancel",
        "via": args.via,
        "streams_cancelled": len(sample.cancel_to_done_ms),
        "streams_abandoned": len(sample.abandon_unread),
        "tokens_per_s_each": args.tokens_per_s,
        "cancel_to_done_ms_client": summary(sample.cancel_to_done_ms),
        "cancel_to_stop_ms_runner": summary(sample.cancel_to_stop_ms),
        "tokens_after_cancel_per_stream": summary(sample.tokens_after_cancel),
        "tokens_after_cancel_total": sum(sample.tokens_after_cancel),
        "tokens_unread_per_abandoned_stream": summary(sample.abandon_unread),
        "tokens_per_abandoned_stream": summary(sample.abandon_tokens),
        "reader_gone_to_stop_s": summary(sample.gone_to_stop_s),
        "abandon_after_s": args.abandon_after_s,
        "elapsed_s": elapsed,
        "errors": dict(sample.errors),
    }
    emit(
        f"cancel: {args.streams} streams cancelled over {args.via} after "
        f"{args.cancel_after_tokens} tokens, {args.abandoned} abandoned "
        f"(abandon_after_s {args.abandon_after_s:g}), at {args.tokens_per_s:g} tokens/s",
        [
            line("cancel sent -> done received (client)", sample.cancel_to_done_ms),
            line("cancel -> model stopped (runner)", sample.cancel_to_stop_ms),
            line("tokens after cancel, per stream", sample.tokens_after_cancel, "tokens"),
            line("tokens unread, per abandoned stream", sample.abandon_unread, "tokens"),
            line("reader gone -> model stopped", sample.gone_to_stop_s, "s"),
            f"  tokens after cancel in all: {result['tokens_after_cancel_total']:g}; "
            f"elapsed {elapsed:.1f}s; errors {dict(sample.errors) or 'none'}",
        ],
        result,
        args.json,
    )
    return result
