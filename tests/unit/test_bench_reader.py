"""The benchmark's bare-socket SSE reader: same events however the bytes arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import pytest
from aiohttp import test_utils, web

from libs.client.http import StreamRefused
from libs.common import sse
from libs.common.sse import Event
from libs.tools.bench.reader import _SSEProtocol, follow

CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)
PLAIN_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
BODY = (
    sse.RETRY
    + b": keepalive\n\n"
    + sse.token_frame(1, ["héllo", " ☃"], 123)
    + b"data: line one\r\ndata: line two\r\n\r\n"
    + sse.json_frame("done", {"finish_reason": "stop"}, 2)
)
TERMINATOR = b"0\r\n\r\n"


def chunked(body: bytes, sizes: Iterable[int]) -> bytes:
    """``body`` in chunks of ``sizes`` (then the rest): lower and upper hex, one extension."""
    out, at = b"", 0
    for n, size in enumerate([*sizes, len(body)]):
        piece = body[at : at + size]
        if not piece:
            break
        at += len(piece)
        size_line = b"%x;name=value" if n == 1 else b"%X" if n % 2 else b"%x"
        out += size_line % len(piece) + b"\r\n" + piece + b"\r\n"
    return out + TERMINATOR


# sizes 0x1e and 0x1F, a 1-byte chunk, cuts inside frames and UTF-8 characters
CHUNKED_RESPONSE = CHUNKED_HEAD + chunked(BODY, [7, 1, 30, 31, 2, 5, 7])


class Feed:
    """A protocol under test, with the events and receive times it delivered."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.events: list[Event] = []
        self.times: list[int] = []
        self.protocol = _SSEProtocol(self._on_event, self.done)

    def _on_event(self, event: Event, at_ns: int) -> None:
        self.events.append(event)
        self.times.append(at_ns)

    def send(self, *pieces: bytes) -> Feed:
        for piece in pieces:
            if piece:
                self.protocol.data_received(piece)
        return self


def expected_events() -> list[Event]:
    events = sse.SSEParser().feed(BODY)
    assert len(events) == 3  # the keepalive and the bare retry dispatch nothing
    return events


async def test_chunked_response_fed_whole() -> None:
    """The reference: every event, with its id and retry, and done after the last chunk."""
    before = time.time_ns()
    feed = Feed().send(CHUNKED_RESPONSE)
    assert feed.events == expected_events()
    assert feed.events[0].json() == {"seq": 1, "n": 2, "text": "héllo ☃", "ts": 123}
    assert feed.events[0].retry == 1000 and feed.events[2].last_event_id == "2"
    assert all(before <= at <= time.time_ns() for at in feed.times)
    assert feed.done.done() and feed.done.result() is None


async def test_chunked_response_split_at_every_byte_boundary() -> None:
    """A TCP read can end anywhere: in the head, a size line, a CRLF or a UTF-8 character."""
    for cut in range(1, len(CHUNKED_RESPONSE)):
        feed = Feed().send(CHUNKED_RESPONSE[:cut])
        assert not feed.done.done() or cut > len(CHUNKED_RESPONSE) - len(TERMINATOR), cut
        feed.send(CHUNKED_RESPONSE[cut:])
        assert feed.events == expected_events(), cut
        assert feed.done.done(), cut


async def test_chunked_response_one_byte_at_a_time() -> None:
    """Events arrive as soon as their bytes do; done only once the last chunk arrives."""
    feed = Feed()
    terminator_at = len(CHUNKED_RESPONSE) - len(TERMINATOR)
    for index in range(len(CHUNKED_RESPONSE)):
        feed.send(CHUNKED_RESPONSE[index : index + 1])
        if index == terminator_at - 1:  # every data chunk in, the terminator not yet
            assert feed.events == expected_events()
        assert not feed.done.done() or index >= terminator_at, index
    assert feed.events == expected_events()
    assert feed.done.done()


async def test_chunk_extension_is_accepted() -> None:
    feed = Feed().send(CHUNKED_HEAD + b"5;x=y\r\ndata:\r\n8;a=b;c\r\n hello\n\n\r\n" + TERMINATOR)
    assert [(e.type, e.data) for e in feed.events] == [("message", "hello")]
    assert feed.done.done()


async def test_close_delimited_body_ends_with_the_connection() -> None:
    """Without Transfer-Encoding the body is everything up to the close."""
    response = PLAIN_HEAD + BODY
    for cut in range(1, len(response)):
        feed = Feed().send(response[:cut], response[cut:])
        assert feed.events == expected_events(), cut
        assert not feed.done.done(), cut
        feed.protocol.connection_lost(None)
        assert feed.done.done() and feed.done.result() is None, cut


async def test_connection_error_fails_the_stream() -> None:
    feed = Feed().send(PLAIN_HEAD + BODY[:40])
    error = ConnectionResetError("reset by peer")
    feed.protocol.connection_lost(error)
    assert feed.done.exception() is error


async def test_header_names_are_case_insensitive_and_spacing_is_optional() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type:text/event-stream\r\ntransfer-encoding:chunked\r\n\r\n"
    feed = Feed().send(head + b"5\r\ndata:\r\n8\r\n hello\n\n\r\n" + TERMINATOR)
    assert [(e.type, e.data) for e in feed.events] == [("message", "hello")]
    assert feed.done.done() and feed.done.exception() is None


@pytest.mark.parametrize("cut", [10, len(CHUNKED_HEAD) + 20])
async def test_a_stream_cut_off_before_its_end_fails(cut: int) -> None:
    """A close inside the head or before the last chunk is an error, not a short stream."""
    feed = Feed().send(CHUNKED_RESPONSE[:cut])
    feed.protocol.connection_lost(None)
    assert isinstance(feed.done.exception(), ConnectionResetError)


async def test_bytes_after_a_refusal_are_ignored() -> None:
    """A chunked error body arriving after the head neither raises nor delivers events."""
    head = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
    feed = Feed().send(head, b"4\r\n{}\r\n\r\n\r\n" + TERMINATOR)
    error = feed.done.exception()
    assert isinstance(error, StreamRefused) and error.status == 503
    assert feed.events == []


@pytest.mark.parametrize("cut", [None, 5, 20, 60])
async def test_error_status_is_refused(cut: int | None) -> None:
    """A non-200 answer fails the stream with StreamRefused and delivers no events."""
    body = b'{"error": {"type": "not_found"}}'
    response = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    feed = Feed()
    if cut is None:
        feed.send(response)
    else:
        feed.send(response[:cut], response[cut:])
    error = feed.done.exception()
    assert isinstance(error, StreamRefused)
    assert error.status == 404
    assert error.headers["Content-Type"] == "application/json"
    assert feed.events == []
    if cut is None:
        assert error.json() == {"error": {"type": "not_found"}}


async def test_follow_reads_a_live_stream_to_its_end() -> None:
    """Against a real aiohttp server: the GET it sends, every event, and a return at the end."""
    requests: list[web.Request] = []
    frames = [sse.RETRY, *(sse.json_frame("token", {"n": n}, n) for n in range(3))]
    frames.append(sse.json_frame("done", {"finish_reason": "stop"}, 3))

    async def stream(request: web.Request) -> web.StreamResponse:
        requests.append(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for frame in frames:
            await response.write(frame)
            await asyncio.sleep(0.001)
        return response

    app = web.Application()
    app.router.add_get("/v1/streams/s-1/events", stream)
    server = test_utils.TestServer(app)
    await server.start_server()
    received: list[Event] = []
    try:
        async with asyncio.timeout(5):
            await follow(
                str(server.make_url("/v1/streams/s-1/events?from=2")),
                lambda event, _at: received.append(event),
            )
    finally:
        await server.close()
    assert [(e.type, e.json(), e.last_event_id) for e in received] == [
        ("token", {"n": 0}, "0"),
        ("token", {"n": 1}, "1"),
        ("token", {"n": 2}, "2"),
        ("done", {"finish_reason": "stop"}, "3"),
    ]
    assert len(requests) == 1
    assert requests[0].query["from"] == "2"
    assert requests[0].headers["Accept"] == "text/event-stream"


async def test_follow_raises_stream_refused_for_an_error_status() -> None:
    server = test_utils.TestServer(web.Application())
    await server.start_server()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(StreamRefused) as refused:
                await follow(str(server.make_url("/missing")), lambda event, _at: None)
    finally:
        await server.close()
    assert refused.value.status == 404
