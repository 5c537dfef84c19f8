"""One exception family whose leaves map one-to-one to the contract's error types.

Handlers raise; one middleware (:mod:`libs.common.http`) turns the error into
``{"error": {"type", "message"}}`` with the right status and ``Retry-After``.
"""

from __future__ import annotations

from typing import ClassVar


class SluiceError(Exception):
    """Base of every error sluice reports to a client."""

    type: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.detail = detail
        """For the logs only: what the client must not see (an upstream's words, a URL)."""
        self.correlation_id: str | None = None


class InvalidRequest(SluiceError):
    """The request body or parameters do not fit the contract."""

    type = "invalid_request"
    status = 400


class Unauthorized(SluiceError):
    """No credentials, or credentials that name no tenant."""

    type = "unauthorized"
    status = 401


class Forbidden(SluiceError):
    """A read token that is wrong, expired, or for another stream or tenant."""

    type = "forbidden"
    status = 403


class NotFound(SluiceError):
    """No such stream for this tenant, or no such route."""

    type = "not_found"
    status = 404


class TooLarge(SluiceError):
    """The body or frame is larger than the configured limit."""

    type = "too_large"
    status = 413


class RateLimited(SluiceError):
    """The tenant is over its concurrency or rate limit; retry after the hint."""

    type = "rate_limited"
    status = 429
    retryable = True


class Overloaded(SluiceError):
    """The suite as a whole is full (queue, connections, no runner); retry after the hint."""

    type = "overloaded"
    status = 503
    retryable = True


class SlowConsumer(SluiceError):
    """The reader stalled past the stall timeout; reconnect with Last-Event-ID."""

    type = "slow_consumer"
    status = 503
    retryable = True


class RunnerLost(SluiceError):
    """The runner generating the stream stopped answering mid-generation."""

    type = "runner_lost"
    status = 503
    retryable = True


class Expired(SluiceError):
    """The stream's log is gone (TTL passed, or Redis lost it): resume is impossible."""

    type = "expired"
    status = 410


class UpstreamError(SluiceError):
    """The model backend failed (refused, 5xx, cut mid-answer, garbage)."""

    type = "upstream_error"
    status = 502
    retryable = True


class Unavailable(SluiceError):
    """A dependency of this service (NATS, Redis, the coordinator) did not answer in time."""

    type = "unavailable"
    status = 503
    retryable = True


class Internal(SluiceError):
    """Something unexpected; the client gets only the correlation id that finds it in the logs."""

    type = "internal"
    status = 500

    def __init__(self, message: str, correlation_id: str) -> None:
        super().__init__(message)
        self.correlation_id = correlation_id


BY_TYPE: dict[str, type[SluiceError]] = {
    cls.type: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        TooLarge,
        RateLimited,
        Overloaded,
        SlowConsumer,
        RunnerLost,
        Expired,
        UpstreamError,
        Unavailable,
    )
}


def from_type(error_type: str, message: str, retry_after_s: float | None = None) -> SluiceError:
    """Rebuild an error that crossed a process boundary as its type name."""
    return BY_TYPE.get(error_type, SluiceError)(message, retry_after_s=retry_after_s)
