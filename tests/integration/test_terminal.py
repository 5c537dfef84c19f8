"""``sluice chat`` on a pseudo-terminal and ``sluice ask`` in a script, against real services."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from itertools import islice

import pytest

from libs.tools.servers import child_env
from libs.tools.stack import Stack
from services.runner.backends.sim import sim_tokens
from tests.netcut import LinkedStack
from tests.terminal import Terminal

pytestmark = pytest.mark.timeout(120)


def sim(tokens: int, tokens_per_s: float, ttft_ms: int = 50) -> str:
    return json.dumps({"sim": {"tokens": tokens, "tokens_per_s": tokens_per_s, "ttft_ms": ttft_ms}})


def expected(prompt: str, tokens: int) -> str:
    return "".join(islice(sim_tokens(f"user: {prompt}", 0), tokens))


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


async def chat(terminals: list[Terminal], gateway: str, request: str, prompt: str) -> Terminal:
    """``sluice chat`` on a pty, with ``prompt`` typed at its first prompt."""
    terminal = Terminal(["chat", "--gateway", gateway, "--request", request])
    terminals.append(terminal)
    await expect(terminal, r"you> ")
    terminal.send(prompt + "\n")
    return terminal


async def expect(terminal: Terminal, pattern: str, after: int = 0) -> re.Match[str]:
    return await asyncio.to_thread(terminal.expect, pattern, 30.0, after)


def ask(gateway: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "libs.tools.cli", "ask", "--gateway", gateway, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env({}),
    )


async def test_ask_prints_the_answer_as_plain_text(stack: Stack) -> None:
    answer = await asyncio.to_thread(ask, stack.gateway, "héllo 你好 🌊", "--request", sim(25, 500))
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == "".join(islice(sim_tokens("héllo 你好 🌊", 0), 25)) + "\n"
    assert answer.stdout.startswith(" On héllo, 你好 and 🌊:")


async def test_ask_reads_the_prompt_from_stdin(stack: Stack) -> None:
    answer = await asyncio.to_thread(ask, stack.gateway, "--request", sim(5, 500), stdin="rivers")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == "".join(islice(sim_tokens("rivers", 0), 5)) + "\n"


async def test_ask_exits_non_zero_with_the_error_on_a_refusal(stack: Stack) -> None:
    answer = await asyncio.to_thread(ask, stack.gateway, "x", "--max-tokens", "0")
    assert answer.returncode == 1
    assert answer.stdout.strip() == ""
    assert "invalid_request" in answer.stderr


async def test_chat_streams_the_answer_and_exits_on_ctrl_d(
    stack: Stack, terminals: list[Terminal]
) -> None:
    terminal = await chat(terminals, stack.gateway, sim(80, 400), "how do I read a file in python?")
    done = await expect(terminal, r"\[stop, 80 tokens[^\]]*tokens/s\]")
    assert expected("how do I read a file in python?", 80) in terminal.output
    assert "def read_file(items):" in terminal.output
    await expect(terminal, r"you> ", done.end())
    terminal.send("\x04")
    assert await asyncio.to_thread(terminal.wait) == 0


async def test_ctrl_c_stops_the_answer_and_a_second_one_exits(
    stack: Stack, terminals: list[Terminal]
) -> None:
    terminal = await chat(terminals, stack.gateway, sim(2000, 40), "tell me about rivers")
    await expect(terminal, r"On rivers: \S+ \S+ \S+")
    terminal.send("\x03")
    stopped = await expect(terminal, r"\[cancelled, (\d+) tokens[^\]]*cancel to stop \d+ ms\]")
    assert int(stopped.group(1)) < 2000
    prompt = await expect(terminal, r"you> ", stopped.end())
    terminal.send("and tides?\n")
    await expect(terminal, r"On tides: \S+", prompt.end())
    terminal.send("\x03")
    await asyncio.sleep(0.05)
    terminal.send("\x03")
    assert await asyncio.to_thread(terminal.wait) == 0


async def test_chat_resumes_after_a_dropped_connection_without_repeating_text(
    linked: LinkedStack, terminals: list[Terminal]
) -> None:
    terminal = await chat(terminals, linked.stack.gateway, sim(150, 50), "explain backpressure")
    await expect(terminal, r"On explain and backpressure: \S+ \S+ \S+ \S+")
    linked.link.cut()
    try:
        await expect(terminal, r"\[reconnecting: ")
    finally:
        linked.link.restore()
    await expect(terminal, r"\[stop, 150 tokens")
    printed = re.sub(r"\n\[reconnecting: [^\]]*\]\n", "", terminal.output)
    assert printed.count(expected("explain backpressure", 150)) == 1


async def test_a_prompt_typed_during_an_answer_supersedes_it(
    stack: Stack, terminals: list[Terminal]
) -> None:
    terminal = await chat(terminals, stack.gateway, sim(2000, 40), "tell me about rivers")
    await expect(terminal, r"On rivers: \S+ \S+")
    terminal.send("what about weirs\n")
    superseded = await expect(terminal, r"\[superseded by the next prompt\]")
    await expect(terminal, r"On weirs: \S+ \S+ \S+ \S+ \S+", superseded.end())
    assert expected("what about weirs", 6) in terminal.output[superseded.end() :]
    terminal.send("\x03")
    await expect(terminal, r"\[cancelled, \d+ tokens", superseded.end())
    terminal.send("\x04")
    assert await asyncio.to_thread(terminal.wait) == 0
