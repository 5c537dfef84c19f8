"""NATS subjects and Redis keys: the one place their spelling lives."""

from __future__ import annotations

SUBMIT = "sluice.submit"
RUNNER_HEARTBEAT = "sluice.runner.heartbeat"
RUNNER_ANNOUNCE = "sluice.runner.announce"
RUNNER_HANDOFF = "sluice.runner.handoff"
STATS = "sluice.stats"
COORDINATOR_QUEUE = "coordinator"

ALL_CONTROL = "sluice.stream.*.control"
ALL_LIFECYCLE = "sluice.stream.*.lifecycle"


def runner_start(runner_id: str) -> str:
    return f"sluice.runner.{runner_id}.start"


def stream_subject(stream_id: str, kind: str) -> str:
    """``sluice.stream.<id>.<kind>`` where kind is tokens, control, readers or lifecycle."""
    return f"sluice.stream.{stream_id}.{kind}"


def stream_wildcard(stream_id: str) -> str:
    """Everything about one stream, for the streamer's single subscription per stream."""
    return f"sluice.stream.{stream_id}.*"


def stream_id_of(subject: str) -> str:
    return subject.split(".", 3)[2]


def log_key(stream_id: str) -> str:
    return f"sluice:log:{stream_id}"


def meta_key(stream_id: str) -> str:
    return f"sluice:meta:{stream_id}"


def prompt_key(stream_id: str) -> str:
    """A large request's prompt, parked while the stream waits for a runner."""
    return f"sluice:prompt:{stream_id}"


def conversation_key(tenant: str, conversation_id: str) -> str:
    """Scoped by tenant so two tenants' conversation ids never collide."""
    return f"sluice:conv:{tenant}:{conversation_id}"


def tenant_active_key(tenant: str) -> str:
    return f"sluice:tenant:{tenant}:active"


FEEDBACK_STREAM = "sluice:feedback"
