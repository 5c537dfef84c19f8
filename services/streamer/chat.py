"""The streamer's OpenAI-compatible surface: ``POST /v1/chat/completions``, ``GET /v1/models``.

A chat request is admitted like any other stream (same rules, a short default abandon
window) and served by the same :class:`Reader` as the native SSE endpoint, speaking
OpenAI's dialect through its :class:`Frames`; so a client that leaves lets the reader
lease lapse exactly as an SSE client does, and the generation ends ``abandoned``.
Errors use OpenAI's body, with ``type`` set to sluice's own error type.
"""

from __future__ import annotations

import functools
import re
import time

import msgspec
from aiohttp import web

from libs.common import metrics
from libs.common.auth import mint_read_token
from libs.common.boundary import classify
from libs.common.errors import Overloaded, SluiceError, Unavailable, from_type
from libs.common.http import (
    LIMITS,
    Handler,
    error_response,
    json_response,
    read_body,
    request_tenant,
)
from libs.common.openai_wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
    CompletionChoice,
    CompletionMessage,
    Delta,
    ErrorDetail,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
    decode_chat_request,
)
from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS
from libs.common.submit import build_submit, known_models, submit
from libs.common.wire import Done, Failed, StatusChange, Submit
from services.streamer.app import HUB, SSE_HEADERS, STORE
from services.streamer.reader import Reader

DEFAULT_ABANDON_S = 5.0
STREAM_ID_HEADER = "X-Sluice-Stream-Id"
READ_TOKEN_HEADER = "X-Sluice-Read-Token"
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
_PARAM = re.compile(r"`\$\.([A-Za-z_]\w*)")
_json = msgspec.json.Encoder()


def _data(payload: object) -> bytes:
    return b"data: " + _json.encode(payload) + b"\n\n"


def _error(error_type: str, message: str) -> ErrorResponse:
    found = _PARAM.search(message)
    return ErrorResponse(ErrorDetail(message, error_type, found.group(1) if found else None))


def _usage(done: Done) -> Usage:
    prompt = done.prompt_tokens or 0
    completion = done.tokens if done.completion_tokens is None else done.completion_tokens
    return Usage(prompt, completion, prompt + completion)


class ChunkFrames:
    """``stream: true``: the role chunk at once, content chunks, the finish chunk, ``[DONE]``.

    Content chunks carry ``id: <last token index>`` so a client can resume on the
    native endpoint with Last-Event-ID; OpenAI clients ignore the field.
    """

    def __init__(self, stream_id: str, model: str, include_usage: bool) -> None:
        self._template = ChatCompletionChunk(id=stream_id, created=int(time.time()), model=model)
        self._include_usage = include_usage

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        return _data(msgspec.structs.replace(self._template, choices=choices, usage=usage))

    def opening(self) -> bytes:
        return self._chunk([ChunkChoice(delta=Delta(role="assistant", content=""))])

    def status(self, change: StatusChange) -> bytes:
        return b""

    def tokens(self, last_seq: int, texts: list[str], ts: int) -> bytes:
        return b"id: %d\n" % last_seq + self._chunk(
            [ChunkChoice(delta=Delta(content="".join(texts)))]
        )

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes:
        if isinstance(terminal, Failed):
            return _data(_error(terminal.type, terminal.message))
        frames = self._chunk([ChunkChoice(finish_reason=terminal.finish_reason)])
        if self._include_usage:
            frames += self._chunk([], _usage(terminal))
        return frames + DONE

    def ping(self) -> bytes:
        return PING

    def reconnect(self) -> bytes:
        return _data(_error(Unavailable.type, _shutdown_message(self._template.id)))


class CompletionFrames:
    """``stream: false``: nothing goes out before the end; the answer is gathered here."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.end: Done | Failed | None = None

    def opening(self) -> bytes:
        return b""

    def status(self, change: StatusChange) -> bytes:
        return b""

    def tokens(self, last_seq: int, texts: list[str], ts: int) -> bytes:
        self.texts.extend(texts)
        return b""

    def terminal(self, terminal: Done | Failed, last_seq: int) -> bytes:
        self.end = terminal
        return b""

    def ping(self) -> bytes:
        return b""

    def reconnect(self) -> bytes:
        return b""


class HeldAnswer:
    """The sink of a ``stream: false`` answer: writes nothing, but fails once the client left.

    The reader writes (empty) frames on every token and ping, so a client that hangs
    up stops the reader, and with it the lease, as promptly as on a streamed answer.
    """

    def __init__(self, request: web.Request) -> None:
        self._request = request

    async def write(self, data: bytes) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")


def _shutdown_message(stream_id: str) -> str:
    return f"the streamer is shutting down; resume on /v1/streams/{stream_id}/events"


def openai_error_response(
    error: SluiceError, headers: dict[str, str] | None = None
) -> web.Response:
    """The contract's status and Retry-After, with OpenAI's error body."""
    response = error_response(error)
    response.body = _json.encode(_error(error.type, error.message))
    response.headers.update(headers or {})
    return response


def openai_errors(handler: Handler) -> Handler:
    """Answer a handler's errors in OpenAI's body rather than sluice's."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            error = classify(exc)
            labels = {
                "service": "streamer",
                "type": error.type,
                "class": f"{error.status // 100}xx",
            }
            metrics.http_errors.add(1, labels)
            return openai_error_response(error)

    return wrapped


@openai_errors
async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    tenant = request_tenant(request, settings)
    body = decode_chat_request(await read_body(request, settings.max_body_bytes))
    if request.app[HUB].reader_count >= settings.max_connections:
        raise Overloaded("this streamer holds its maximum of open streams", retry_after_s=1)
    message = build_submit(settings, tenant, body.stream_request(), DEFAULT_ABANDON_S)
    token = mint_read_token(settings.signing_secret, message.id, settings.read_token_ttl_s)
    headers = {STREAM_ID_HEADER: message.id, READ_TOKEN_HEADER: token}
    with request.app[LIMITS].connection("SSE streams", tenant, settings.tenant_max_sse):
        if body.stream:
            return await _stream(request, body, message, headers)
        return await _complete(request, body, message, headers)


def _reader(
    request: web.Request,
    stream_id: str,
    sink: web.StreamResponse | HeldAnswer,
    frames: ChunkFrames | CompletionFrames,
) -> Reader:
    settings = request.app[SETTINGS]
    streamed = isinstance(sink, web.StreamResponse)
    return Reader(
        stream_id,
        sink,
        request.transport if streamed else None,
        request.app[STORE],
        0,
        buffer_bytes=settings.conn_buffer_bytes,
        heartbeat_s=settings.heartbeat_s,
        stall_timeout_s=settings.stall_timeout_s,
        frames=frames,
        send_buffer_bytes=settings.conn_sndbuf_bytes if streamed else 0,
    )


async def _serve(
    request: web.Request, reader: Reader, message: Submit, response: web.StreamResponse | None
) -> str:
    """Subscribe, submit, then serve; subscribing first means no token is published unseen."""
    async with request.app[HUB].reading(reader):
        accepted = await submit(
            request.app[NATS_CLIENT], request.app[REDIS_CLIENT], request.app[SETTINGS], message
        )
        if response is not None:
            await response.prepare(request)
        return await reader.serve(StatusChange(status=accepted.status))


async def _stream(
    request: web.Request, body: ChatRequest, message: Submit, headers: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
    frames = ChunkFrames(message.id, body.model, body.include_usage)
    try:
        await _serve(request, _reader(request, message.id, response, frames), message, response)
    except ConnectionError:
        if not response.prepared:
            raise
    except Exception as exc:
        if not response.prepared:
            raise
        error = classify(exc)  # the headers are out: the failure is a chunk, never a cut body
        await response.write(_data(_error(error.type, error.message)))
    return response


async def _complete(
    request: web.Request, body: ChatRequest, message: Submit, headers: dict[str, str]
) -> web.StreamResponse:
    frames = CompletionFrames()
    reason = await _serve(
        request, _reader(request, message.id, HeldAnswer(request), frames), message, None
    )
    if reason == "shutdown":
        error = Unavailable(_shutdown_message(message.id), retry_after_s=1)
        return openai_error_response(error, headers)
    if isinstance(frames.end, Failed):
        return openai_error_response(from_type(frames.end.type, frames.end.message), headers)
    if not isinstance(frames.end, Done):
        return web.Response(status=499)  # the client left; no one reads this
    choice = CompletionChoice(CompletionMessage("".join(frames.texts)), frames.end.finish_reason)
    completion = ChatCompletion(
        id=message.id,
        created=message.created_ns // 1_000_000_000,
        model=body.model,
        choices=[choice],
        usage=_usage(frames.end),
    )
    return json_response(completion, headers=headers)


@openai_errors
async def list_models(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    request_tenant(request, settings)
    return json_response(ModelList([ModelCard(name) for name in known_models(settings)]))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
