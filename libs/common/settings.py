"""Typed configuration read once from ``SLUICE_*`` environment variables.

Every field of :class:`Settings` is one variable: ``heartbeat_s`` is ``SLUICE_HEARTBEAT_S``.
A bad value fails at start with the variable's name and the value, never later.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from libs.common.names import DEFAULT_NAMESPACE, NAMESPACE_PATTERN

PREFIX = "SLUICE_"

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[float, Meta(gt=0)]
Count = Annotated[int, Meta(ge=1)]


class SettingsError(ValueError):
    """A ``SLUICE_*`` variable holds a value its field cannot take."""


class ModelSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One entry of ``SLUICE_MODELS``: how a public model name reaches a backend."""

    backend: str = "openai"
    base_url: str = ""
    upstream_model: str = ""
    api_key: str = ""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_retries: int = 2


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """All of sluice's configuration; defaults suit ``sluice dev`` on one machine."""

    namespace: Annotated[str, Meta(pattern=NAMESPACE_PATTERN)] = DEFAULT_NAMESPACE
    nats_url: str = "nats://127.0.0.1:4222"
    nats_tls_ca: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_tls_ca: str = ""
    secret: str = ""
    api_keys: str = ""

    host: str = "0.0.0.0"
    gateway_port: Port = 8080
    streamer_port: Port = 8081
    coordinator_port: Port = 8082
    runner_port: Port = 8083
    public_gateway_url: str = ""
    public_streamer_url: str = ""

    max_body_bytes: Count = 1_048_576
    read_token_ttl_s: Count = 86_400
    heartbeat_s: Positive = 15.0
    stall_timeout_s: Positive = 30.0
    max_connections: Count = 20_000
    conn_buffer_bytes: Count = 65_536
    conn_sndbuf_bytes: Annotated[int, Meta(ge=0)] = 65_536
    drain_timeout_s: Positive = 10.0
    reader_lease_s: Positive = 1.0

    log_ttl_s: Count = 3_600
    log_sync_replicas: Annotated[int, Meta(ge=0)] = 0
    log_sync_timeout_ms: Count = 1_000
    log_maxlen: Count = 1_000_000
    feedback_maxlen: Count = 100_000

    runner_id: str = ""
    runner_slots: Count = 256
    runner_flush_ms: Annotated[float, Meta(ge=0)] = 10.0
    runner_flush_tokens: Count = 32
    runner_heartbeat_s: Positive = 1.0
    runner_dead_after_s: Positive = 3.0
    models: dict[str, ModelSpec] = {}

    queue_max: Annotated[int, Meta(ge=0)] = 1_000
    queue_wait_s: Positive = 30.0
    tenant_max_streams: Count = 1_000
    submit_timeout_s: Positive = 5.0

    log_level: str = "INFO"
    telemetry: bool = True

    @property
    def keys_to_tenants(self) -> dict[str, str]:
        """``SLUICE_API_KEYS`` as ``{key: tenant}``; empty means authentication is off."""
        pairs = (item.strip() for item in self.api_keys.split(",") if item.strip())
        return {key: tenant or key for key, _, tenant in (pair.partition(":") for pair in pairs)}

    @property
    def effective_secret(self) -> bytes:
        """The HMAC key for read tokens; an unset secret is only acceptable in development."""
        return (self.secret or "sluice-dev-secret").encode()

    @property
    def effective_runner_id(self) -> str:
        return self.runner_id or f"{socket.gethostname()}-{os.getpid()}"

    def public_url(self, service: str) -> str:
        """Base URL clients use to reach ``service`` (``gateway`` or ``streamer``)."""
        configured = getattr(self, f"public_{service}_url")
        if configured:
            return str(configured).rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{getattr(self, f'{service}_port')}"


def _decode_field(name: str, raw: str) -> Any:
    """Strings pass through (msgspec converts them); the model map is JSON."""
    return msgspec.json.decode(raw) if name == "models" else raw


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read :class:`Settings` from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        variable = PREFIX + field.name.upper()
        if variable in env:
            try:
                values[field.name] = _decode_field(field.name, env[variable])
            except msgspec.DecodeError as exc:
                raise SettingsError(f"{variable}={env[variable]!r}: {exc}") from None
    shown = {name: env.get(PREFIX + name.upper(), value) for name, value in values.items()}
    values.update(overrides)
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_name_variable(str(exc), shown | overrides)) from None


def _name_variable(message: str, values: Mapping[str, Any]) -> str:
    """Rewrite msgspec's ``$.field`` path as the environment variable and its value."""
    for name, value in values.items():
        if f"`$.{name}`" in message or f"`$.{name}." in message or f"`$.{name}[" in message:
            return f"{PREFIX}{name.upper()}={value!r}: {message}"
    return message


def variable_names() -> list[str]:
    """Every variable sluice reads, for docs and deployment checks."""
    return [PREFIX + field.name.upper() for field in msgspec.structs.fields(Settings)]
