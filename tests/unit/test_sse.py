"""The parser follows the WHATWG event-stream rules; the encoder's frames parse back."""

from __future__ import annotations

import msgspec

from libs.common import sse
from libs.common.sse import SSEParser


def parse(*chunks: bytes) -> list[sse.Event]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_token_frame_round_trips() -> None:
    events = parse(sse.RETRY + sse.token_frame(7, ["lo", ", wor"], 123))
    assert len(events) == 1
    assert events[0].type == "token" and events[0].last_event_id == "7"
    assert events[0].json() == {"seq": 7, "n": 2, "text": "lo, wor", "ts": 123}
    assert events[0].retry == 1000


def test_token_frame_data_is_token_data_json_for_any_text() -> None:
    texts = ['"quoted"', "back\\slash", "new\nline", "\u2028 ☃ \x00", "</script>"]
    for text in texts:
        (event,) = parse(sse.token_frame(3, [text, "!"], 9))
        expected = msgspec.json.encode(sse.TokenData(seq=3, n=2, text=text + "!", ts=9))
        assert event.data.encode() == expected
        assert sse.token_data.decode(event.data).text == text + "!"


def test_any_line_ending_and_any_split_point() -> None:
    stream = b"\xef\xbb\xbfevent: a\r\ndata: 1\r\rdata: 2\n\nid: 5\r\nevent: b\rdata:x\r\n\r\n"
    whole = parse(stream)
    bytewise = parse(*(stream[i : i + 1] for i in range(len(stream))))
    assert [(e.type, e.data, e.last_event_id) for e in whole] == [
        ("a", "1", ""),
        ("message", "2", ""),
        ("b", "x", "5"),
    ]
    assert [(e.type, e.data, e.last_event_id) for e in bytewise] == [
        (e.type, e.data, e.last_event_id) for e in whole
    ]


def test_comments_multiline_data_and_empty_events() -> None:
    events = parse(b": keepalive\n\ndata: a\ndata: b\n\nevent: x\n\n")
    assert [(e.type, e.data) for e in events] == [("message", "a\nb")]


def test_id_with_nul_is_ignored_and_retry_needs_digits() -> None:
    parser = SSEParser()
    parser.feed(b"id: 3\ndata: a\n\nid: 4\x005\nretry: 1x\ndata: b\n\n")
    assert parser.last_event_id == "3"
    assert parser.retry is None


def test_multibyte_text_split_across_chunks() -> None:
    data = "data: héllo ☃\n\n".encode()
    events = parse(*(data[i : i + 1] for i in range(len(data))))
    assert events[0].data == "héllo ☃"


def test_field_without_colon_and_no_space_after_colon() -> None:
    events = parse(b"data\ndata:x\n\n")
    assert events[0].data == "\nx"


def test_field_rules_a_bare_name_comments_and_only_ascii_retry() -> None:
    events = parse(b"retry: \xc2\xb2\ndata\n: note\ndata: x\nfoo: bar\n\nretry: 2500\ndata:y\n\n")
    assert [(e.data, e.retry) for e in events] == [("\nx", None), ("y", 2500)]


def test_unknown_fields_are_reported_if_asked_and_ignored_otherwise() -> None:
    stream = b": comment\nretry: soon\nevent: a\nfoo: bar\n<html>\ndata: x\n\n"
    unknown: list[str] = []
    events = SSEParser(on_unknown_field=unknown.append).feed(stream)
    assert unknown == ["foo: bar", "<html>"], "comments and the known fields are not reported"
    assert [(e.type, e.data) for e in events] == [("a", "x")]
    assert [(e.type, e.data) for e in parse(stream)] == [("a", "x")]
