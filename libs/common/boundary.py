"""The one table that turns any exception into the contract's error, for every service.

HTTP handlers, the control WebSocket, the OpenAI surface and an SSE stream after its
headers all ask :func:`classify`. A :class:`SluiceError` is itself; a Redis or NATS
outage is a retryable ``unavailable``; anything else is ``internal`` with a correlation
id, and only the log gets the exception, so no internal detail reaches a client.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from libs.common.api import ErrorBody
from libs.common.errors import Internal, SluiceError, Unavailable
from libs.common.retry import TRANSIENT

log = logging.getLogger(__name__)

UNAVAILABLE_RETRY_S = 1.0


def _unavailable(exc: BaseException) -> SluiceError:
    return Unavailable(
        "a dependency is unavailable; retry shortly", retry_after_s=UNAVAILABLE_RETRY_S
    )


TABLE: tuple[
    tuple[tuple[type[BaseException], ...], Callable[[BaseException], SluiceError]], ...
] = ((TRANSIENT, _unavailable),)
"""Expected failures that are not a :class:`SluiceError`, and what the client is told."""


def classify(exc: BaseException) -> SluiceError:
    """The error a client is shown for ``exc``; what it must not see is logged here, once."""
    if isinstance(exc, SluiceError):
        return with_detail_logged(exc)
    for kinds, to_error in TABLE:
        if isinstance(exc, kinds):
            return to_error(exc)
    correlation_id = log_with_correlation_id("unexpected error", exc)
    return Internal(f"internal error (correlation id {correlation_id})", correlation_id)


def with_detail_logged(error: SluiceError) -> SluiceError:
    """An error with a log-only ``detail``: the detail is logged, the client gets the id."""
    if error.detail and error.correlation_id is None:
        error.correlation_id = log_with_correlation_id(f"{error.message}: {error.detail}")
        error.message = f"{error.message} (correlation id {error.correlation_id})"
    return error


def log_with_correlation_id(what: str, exc: BaseException | None = None) -> str:
    """Log ``what`` (and the exception's traceback) under a fresh id a client can quote."""
    correlation_id = secrets.token_hex(8)
    log.error(
        "%s [%s]", what, correlation_id, exc_info=exc, extra={"correlation_id": correlation_id}
    )
    return correlation_id


def error_body(error: SluiceError) -> ErrorBody:
    """The contract's ``error`` object, with the correlation id of an internal one."""
    return ErrorBody(type=error.type, message=error.message, correlation_id=error.correlation_id)
