"""The streamer's OpenAI-compatible surface: ``POST /v1/chat/completions``, ``GET /v1/models``.

A chat request is admitted like any other stream (same rules, a short default abandon
window) and served by the same :class:`Reader` as the native SSE endpoint, speaking
OpenAI's dialect through its :class:`Frames`; so a client that leaves lets the reader
lease lapse exactly as an SSE client does, and the generation ends ``abandoned``.
Errors use OpenAI's body, with ``type`` set to sluice's own error type.
"""

from __future__ import annotations

import functools

import msgspec
from aiohttp import web

from libs.common import metrics, sse
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
    ChatRequest,
    CompletionChoice,
    ModelCard,
    ModelList,
    decode_chat_request,
)
from libs.common.service import NATS_CLIENT, REDIS_CLIENT, SETTINGS
from libs.common.submit import CHAT_ABANDON_S, build_submit, known_models, submit
from libs.common.wire import Done, Failed, StatusChange, Submit
from services.streamer.keys import HUB, STORE
from services.streamer.openai_frames import (
    ChunkFrames,
    CompletionFrames,
    error_body,
    shutdown_message,
    usage_of,
)
from services.streamer.reader import Reader, ReaderLimits

STREAM_ID_HEADER = "X-Sluice-Stream-Id"
READ_TOKEN_HEADER = "X-Sluice-Read-Token"
_json = msgspec.json.Encoder()


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


def openai_error_response(
    error: SluiceError, headers: dict[str, str] | None = None
) -> web.Response:
    """The contract's status and Retry-After, with OpenAI's error body."""
    response = error_response(error)
    response.body = _json.encode(error_body(error.type, error.message))
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
    message = build_submit(settings, tenant, body.stream_request(), CHAT_ABANDON_S)
    token = mint_read_token(settings.signing_secret, message.id, settings.read_token_ttl_s)
    headers = {STREAM_ID_HEADER: message.id, READ_TOKEN_HEADER: token}
    with request.app[LIMITS].connection("streams", tenant, settings.tenant_max_sse):
        if body.stream:
            return await _stream(request, body, message, headers)
        return await _complete(request, body, message, headers)


def _reader(
    request: web.Request,
    stream_id: str,
    sink: web.StreamResponse | HeldAnswer,
    frames: ChunkFrames | CompletionFrames,
) -> Reader:
    transport = request.transport if isinstance(sink, web.StreamResponse) else None
    limits = ReaderLimits.from_settings(request.app[SETTINGS])
    return Reader(stream_id, sink, transport, request.app[STORE], 0, limits, frames)


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
    response = web.StreamResponse(headers={**sse.RESPONSE_HEADERS, **headers})
    frames = ChunkFrames(message.id, body.model, body.include_usage)
    reader = _reader(request, message.id, response, frames)
    try:
        await _serve(request, reader, message, response)
    except ConnectionError:
        if not response.prepared:
            raise
    except Exception as exc:
        if not response.prepared:
            raise
        await reader.fail(classify(exc))  # the headers are out: an error chunk, not a cut body
    return response


async def _complete(
    request: web.Request, body: ChatRequest, message: Submit, headers: dict[str, str]
) -> web.StreamResponse:
    frames = CompletionFrames()
    reason = await _serve(
        request, _reader(request, message.id, HeldAnswer(request), frames), message, None
    )
    if reason == "shutdown":
        error = Unavailable(shutdown_message(message.id), retry_after_s=1)
        return openai_error_response(error, headers)
    if isinstance(frames.end, Failed):
        return openai_error_response(from_type(frames.end.type, frames.end.message), headers)
    if not isinstance(frames.end, Done):
        return web.Response(status=499)  # the client left; no one reads this
    choice = CompletionChoice(frames.answer(frames.end), frames.end.finish_reason)
    completion = ChatCompletion(
        id=message.id,
        created=message.created_ns // 1_000_000_000,
        model=body.model,
        choices=[choice],
        usage=usage_of(frames.end),
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
