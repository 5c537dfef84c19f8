"""Typed configuration read once from ``SLUICE_*`` environment variables.

Every field of :class:`Settings` is one variable: ``heartbeat_s`` is ``SLUICE_HEARTBEAT_S``.
A bad value fails at start with the variable's name and the value, never later.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from libs.common.names import DEFAULT_NAMESPACE, NAMESPACE_PATTERN

PREFIX = "SLUICE_"

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[float, Meta(gt=0)]
Count = Annotated[int, Meta(ge=1)]

DEV_SECRET = "sluice-dev-secret"
MIN_SECRET_BYTES = 32
KNOWN_PLACEHOLDERS = frozenset({DEV_SECRET, "compose-dev-secret", "dev-only-not-a-secret"})
SECRET_VARIABLES = frozenset({"secret", "api_keys", "models", "admin_token"})
"""Fields whose values never appear in an error message or a log."""


class SettingsError(ValueError):
    """A ``SLUICE_*`` variable holds a value its field cannot take."""


class ModelSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One entry of ``SLUICE_MODELS``: how a public model name reaches a backend.

    ``continuation`` says whether another runner may take an answer over mid-way:
    ``prefix`` re-requests it with the logged partial answer as an assistant prefix
    (vLLM's ``continue_final_message``); ``none`` fails it, retryable, as before.
    """

    backend: str = "openai"
    base_url: str = ""
    upstream_model: str = ""
    api_key: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_retries: int = 2
    continuation: Literal["prefix", "none"] = "none"

    def upstream_key(self) -> str:
        """The key for the upstream: inline, or named by an environment variable or a file,
        so that ``SLUICE_MODELS`` itself need hold no secret."""
        if self.api_key_env:
            if self.api_key_env not in os.environ:
                raise SettingsError(f"SLUICE_MODELS: api_key_env names unset {self.api_key_env}")
            return os.environ[self.api_key_env].strip()
        if self.api_key_file:
            try:
                with open(self.api_key_file, encoding="utf-8") as file:
                    return file.read().strip()
            except OSError as exc:
                raise SettingsError(
                    f"SLUICE_MODELS: api_key_file {self.api_key_file!r}: {exc.strerror}"
                ) from None
        return self.api_key


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """All of sluice's configuration; defaults suit ``sluice dev`` on one machine."""

    namespace: Annotated[str, Meta(pattern=NAMESPACE_PATTERN)] = DEFAULT_NAMESPACE
    nats_url: str = "nats://127.0.0.1:4222"
    nats_tls_ca: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_tls_ca: str = ""
    env: Literal["development", "production"] = "development"
    secret: str = ""
    api_keys: str = ""
    api_keys_file: str = ""
    admin_token: str = ""
    admin_port: Annotated[int, Meta(ge=0, le=65535)] = 0

    host: str = "0.0.0.0"
    gateway_port: Port = 8080
    streamer_port: Port = 8081
    coordinator_port: Port = 8082
    runner_port: Port = 8083
    public_gateway_url: str = ""
    public_streamer_url: str = ""
    cors_origins: str = ""

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
    tenant_max_running: Annotated[int, Meta(ge=0)] = 0
    tenant_requests_per_s: Positive = 50.0
    tenant_request_burst: Count = 100
    tenant_frames_per_s: Positive = 100.0
    tenant_frame_burst: Count = 200
    tenant_max_sockets: Count = 100
    tenant_max_sse: Count = 2_000
    max_stream_s: Positive = 3_600.0
    submit_timeout_s: Positive = 5.0

    log_level: str = "INFO"
    telemetry: bool = True

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys.strip() or self.api_keys_file)

    @property
    def secrets(self) -> tuple[bytes, ...]:
        """The read-token keys: ``SLUICE_SECRET`` is a comma-separated rotation whose first
        entry signs and every entry verifies. Unset, a development key stands in, which
        :func:`check_deployment` allows only with authentication off outside production."""
        listed = tuple(item.strip().encode() for item in self.secret.split(",") if item.strip())
        return listed or (DEV_SECRET.encode(),)

    @property
    def signing_secret(self) -> bytes:
        return self.secrets[0]

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


def check_deployment(settings: Settings) -> None:
    """Refuse what is unsafe on the internet: a forgeable read-token key wherever tokens
    guard one tenant from another, and open operator endpoints in production."""
    if settings.env == "production" and not (settings.admin_port or settings.admin_token):
        raise SettingsError(
            "SLUICE_ENV=production needs SLUICE_ADMIN_PORT or SLUICE_ADMIN_TOKEN:"
            " /metrics and /dashboard must not be public"
        )
    if not (settings.auth_enabled or settings.env == "production"):
        return
    why = "SLUICE_SECRET is required when SLUICE_API_KEYS is set or SLUICE_ENV=production"
    if not settings.secret.strip():
        raise SettingsError(f"{why}: it is unset")
    for position, secret in enumerate(settings.secrets, 1):
        if len(secret) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"{why}: entry {position} is {len(secret)} bytes, at least {MIN_SECRET_BYTES}"
                " are required (e.g. `openssl rand -hex 32`)"
            )
        if secret.decode() in KNOWN_PLACEHOLDERS:
            raise SettingsError(f"{why}: entry {position} is a published development value")


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
                shown_value = _shown(field.name, env[variable])
                raise SettingsError(f"{variable}={shown_value!r}: {exc}") from None
    shown = {name: _shown(name, env[PREFIX + name.upper()]) for name in values}
    values.update(overrides)
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        shown |= {name: _shown(name, value) for name, value in overrides.items()}
        raise SettingsError(_name_variable(str(exc), shown)) from None


def _shown(name: str, value: Any) -> Any:
    """The value as an error message may show it: secrets are replaced by a marker."""
    return "<redacted>" if name in SECRET_VARIABLES else value


def _name_variable(message: str, values: Mapping[str, Any]) -> str:
    """Rewrite msgspec's ``$.field`` path as the environment variable and its value."""
    for name, value in values.items():
        if f"`$.{name}`" in message or f"`$.{name}." in message or f"`$.{name}[" in message:
            return f"{PREFIX}{name.upper()}={value!r}: {message}"
    return message


def variable_names() -> list[str]:
    """Every variable sluice reads, for docs and deployment checks."""
    return [PREFIX + field.name.upper() for field in msgspec.structs.fields(Settings)]
