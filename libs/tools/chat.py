"""``sluice chat``: chat with a model in the terminal.

Type a prompt and press Enter; the answer streams as it is written. Ctrl-C stops
the answer (the model stops too); a second Ctrl-C, or Ctrl-C or Ctrl-D at the
prompt, exits. A dropped connection resumes where it was, without repeating text.
The whole session is one conversation: the model sees the earlier turns, and a new
prompt supersedes an answer still in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from libs.client import (
    Client,
    ControlError,
    Done,
    Reconnecting,
    Status,
    Stream,
    StreamFailed,
    Token,
)
from libs.client.http import StreamRefused
from libs.common.settings import load_settings
from libs.tools import helptext

DIM, RESET, CLEAR_LINE = "\x1b[2m", "\x1b[0m", "\r\x1b[K"


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``sluice chat`` and ``sluice ask`` share: where, who, and what to ask for."""
    parser.add_argument("--gateway", help="gateway URL (default: SLUICE_PUBLIC_GATEWAY_URL)")
    parser.add_argument("--api-key", help="API key (default: the SLUICE_API_KEY variable)")
    parser.add_argument("--model", default="sim", help="model name (default: sim)")
    parser.add_argument("--max-tokens", type=int, help="longest answer, in tokens")
    parser.add_argument(
        "--request",
        default="{}",
        metavar="JSON",
        help='more request fields, e.g. \'{"sim": {"tokens": 400}}\'',
    )


def request_fields(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[str, str | None, dict[str, Any]]:
    """The gateway, the API key and the request fields the options name."""
    try:
        fields = json.loads(args.request)
    except json.JSONDecodeError as exc:
        parser.error(f"--request is not JSON: {exc}")
    if not isinstance(fields, dict):
        parser.error("--request must be a JSON object")
    fields.setdefault("model", args.model)
    if args.max_tokens is not None:
        fields["max_tokens"] = args.max_tokens
    gateway = args.gateway or load_settings().public_url("gateway")
    return gateway, args.api_key or os.environ.get("SLUICE_API_KEY"), fields


@dataclass
class Session:
    """One conversation: its id, its turns, and the answer in flight."""

    client: Client
    fields: dict[str, Any]
    color: bool
    conversation: str = field(default_factory=lambda: f"cli-{uuid.uuid4().hex[:12]}")
    messages: list[dict[str, str]] = field(default_factory=list)
    answering: Stream | None = None
    stopping: bool = False
    noted: bool = False
    quit: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, text: str) -> None:
        """A state line (queued, thinking), replaced by the answer when it starts."""
        if self.color:
            sys.stdout.write(f"{CLEAR_LINE}{DIM}{text}{RESET}")
            sys.stdout.flush()
            self.noted = True

    def clear_note(self) -> None:
        if self.noted:
            sys.stdout.write(CLEAR_LINE)
            self.noted = False

    def interrupt(self) -> None:
        """Ctrl-C: stop the answer in flight; a second one, or one at the prompt, exits."""
        if self.answering is None or self.stopping:
            self.quit.set()
            return
        self.stopping = True
        stream = self.answering
        asyncio.get_running_loop().create_task(self._cancel(stream))

    async def _cancel(self, stream: Stream) -> None:
        try:
            await stream.cancel()
        except (ControlError, StreamRefused, aiohttp.ClientError, OSError) as exc:
            print(f"\n[could not stop: {exc}]", file=sys.stderr)

    async def turn(self, prompt: str) -> None:
        self.messages.append({"role": "user", "content": prompt})
        body = {**self.fields, "messages": self.messages, "conversation_id": self.conversation}
        stream = self.answering = await self.client.create(**body)
        self.stopping = False
        text: list[str] = []
        try:
            async for event in stream.events():
                self.show(event, text)
        finally:
            self.answering = None
        self.messages.append({"role": "assistant", "content": "".join(text)})

    def superseded(self) -> None:
        """The answer in flight gave way to a new prompt (the server ends it ``superseded``)."""
        self.messages.pop()
        self.clear_note()
        print("\n[superseded by the next prompt]", flush=True)

    def show(self, event: Status | Token | Reconnecting | Done, text: list[str]) -> None:
        if isinstance(event, Token):
            if not text:
                self.clear_note()
            if not self.stopping:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            text.append(event.text)
        elif isinstance(event, Status) and not text:
            position = f", position {event.position}" if event.position else ""
            self.note("queued" + position if event.status == "queued" else "thinking…")
        elif isinstance(event, Reconnecting):
            print(f"\n[reconnecting: {event.reason}]", file=sys.stderr, flush=True)
        elif isinstance(event, Done):
            self.clear_note()
            print(f"\n{DIM if self.color else ''}[{_figures(event)}]{RESET if self.color else ''}")


def _figures(done: Done) -> str:
    parts = [done.finish_reason, f"{done.tokens} tokens"]
    if done.ttft_ms is not None:
        parts.append(f"first token {done.ttft_ms:.0f} ms")
    if done.duration_ms and done.tokens > 1:
        parts.append(f"{done.tokens / (done.duration_ms / 1000):.1f} tokens/s")
    if done.cancel_to_stop_ms is not None:
        parts.append(f"cancel to stop {done.cancel_to_stop_ms:.0f} ms")
    return ", ".join(parts)


async def _lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _chat(gateway: str, api_key: str | None, fields: dict[str, Any]) -> int:
    color = sys.stdout.isatty()
    async with Client(gateway, api_key) as client:
        session = Session(client, fields, color)
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, session.interrupt)
        stdin = await _lines()
        print(f"sluice chat on {gateway} (Ctrl-C stops an answer, Ctrl-D exits)")
        reading = asyncio.ensure_future(stdin.readline())
        _prompt()
        while True:
            typed = await _until_quit(session, reading)
            if not typed:
                break
            reading = asyncio.ensure_future(stdin.readline())
            prompt = typed.decode(errors="replace").strip()
            if not prompt:
                _prompt()
                continue
            outcome = await _answer(session, prompt, reading)
            if outcome == "quit":
                break
            if outcome == "answered":
                _prompt()
        reading.cancel()
    print()
    return 0


def _prompt() -> None:
    sys.stdout.write("\nyou> ")
    sys.stdout.flush()


async def _answer(session: Session, prompt: str, reading: asyncio.Future[bytes]) -> str:
    """Stream the answer to ``prompt``; a line typed meanwhile supersedes it.

    Returns ``answered``, ``superseded`` (``reading`` holds the new prompt) or ``quit``.
    """
    turn = asyncio.ensure_future(session.turn(prompt))
    quit_ = asyncio.ensure_future(session.quit.wait())
    waiting: set[asyncio.Future[Any]] = {turn, reading, quit_}
    while True:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if turn.done() or quit_.done() or reading.result():
            break
        waiting.discard(reading)  # Ctrl-D while answering: exit once the answer is done
    quit_.cancel()
    if turn.done():
        try:
            turn.result()
        except StreamFailed as failed:
            print(f"\n[error: {failed.type}: {failed.message}]", file=sys.stderr)
        return "answered"
    turn.cancel()
    with suppress(asyncio.CancelledError):
        await turn
    if session.quit.is_set():
        return "quit"
    session.superseded()
    return "superseded"


async def _until_quit(session: Session, work: asyncio.Future[bytes]) -> bytes | None:
    """The line ``work`` reads, or None once the user asked to quit."""
    quit_: asyncio.Future[Any] = asyncio.ensure_future(session.quit.wait())
    await asyncio.wait([work, quit_], return_when=asyncio.FIRST_COMPLETED)
    quit_.cancel()
    return work.result() if work.done() else None


def main(argv: list[str]) -> None:
    parser = helptext.parser("sluice chat", __doc__, paragraphs=2)
    add_request_arguments(parser)
    args = parser.parse_args(argv)
    gateway, api_key, fields = request_fields(args, parser)
    raise SystemExit(asyncio.run(_chat(gateway, api_key, fields)))
