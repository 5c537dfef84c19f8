"""NATS subjects and Redis keys: the one place their spelling lives.

Every subject and key starts with the namespace, ``SLUICE_NAMESPACE`` (default
``sluice``), so suites sharing one NATS and one Redis never see each other's streams,
runners or figures. It is read once, when this module is imported: a process serves
one namespace, and subjects stay constants on the per-token paths. ``Settings`` declares
the same variable, so a bad value fails at start with its name.

A stream's Redis keys carry its id as a hash tag (``{<id>}``), so in a Redis Cluster
its log and meta live in one slot and the scripts that touch both run on one shard;
a tenant's keys (active streams, conversations) carry the tenant as theirs.
"""

from __future__ import annotations

import os

NAMESPACE_VARIABLE = "SLUICE_NAMESPACE"
DEFAULT_NAMESPACE = "sluice"
NAMESPACE_PATTERN = r"^[A-Za-z0-9_-]{1,48}$"
"""One NATS subject token and a plain Redis key prefix: no dots, wildcards or spaces."""

NAMESPACE = os.environ.get(NAMESPACE_VARIABLE) or DEFAULT_NAMESPACE

SUBMIT = f"{NAMESPACE}.submit"
RUNNER_HEARTBEAT = f"{NAMESPACE}.runner.heartbeat"
RUNNER_ANNOUNCE = f"{NAMESPACE}.runner.announce"
RUNNER_HANDOFF = f"{NAMESPACE}.runner.handoff"
STATS = f"{NAMESPACE}.stats"
COORDINATOR_QUEUE = "coordinator"

ALL_CONTROL = f"{NAMESPACE}.stream.*.control"
ALL_LIFECYCLE = f"{NAMESPACE}.stream.*.lifecycle"


def in_namespace(name: str, namespace: str) -> str:
    """This namespace's subject or key ``name`` as spelled in ``namespace``, for tools
    that look at several suites from one process."""
    return namespace + name.removeprefix(NAMESPACE)


def runner_start(runner_id: str) -> str:
    return f"{NAMESPACE}.runner.{runner_id}.start"


def stream_subject(stream_id: str, kind: str) -> str:
    """``<ns>.stream.<id>.<kind>`` where kind is tokens, control, readers or lifecycle."""
    return f"{NAMESPACE}.stream.{stream_id}.{kind}"


def stream_wildcard(stream_id: str) -> str:
    """Everything about one stream, for the streamer's single subscription per stream."""
    return f"{NAMESPACE}.stream.{stream_id}.*"


def stream_id_of(subject: str) -> str:
    return subject.split(".", 3)[2]


def log_key(stream_id: str) -> str:
    return f"{NAMESPACE}:log:{{{stream_id}}}"


def meta_key(stream_id: str) -> str:
    return f"{NAMESPACE}:meta:{{{stream_id}}}"


def prompt_key(stream_id: str) -> str:
    """A large request's prompt, parked while the stream waits for a runner."""
    return f"{NAMESPACE}:prompt:{{{stream_id}}}"


def conversation_key(tenant: str, conversation_id: str) -> str:
    """Scoped by tenant so two tenants' conversation ids never collide; in the tenant's
    slot, so admission's script touches one slot."""
    return f"{NAMESPACE}:conv:{{{tenant}}}:{conversation_id}"


def tenant_active_key(tenant: str) -> str:
    return f"{NAMESPACE}:tenant:{{{tenant}}}:active"


FEEDBACK_STREAM = f"{NAMESPACE}:feedback"
