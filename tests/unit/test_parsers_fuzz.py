"""Property tests for every parser and decoder that takes input from outside.

Each parser, fed anything at all, either returns a value or raises the one error the
contract names for bad input; never anything else (a 500, a dropped socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats import errors as nats_errors

from libs.common.api import decode_frame, decode_request, frame_ref
from libs.common.auth import mint_read_token, verify_read_token
from libs.common.direct_nats import DirectNATS
from libs.common.errors import Forbidden, InvalidRequest, SluiceError, Unauthorized
from libs.common.keys import TENANT_PATTERN, load_ring, parse_entries
from libs.common.openai_wire import decode_chat_request
from libs.common.settings import ModelSpec, SettingsError
from libs.common.sse import SSEParser, frame
from libs.tools.fuzz.requests import CHAT_FIELDS, FRAME_FIELDS, STREAM_FIELDS
from services.runner.backends.openai import OpenAIBackend, _parse
from services.streamer.delivery import parse_last_event_id

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = b"fuzz-secret-fuzz-secret-fuzz-secret"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = sorted({*STREAM_FIELDS, *CHAT_FIELDS, *FRAME_FIELDS, "tokens"})
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
raw_bytes = st.binary(max_size=300)


def only_invalid_request(decode: Any, data: bytes) -> None:
    with contextlib.suppress(InvalidRequest):
        decode(data)


@FUZZ
@given(st.one_of(raw_bytes, bodies.map(msgspec.json.encode)))
def test_stream_requests_decode_or_fail_as_invalid_request(data: bytes) -> None:
    only_invalid_request(decode_request, data)


@FUZZ
@given(st.one_of(raw_bytes, bodies.map(msgspec.json.encode)))
def test_control_frames_decode_or_fail_as_invalid_request(data: bytes) -> None:
    only_invalid_request(decode_frame, data)


@FUZZ
@given(st.one_of(raw_bytes, bodies.map(msgspec.json.encode), st.just(b'{"a":' * 5000)))
def test_a_bad_frames_ref_is_read_or_none(data: bytes) -> None:
    ref = frame_ref(data)
    assert ref is None or isinstance(ref, str)


@FUZZ
@given(st.one_of(raw_bytes, bodies.map(msgspec.json.encode)))
def test_chat_requests_decode_or_fail_as_invalid_request(data: bytes) -> None:
    only_invalid_request(decode_chat_request, data)


@FUZZ
@given(bodies)
def test_an_accepted_request_fits_the_wire(body: dict[str, Any]) -> None:
    """What decodes can be encoded for NATS: no integer or nesting beyond what msgpack takes."""
    for decode in (decode_request, decode_frame):
        try:
            value = decode(msgspec.json.encode(body))
        except InvalidRequest:
            continue
        msgspec.msgpack.encode(value)


@FUZZ
@given(st.text(max_size=40))
def test_last_event_id_is_an_index_or_a_400(raw: str) -> None:
    try:
        index = parse_last_event_id(raw)
    except InvalidRequest:
        return
    assert 0 <= index < 10**18


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=80)))
def test_read_tokens_verify_or_are_refused_alike(token: str | None) -> None:
    with pytest.raises((Forbidden, Unauthorized)):
        verify_read_token([SECRET], "st_a", token)


@FUZZ
@given(st.integers(min_value=1, max_value=10**6), st.text(min_size=1, max_size=40))
def test_a_minted_token_verifies_for_its_stream_only(ttl: int, stream_id: str) -> None:
    token = mint_read_token(SECRET, stream_id, ttl)
    verify_read_token([b"other", SECRET], stream_id, token)
    with pytest.raises(Forbidden):
        verify_read_token([SECRET], stream_id + "x", token)


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=80)))
def test_api_key_headers_name_a_tenant_or_are_401(header: str | None) -> None:
    ring = load_ring("key-a:alice", "")
    try:
        assert ring.tenant_for(header) == "alice"
    except Unauthorized:
        return
    assert header is not None and header.removeprefix("Bearer ").strip() == "key-a"


@FUZZ
@given(st.text(max_size=120))
def test_key_entries_parse_or_fail_without_showing_a_key(text: str) -> None:
    try:
        entries = parse_entries(text, "SLUICE_API_KEYS")
    except SettingsError as error:
        assert "SLUICE_API_KEYS line" in str(error)
        return
    assert all(TENANT_PATTERN.fullmatch(tenant) and len(d) == 32 for d, tenant in entries)


sse_lines = st.sampled_from([b"retry: " + b"9" * 5000 + b"\n", b"id: \x00\n", b"data\n", b"\r\n"])


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=60), sse_lines), max_size=8))
def test_the_sse_parser_takes_any_bytes(chunks: list[bytes]) -> None:
    parser = SSEParser()
    for chunk in chunks:
        parser.feed(chunk)


sse_names = st.from_regex(r"[a-z_]{0,10}", fullmatch=True)
sse_data = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=40)


@FUZZ
@given(st.lists(st.tuples(sse_names, sse_data), min_size=1, max_size=5), st.data())
def test_sse_events_survive_any_split(events: list[tuple[str, str]], data: st.DataObject) -> None:
    wire = b"".join(frame(name or "message", text.encode()) for name, text in events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    parser = SSEParser()
    parsed = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        parsed += parser.feed(wire[start:end])
    assert [(e.type, e.data) for e in parsed] == [(n or "message", t) for n, t in events]


class Quiet(DirectNATS):
    """A client never connected, for the protocol parser alone."""

    async def _process_msg(self, *args: Any) -> None:
        pass

    async def _process_ping(self) -> None:
        pass

    async def _process_pong(self) -> None:
        pass

    async def _process_err(self, err_msg: str) -> None:
        pass

    async def _process_info(self, info: dict[str, object], initial: bool = False) -> None:
        pass


nats_ops = st.sampled_from(
    [b"MSG a 1 3\r\nabc\r\n", b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b"-ERR 'x'\r\n", b"MSG "]
)


@FUZZ
@given(st.lists(st.one_of(raw_bytes, nats_ops), max_size=8))
def test_the_nats_protocol_parser_takes_any_bytes(chunks: list[bytes]) -> None:
    async def run() -> None:
        client = Quiet()
        for chunk in chunks:
            try:
                await client._ps.parse(chunk)
            except nats_errors.ProtocolError:
                client._ps.reset()

    asyncio.run(run())


@FUZZ
@given(
    st.one_of(st.text(max_size=200), bodies.map(lambda body: msgspec.json.encode(body).decode()))
)
def test_an_upstream_chunk_parses_or_is_an_upstream_error(payload: str) -> None:
    try:
        _parse(payload)
    except SluiceError as error:
        assert error.type == "upstream_error"


class Pieces:
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def readany(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


class Response:
    def __init__(self, pieces: list[bytes]) -> None:
        self.content = Pieces([piece for piece in pieces if piece])


@FUZZ
@given(
    st.lists(st.one_of(st.binary(max_size=40), st.just(b"\n"), st.just(b"data: x\n")), max_size=8)
)
def test_the_upstream_sse_reader_yields_data_or_an_upstream_error(lines: list[bytes]) -> None:
    backend = OpenAIBackend(ModelSpec(base_url="http://upstream.invalid/v1"))

    async def run() -> None:
        try:
            async for _ in backend._events(Response(lines)):  # type: ignore[arg-type]
                pass
        except SluiceError as error:
            assert error.type == "upstream_error"

    asyncio.run(run())


def test_hashed_and_plain_keys_name_the_same_tenant() -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    assert load_ring(f"sha256:{digest}:t", "").tenant_for("k") == load_ring("k:t", "").tenant_for(
        "k"
    )
