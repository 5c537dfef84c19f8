"""Structured JSON logs: one object per line, with the stream id when there is one.

A line logged inside a stream's span carries that stream's id and trace id even when
the call site did not pass them, so logs and traces join on either.
"""

from __future__ import annotations

import logging
import sys
import time

import msgspec

from libs.common.tracing import current_stream, trace_id

_FIELDS = ("stream_id", "tenant", "runner_id", "reason", "service", "correlation_id")
_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in _FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if "stream_id" not in entry and (stream_id := current_stream.get()) is not None:
            entry["stream_id"] = stream_id
        if (trace := trace_id()) is not None:
            entry["trace_id"] = trace
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def setup_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
