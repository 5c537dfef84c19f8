"""One error boundary: every failure found by probing answers in the contract's JSON."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from libs.client.http import SluiceClient
from libs.common.boundary import classify
from libs.common.errors import Internal, Unavailable
from libs.common.http import error_middleware
from libs.tools.stack import Stack
from tests.integration.helpers import final, read_stream, sim

DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"prompt": "x", "sim": {"seed": 18446744073709551617}}', "`$.sim.seed`"),
        (b'{"prompt": "x", "sampling": {"seed": 99999999999999999999999}}', "`$.sampling.seed`"),
        (b'{"prompt": "\xff\xfe"}', "UTF-8"),
        (b'{"prompt": "x", "metadata": ' + DEEP + b"}", "nested"),
        (b'{"prompt": "x", "metadata": {"a": [[[[[[[[[1]]]]]]]]]}}', "nested deeper"),
        (b'{"prompt": "x", "metadata": {"a": 36893488147419103232}}', "64 bits"),
        (b'{"prompt": "x", "metadata": {"a": "' + b"x" * 20_000 + b'"}}', "bytes"),
    ],
)
async def test_out_of_range_and_malformed_input_is_a_400(
    client: SluiceClient, body: bytes, fragment: str
) -> None:
    status, answer = await client.create_raw(body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request" and fragment in answer["error"]["message"]


@pytest.mark.parametrize("value", ["9" * 5000, "²", "9" * 25, "-1", "1e3"])
async def test_a_bad_last_event_id_is_a_400_before_any_event(
    client: SluiceClient, session: aiohttp.ClientSession, value: str
) -> None:
    created = await client.create(prompt="x", sim=sim(tokens=2))
    async with session.get(created["events_url"], headers={"Last-Event-ID": value}) as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["type"] == "invalid_request"
    assert final(await read_stream(session, created["events_url"])).type == "done"


async def _exchange(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send_str(msgspec.json.encode(frame).decode())
    answer: dict[str, Any] = await ws.receive_json(timeout=10)
    return answer


@pytest.mark.parametrize("stream_id", ["a b", "a.>", ">", "st_x\r\nPUB x 1", "*", ""])
async def test_a_control_frame_naming_a_bad_stream_id_keeps_the_socket(
    stack: Stack, session: aiohttp.ClientSession, stream_id: str
) -> None:
    async with session.ws_connect(f"{stack.gateway}/v1/control") as ws:
        for kind in ("cancel", "pace", "feedback"):
            extra = {"pace": {"max_events_per_s": 1}, "feedback": {"rating": 1}}.get(kind, {})
            answer = await _exchange(ws, {"type": kind, "stream_id": stream_id, **extra})
            assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request"
        assert (await _exchange(ws, {"type": "ping", "ref": "p"}))["type"] == "pong"


async def test_a_submit_frame_with_a_huge_seed_is_an_error_frame_and_the_socket_stays(
    stack: Stack, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{stack.gateway}/v1/control") as ws:
        frame = {"type": "submit", "ref": "s", "prompt": "x", "sim": {"seed": 2**70}}
        answer = await _exchange(ws, frame)
        assert answer["type"] == "error" and answer["ref"] == "s"
        assert answer["error"]["type"] == "invalid_request"
        assert (await _exchange(ws, {"type": "ping", "ref": "p"}))["type"] == "pong"


async def _serve_failing(exc: BaseException) -> tuple[int, dict[str, str], Any]:
    async def fail(request: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[error_middleware("test")])
    app.router.add_get("/", fail)
    async with TestClient(TestServer(app)) as http:
        answer = await http.get("/")
        return answer.status, dict(answer.headers), await answer.json()


async def test_an_unexpected_error_is_a_500_with_a_correlation_id_found_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        status, _, body = await _serve_failing(RuntimeError("db password is hunter2"))
    assert status == 500 and body["error"]["type"] == "internal"
    correlation_id = body["error"]["correlation_id"]
    assert correlation_id in body["error"]["message"] and "hunter2" not in str(body)
    logged = [r for r in caplog.records if getattr(r, "correlation_id", None) == correlation_id]
    assert logged and logged[0].exc_info is not None


@pytest.mark.parametrize(
    "exc", [redis.exceptions.ConnectionError("refused"), ConnectionRefusedError(), TimeoutError()]
)
async def test_redis_or_nats_trouble_is_a_retryable_503(exc: BaseException) -> None:
    status, headers, body = await _serve_failing(exc)
    assert status == 503 and body["error"]["type"] == "unavailable"
    assert headers["Retry-After"] == "1"


def test_the_mapping_table_keeps_sluice_errors_and_hides_the_rest() -> None:
    known = Unavailable("x", retry_after_s=2)
    assert classify(known) is known
    assert isinstance(classify(KeyError("internal detail")), Internal)
