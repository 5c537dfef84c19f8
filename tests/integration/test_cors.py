"""CORS: the listed origins may call the gateway and read the streamer; others get no access."""

from __future__ import annotations

import aiohttp

from libs.tools.stack import Stack

PAGE = "http://localhost"  # completed with the gateway's port: an origin the suite lists


def page_origin(stack: Stack) -> str:
    return f"{PAGE}:{stack.first('gateway').port}"


async def preflight(
    session: aiohttp.ClientSession, url: str, origin: str, method: str = "POST"
) -> aiohttp.ClientResponse:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, last-event-id",
    }
    async with session.options(url, headers=headers) as response:
        await response.read()
        return response


async def test_preflight_from_a_listed_origin_allows_the_call(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    origin = page_origin(stack)
    answer = await preflight(session, f"{stack.gateway}/v1/streams", origin)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    allowed = answer.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "last-event-id"} <= set(allowed.split(", "))
    assert "Access-Control-Allow-Credentials" not in answer.headers


async def test_preflight_from_another_origin_is_refused_with_a_json_error(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    answer = await preflight(session, f"{stack.streamer}/v1/streams/x/events", "http://evil.test")
    assert answer.status == 403
    assert "Access-Control-Allow-Origin" not in answer.headers
    async with session.options(
        f"{stack.streamer}/v1/streams/x/events",
        headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "GET"},
    ) as response:
        assert (await response.json())["error"]["type"] == "forbidden"


async def test_answers_and_streams_carry_the_headers_a_page_needs(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    origin = page_origin(stack)
    async with session.post(
        f"{stack.gateway}/v1/streams",
        json={"prompt": "cors", "sim": {"tokens": 3, "ttft_ms": 0}},
        headers={"Origin": origin},
    ) as created:
        assert created.status == 201
        assert created.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in created.headers["Vary"]
        events_url = (await created.json())["events_url"]
    async with session.get(events_url, headers={"Origin": origin}) as stream:
        assert stream.headers["Access-Control-Allow-Origin"] == origin
        assert "X-Sluice-Stream-Id" in stream.headers["Access-Control-Expose-Headers"]
        assert b"event: done" in await stream.read()
    async with session.get(events_url, headers={"Origin": "http://evil.test"}) as refused:
        assert "Access-Control-Allow-Origin" not in refused.headers
