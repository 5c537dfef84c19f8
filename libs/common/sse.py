"""Server-Sent Events: the frames the streamer writes and a WHATWG-conformant parser.

The parser serves the tests, the benchmark, ``sluice`` clients and the runner's OpenAI
backend; it follows the
HTML spec's "event stream interpretation" (BOM, CR/LF/CRLF, comments, ``id`` without
NUL, ``retry`` digits only, an event with no data is not dispatched).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from typing import Any

import msgspec

RETRY = b"retry: 1000\n\n"
RESPONSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_LINE_END = re.compile(r"\r\n|\r|\n")


class ToolCallRef(msgspec.Struct, omit_defaults=True):
    """Which tool call a ``token`` event's text (an argument fragment) belongs to."""

    index: int
    id: str | None = None
    name: str | None = None


class TokenData(msgspec.Struct, omit_defaults=True):
    """The JSON of a native ``token`` event; ``channel`` is absent for answer text."""

    seq: int
    n: int
    text: str
    ts: int
    channel: str | None = None
    tool_call: ToolCallRef | None = None


_json = msgspec.json.Encoder()
token_data = msgspec.json.Decoder(TokenData)
TOKEN_EVENT = b'event: token\nid: %d\ndata: {"seq":%d,"n":%d,"text":%s,"ts":%d}\n\n'


def frame(event: str, data: bytes, event_id: int | None = None) -> bytes:
    """One event; ``data`` must be single-line (JSON is)."""
    head = b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + str(event_id).encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def json_frame(event: str, payload: object, event_id: int | None = None) -> bytes:
    return frame(event, _json.encode(payload), event_id)


def token_frame(last_seq: int, texts: list[str], ts: int) -> bytes:
    """A ``token`` event carrying ``texts`` (consecutive tokens ending at ``last_seq``).

    Its data is :class:`TokenData`'s JSON, spelled here so that only the text is encoded.
    """
    text = _json.encode("".join(texts))
    return TOKEN_EVENT % (last_seq, last_seq, len(texts), text, ts)


class Event(msgspec.Struct, frozen=True):
    """One dispatched event; a Struct, as a frozen dataclass's init was 7% of a client's work."""

    type: str
    data: str
    last_event_id: str
    retry: int | None = None

    def json(self) -> Any:
        """The data as JSON, of whatever shape the event type promises."""
        return msgspec.json.decode(self.data)


class SSEParser:
    """Incremental event-stream parser: ``feed`` bytes, get the events they complete.

    The spec ignores a field it does not know; ``on_unknown_field``, if given, is called
    with such a line first, so a client can tell a body that is not an event stream at all.
    """

    def __init__(self, on_unknown_field: Callable[[str], None] | None = None) -> None:
        self._on_unknown_field = on_unknown_field
        self._buffer = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoder_started = False
        self._pending_cr = False
        self._event_type = ""
        self._data: list[str] = []
        self._has_data = False
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes | str) -> list[Event]:
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._decoder_started and text:
            self._decoder_started = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        data = self._buffer + text
        lines = data.split("\n") if "\r" not in data else _LINE_END.split(data)
        self._buffer = lines.pop()
        self._pending_cr = data.endswith("\r")
        events: list[Event] = []
        for line in lines:  # the field rules inline: three lines per token event
            if not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
                self._has_data = True
            elif name == "event":
                self._event_type = value
            elif name == "id":
                if "\x00" not in value:
                    self.last_event_id = value
            elif name == "retry":
                if value.isascii() and value.isdigit() and len(value) < 16:
                    self.retry = int(value)
            elif name and self._on_unknown_field is not None:
                self._on_unknown_field(line)
            # any other name, and a comment (a line starting with ":"), is ignored
        return events

    def _dispatch(self) -> Event | None:
        event_type = self._event_type or "message"
        has_data, data = self._has_data, "\n".join(self._data)
        self._event_type, self._data, self._has_data = "", [], False
        if not has_data:
            return None
        return Event(event_type, data, self.last_event_id, self.retry)
