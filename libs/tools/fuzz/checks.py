"""What every answer must look like, however bad the request: the contract's shapes."""

from __future__ import annotations

from typing import Any

import msgspec

from libs.common.errors import BY_TYPE
from libs.common.sse import SSEParser

CONTRACT_STATUSES = frozenset({200, 201, 202, 400, 401, 403, 404, 405, 410, 413, 429})
ERROR_TYPES = frozenset(BY_TYPE)
SERVER_FRAMES = frozenset({"ack", "error", "status", "pong"})
PAGE_TYPES = ("text/html", "text/javascript", "application/javascript", "text/css")
"""What the gateway's chat page and browser SDK are served as (decision 0014)."""


def is_page(method: str, status: int, path: str, content_type: str) -> bool:
    """A file of the chat page or the SDK (``/``, ``/sdk/...``, ``/ui/...``), rightly got."""
    served = path == "/" or path.startswith(("/sdk/", "/ui/"))
    return method == "GET" and status == 200 and served and content_type.startswith(PAGE_TYPES)


def json_problem(status: int, content_type: str, raw: bytes) -> str | None:
    """Why a JSON answer breaks the contract, or None."""
    if status not in CONTRACT_STATUSES:
        return f"status {status} ({raw[:160]!r})"
    if "application/json" not in content_type:
        return f"{status} with content type {content_type!r}"
    try:
        answer: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return f"{status} body is not JSON: {raw[:160]!r}"
    if status < 400:
        return None
    return error_problem(answer)


def error_problem(answer: Any) -> str | None:
    """An error body must be ``{"error": {"type": <contract type>, "message": str}}``."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return f"not the error envelope: {answer!r:.160}"
    if error.get("type") not in ERROR_TYPES:
        return f"error type {error.get('type')!r} is not the contract's: {answer!r:.160}"
    return None


def sse_problem(raw: bytes) -> str | None:
    """An event stream must parse, and any ``error`` event must carry a contract type."""
    for event in SSEParser().feed(raw):
        if event.type == "error":
            try:
                problem = error_problem({"error": event.json()})
            except msgspec.DecodeError:
                return f"error event is not JSON: {event.data[:160]!r}"
            if problem:
                return f"SSE {problem}"
    return None


def frame_problem(text: str) -> str | None:
    """A server frame on the control socket is JSON of a known type."""
    try:
        frame: Any = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return f"frame is not JSON: {text[:160]!r}"
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind not in SERVER_FRAMES:
        return f"unknown frame {text[:160]!r}"
    return error_problem(frame) if kind == "error" else None
