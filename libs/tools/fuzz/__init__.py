"""``sluice fuzz``: random and mutated requests, frames and headers on every public endpoint.

Every answer must be the contract's JSON (or SSE) with a contract status code: no
5xx. Afterwards every process of the suite must be alive with no traceback in its
log, and a normal stream must complete. Without ``--gateway`` it starts its own suite
(with API keys, so authentication is fuzzed too) and checks the processes and logs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from libs.client.http import SluiceClient
from libs.tools import helptext
from libs.tools.bench import own_suite
from libs.tools.fuzz.requests import KINDS, Target
from libs.tools.stack import Stack

FUZZ_KEY = "fuzz-key"
SUITE_ENV = {
    "SLUICE_API_KEYS": f"{FUZZ_KEY}:fuzz",
    "SLUICE_SECRET": "a-fuzzing-secret-that-is-long-enough-to-sign",
    "SLUICE_TENANT_REQUESTS_PER_S": "100000",
    "SLUICE_TENANT_REQUEST_BURST": "100000",
    "SLUICE_TENANT_FRAMES_PER_S": "100000",
    "SLUICE_TENANT_FRAME_BURST": "100000",
}
"""Rate limits out of the way: the fuzzer looks for broken answers, not for 429s."""
LOG_MARKERS = ("Traceback", '"exc":')


@dataclass
class Report:
    answers: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    sent: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


async def fuzz(target: Target, requests: int, seed: int, concurrency: int) -> Report:
    """Send ``requests`` random requests (WebSocket frames count one each)."""
    report = Report()
    kinds = [kind for kind, weight in KINDS for _ in range(weight)]
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        kind = rng.choice(kinds)
        async with gate:
            outcome = await kind(target, rng)
        report.sent += outcome.sent
        report.answers.update(outcome.answers)
        report.problems += [f"{kind.__name__}: {p}" for p in outcome.problems]

    pending: set[asyncio.Task[None]] = set()
    index = 0
    while report.sent + len(pending) < requests:
        while len(pending) < concurrency * 2 and report.sent + len(pending) < requests:
            pending.add(asyncio.create_task(one(index)))
            index += 1
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*pending)
    await target.cancel_all()
    return report


async def normal_stream_completes(session: aiohttp.ClientSession, target: Target) -> str | None:
    client = SluiceClient(session, target.gateway, api_key=target.api_key)
    created = await client.create(prompt="after the fuzz", sim={"tokens": 5, "ttft_ms": 0})
    async with session.get(created["events_url"]) as answer:
        body = await asyncio.wait_for(answer.read(), 30)
    return None if b"event: done" in body else f"a normal stream did not complete: {body[-300:]!r}"


def suite_problems(stack: Stack) -> list[str]:
    """Dead processes, and tracebacks in any service's log."""
    problems = []
    for service in stack.services:
        if service.process is None or service.process.poll() is not None:
            problems.append(f"{service.name} is not running")
        text = Path(service.log_path).read_text(errors="replace")
        for line in text.splitlines():
            if any(marker in line for marker in LOG_MARKERS):
                problems.append(f"{service.name} logged: {line[:300]}")
                break
    return problems


async def run_against(
    gateway: str, streamer: str, api_key: str | None, requests: int, seed: int, concurrency: int
) -> Report:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        target = Target(session, gateway.rstrip("/"), streamer.rstrip("/"), api_key)
        report = await fuzz(target, requests, seed, concurrency)
        if problem := await normal_stream_completes(session, target):
            report.problems.append(problem)
    return report


def fuzz_suite(
    stack: Stack, requests: int, seed: int, concurrency: int = 8, api_key: str | None = FUZZ_KEY
) -> Report:
    """Fuzz a suite this process started, then check its processes and logs too."""
    report = asyncio.run(
        run_against(stack.gateway, stack.streamer, api_key, requests, seed, concurrency)
    )
    report.problems += suite_problems(stack)
    return report


def print_report(report: Report, elapsed_s: float) -> None:
    print(f"sluice fuzz: {report.sent} requests in {elapsed_s:.1f}s")
    for answer, count in sorted(report.answers.items()):
        print(f"  {answer:<28} {count}")
    if report.ok:
        print("every answer kept the contract; the suite is alive and clean")
        return
    print(f"{len(report.problems)} problems:")
    for problem in report.problems[:30]:
        print(f"  {problem}")


def main(argv: list[str]) -> None:
    parser = helptext.parser("sluice fuzz", __doc__, paragraphs=2)
    parser.add_argument("--requests", type=int, default=2_000, help="requests to send")
    parser.add_argument("--seed", type=int, default=0, help="random seed (a run repeats)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--gateway", help="a running suite's gateway URL (default: start one)")
    parser.add_argument("--streamer", help="its streamer URL (with --gateway)")
    parser.add_argument("--api-key", help="a valid API key of the running suite")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.gateway:
        streamer = args.streamer or args.gateway
        report = asyncio.run(
            run_against(
                args.gateway, streamer, args.api_key, args.requests, args.seed, args.concurrency
            )
        )
    else:
        with own_suite(SUITE_ENV) as suite:
            report = fuzz_suite(suite.stack, args.requests, args.seed, args.concurrency)
    print_report(report, time.monotonic() - started)
    raise SystemExit(0 if report.ok else 1)
