"""A client that resumes the way a browser's EventSource does, for the resume and fault tests.

It follows one stream across any number of connections: after a cut it reconnects
with the id of the last event it fully received (``Last-Event-ID`` header or the
``last_event_id`` query parameter), to whichever streamer answers. It checks as it
goes that every token frame starts right after the previous one, so a repeat or a
gap is caught at the frame where it happened, not only in the final text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from libs.common.sse import Event, SSEParser
from services.runner.backends.sim import sim_tokens

RETRY_PAUSE_S = 0.05


@dataclass
class Transcript:
    """Everything one follower saw of one stream, over all its connections."""

    texts: list[str] = field(default_factory=list)
    stream_id: str = ""
    last_id: int = 0
    end: Event | None = None
    connect_statuses: list[str] = field(default_factory=list)
    statuses: list[Any] = field(default_factory=list)
    reconnect_reasons: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    last_token_at: float = 0.0
    longest_stall_s: float = 0.0
    """The longest wait between two token frames, over reconnects."""

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def continued_at(self) -> list[int]:
        """Where the answer moved to another runner, from the status frames that said so."""
        return [s["continued_at"] for s in self.statuses if "continued_at" in s]

    @property
    def end_type(self) -> str:
        return self.end.type if self.end else "none"

    def end_json(self) -> Any:
        assert self.end is not None, f"the stream never ended; reconnects: {self.reconnect_reasons}"
        return self.end.json()


@dataclass
class Schedule:
    """When to cut: after ``cuts[i]`` bytes of connection ``i``, pause ``pauses[i]``, resume."""

    cuts: Sequence[int] = ()
    pauses: Sequence[float] = ()
    via_query: Sequence[bool] = ()


def with_streamer(events_url: str, streamer: str) -> str:
    """The same events URL (path and read token) on another streamer replica."""
    parts = urlsplit(events_url)
    return f"{streamer.rstrip('/')}{parts.path}?{parts.query}"


def expected_text(prompt: str, tokens: int, seed: int = 0) -> str:
    """What the sim model answers: the reference a stream's text must equal."""
    return "".join(islice(sim_tokens(prompt, seed), tokens))


class _Cut(Exception):
    """The schedule's byte budget for this connection ran out."""


async def follow(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    schedule: Schedule | None = None,
    timeout_s: float = 60.0,
    transcript: Transcript | None = None,
) -> Transcript:
    """Read one stream to its ``done`` or ``error``, resuming after every cut, drop or ``reconnect``.

    ``urls`` are the stream's events URL on each streamer replica; a connection goes
    to the first that accepts it, so a dead replica is skipped. Pass ``transcript``
    to watch its progress while it runs.
    """
    schedule = schedule or Schedule()
    transcript = transcript or Transcript()
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while transcript.end is None:
        if time.monotonic() > deadline:
            transcript.violations.append(f"no end within {timeout_s}s")
            break
        budget = schedule.cuts[attempt] if attempt < len(schedule.cuts) else None
        via_query = schedule.via_query[attempt] if attempt < len(schedule.via_query) else False
        pause = schedule.pauses[attempt] if attempt < len(schedule.pauses) else RETRY_PAUSE_S
        attempt += 1
        reason = await _connection(session, urls, transcript, budget, via_query, deadline)
        if reason is not None:
            transcript.reconnect_reasons.append(reason)
            await asyncio.sleep(pause)
    return transcript


async def _connection(
    session: aiohttp.ClientSession,
    urls: Sequence[str],
    transcript: Transcript,
    budget: int | None,
    via_query: bool,
    deadline: float,
) -> str | None:
    """One connection; returns why it needs another (None once the stream ended)."""
    for url in urls:
        try:
            return await asyncio.wait_for(
                _read(session, url, transcript, budget, via_query),
                max(0.1, deadline - time.monotonic()),
            )
        except (aiohttp.ClientConnectorError, ConnectionRefusedError):
            continue
        except (aiohttp.ClientError, ConnectionError) as exc:
            return f"dropped:{type(exc).__name__}"
        except TimeoutError:
            return "timeout"
    return "refused"


async def _read(
    session: aiohttp.ClientSession,
    url: str,
    transcript: Transcript,
    budget: int | None,
    via_query: bool,
) -> str | None:
    headers = {"Accept": "text/event-stream"}
    resumed = bool(transcript.last_id)
    if resumed and via_query:
        url = f"{url}&last_event_id={transcript.last_id}"
    elif resumed:
        headers["Last-Event-ID"] = str(transcript.last_id)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with session.get(url, headers=headers, timeout=timeout) as response:
        if response.status != 200:
            return f"http:{response.status}"
        parser = SSEParser()
        status_seen = False
        async for chunk in response.content.iter_any():
            if budget is not None:
                chunk, budget = chunk[:budget], budget - len(chunk)
            for event in parser.feed(chunk):
                if event.type == "status":
                    status: Any = event.json()
                    transcript.statuses.append(status)
                    if not status_seen:
                        status_seen = True
                        transcript.connect_statuses.append(status["status"])
                elif event.type == "token":
                    _take(transcript, event)
                elif event.type == "reconnect":
                    return "reconnect"
                elif event.type in ("done", "error"):
                    transcript.end = event
                    return None
            if budget is not None and budget <= 0:
                return "cut"
    return "closed"


def _take(transcript: Transcript, event: Event) -> None:
    data: Any = event.json()
    first = data["seq"] - data["n"] + 1
    if first != transcript.last_id + 1 or event.last_event_id != str(data["seq"]):
        transcript.violations.append(
            f"frame {first}..{data['seq']} (id {event.last_event_id}) after {transcript.last_id}"
        )
    transcript.texts.append(data["text"])
    transcript.last_id = data["seq"]
    now = time.monotonic()
    if transcript.last_token_at:
        transcript.longest_stall_s = max(transcript.longest_stall_s, now - transcript.last_token_at)
    transcript.last_token_at = now


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition`` (progress of other tasks has no event of its own to await)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.02)
