"""Admitting a request: validation beyond the schema, then the coordinator's verdict.

Used by the gateway (HTTP and WebSocket) and by the streamer's OpenAI-compatible
endpoint, so every entrance applies the same rules.
"""

from __future__ import annotations

import time

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from opentelemetry.trace import SpanKind

from libs.common import names, tracing
from libs.common.api import StreamRequest
from libs.common.auth import new_stream_id
from libs.common.connections import RedisClient
from libs.common.errors import InvalidRequest, Unavailable, from_type
from libs.common.prompts import park_if_large
from libs.common.settings import Settings
from libs.common.wire import Accepted, Rejected, Submit, submit_codec, submit_reply_codec

SIM_MODEL = "sim"
NATIVE_ABANDON_S = 30.0
"""``abandon_after_s`` unless asked, for the native API: room for an SSE client to resume."""
CHAT_ABANDON_S = 5.0
"""``abandon_after_s`` unless asked, for ``/v1/chat/completions``: OpenAI clients never resume."""


def known_models(settings: Settings) -> list[str]:
    return [SIM_MODEL, *sorted(name for name in settings.models if name != SIM_MODEL)]


def build_submit(
    settings: Settings, tenant: str, request: StreamRequest, default_abandon_s: float
) -> Submit:
    if request.model not in known_models(settings):
        raise InvalidRequest(
            f"unknown model {request.model!r}; known: {', '.join(known_models(settings))}"
        )
    return Submit(
        id=new_stream_id(),
        tenant=tenant,
        model=request.model,
        prompt=request.prompt,
        messages=request.messages,
        max_tokens=request.max_tokens,
        created_ns=time.time_ns(),
        conversation_id=request.conversation_id,
        supersede=request.resolved_supersede(),
        debounce_ms=request.debounce_ms,
        abandon_after_s=request.resolved_abandon_after_s(default_abandon_s),
        sim=request.sim,
        sampling=request.sampling,
        tooling=request.tooling,
    )


async def submit(nc: NATS, redis: RedisClient, settings: Settings, message: Submit) -> Accepted:
    """Hand the stream to a coordinator; its refusal becomes the matching error.

    The stream's trace starts here, and travels to the coordinator in the headers. A
    large prompt is parked in Redis first (see :mod:`libs.common.prompts`).
    """
    with tracing.stream_span("submit", message.id, kind=SpanKind.CLIENT):
        message = await park_if_large(redis, message, settings.log_ttl_s)
        try:
            reply = await nc.request(
                names.SUBMIT,
                submit_codec.encode(message),
                timeout=settings.submit_timeout_s,
                headers=tracing.headers(),
            )
        except (NatsTimeout, NoRespondersError):
            raise Unavailable("no coordinator answered; retry shortly", retry_after_s=1) from None
    verdict: Accepted | Rejected = submit_reply_codec.decode(reply.data)
    if isinstance(verdict, Rejected):
        raise from_type(verdict.type, verdict.message, verdict.retry_after_s)
    return verdict
