"""The gateway's stream operations, callable from HTTP and from the control socket."""

from __future__ import annotations

from libs.common.api import CreatedStream, ErrorBody, StreamInfo, StreamRequest
from libs.common.auth import mint_read_token
from libs.common.store import StreamMeta
from libs.common.stream_control import StreamControl
from libs.common.submit import NATIVE_ABANDON_S, build_submit, submit
from libs.common.wire import Submit


class Streams(StreamControl):
    """Creating and describing streams, beside the orders any plane takes."""

    async def create(self, tenant: str, request: StreamRequest) -> CreatedStream:
        return await self.admit(self.prepare(tenant, request))

    def prepare(self, tenant: str, request: StreamRequest) -> Submit:
        """Validate the request and name the stream, before anyone hears of it."""
        return build_submit(self.settings, tenant, request, NATIVE_ABANDON_S)

    async def admit(self, message: Submit) -> CreatedStream:
        """Hand a prepared stream to a coordinator; the answer of POST /v1/streams."""
        accepted = await submit(self._nc, self.store.redis, self.settings, message)
        token = mint_read_token(
            self.settings.signing_secret, message.id, self.settings.read_token_ttl_s
        )
        streamer = self.settings.public_url("streamer")
        return CreatedStream(
            id=message.id,
            status="queued",
            token=token,
            events_url=f"{streamer}/v1/streams/{message.id}/events?token={token}",
            control_url=self.settings.public_url("gateway").replace("http", "ws", 1)
            + "/v1/control",
            position=accepted.position,
        )

    async def info(self, tenant: str, stream_id: str) -> StreamInfo:
        meta = await self.meta(tenant, stream_id)
        if meta.status == "running":
            meta.tokens = await self.store.logged_tokens(stream_id)
        return describe(stream_id, meta)


def _seconds(ns: int) -> float | None:
    return ns / 1e9 if ns else None


def describe(stream_id: str, meta: StreamMeta) -> StreamInfo:
    error = ErrorBody(meta.error_type, meta.error_message) if meta.error_type else None
    return StreamInfo(
        id=stream_id,
        status=meta.status,
        model=meta.model,
        tokens=meta.tokens,
        created_at=meta.created_ns / 1e9,
        finish_reason=meta.finish_reason or None,
        ttft_ms=meta.ttft_ms,
        duration_ms=meta.duration_ms,
        conversation_id=meta.conversation_id or None,
        started_at=_seconds(meta.started_ns),
        finished_at=_seconds(meta.finished_ns),
        tokens_after_cancel=meta.tokens_after_cancel,
        cancel_to_stop_ms=meta.cancel_to_stop_ms,
        tokens_unread=meta.tokens_unread,
        error=error,
    )
