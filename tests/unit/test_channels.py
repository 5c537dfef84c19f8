"""Typed channels: the log format stays the same for text, and runs group tokens per channel."""

from __future__ import annotations

import msgspec

from libs.common.channels import (
    REASONING,
    Channels,
    Run,
    ToolCall,
    ToolCallAccumulator,
    ToolCallDelta,
    joined,
    runs,
)
from libs.common.sse import SSEParser
from libs.common.wire import TokenBatch, tokens_codec
from services.streamer.frames import NATIVE_FRAMES


class OldTokenBatch(msgspec.Struct, tag="t", tag_field="k", frozen=True):
    """The log entry as it was before channels."""

    first: int
    texts: list[str]
    ts: int


def test_a_text_batch_encodes_to_the_same_bytes_as_before_channels() -> None:
    batch = TokenBatch(first=5, texts=[" a", " b"], ts=123)
    old = OldTokenBatch(first=5, texts=[" a", " b"], ts=123)
    assert tokens_codec.encode(batch) == msgspec.msgpack.encode(old)
    assert tokens_codec.decode(msgspec.msgpack.encode(old)) == batch


def test_a_batch_with_channels_round_trips() -> None:
    channels: Channels = [REASONING, None, ToolCallDelta(0, "call_1", "f"), ToolCallDelta(0)]
    batch = TokenBatch(first=1, texts=["hm", "ok", "{", "}"], ts=1, channels=channels)
    assert tokens_codec.decode(tokens_codec.encode(batch)) == batch


def test_runs_group_consecutive_tokens_of_one_channel_and_one_call() -> None:
    first, more, other = ToolCallDelta(0, "c0", "f"), ToolCallDelta(0), ToolCallDelta(1, "c1", "g")
    texts = ["th", "ink", "Hi", "{", "}", "{", "x", "y"]
    channels: Channels = [REASONING, REASONING, None, first, more, other, ToolCallDelta(1), more]
    assert list(runs(texts, channels)) == [
        Run(2, "think", REASONING),
        Run(1, "Hi", None),
        Run(2, "{}", first),
        Run(2, "{x", other),
        Run(1, "y", more),
    ]


def test_joined_stays_none_for_text_and_pads_text_once_a_channel_comes() -> None:
    assert joined(None, 3, None, 0, 2) is None
    assert joined(None, 2, [REASONING, None, REASONING], 1, 2) == [None, None, None, REASONING]
    assert joined([REASONING], 1, None, 0, 2) == [REASONING, None, None]


def test_the_accumulator_adds_fragments_per_call_in_index_order() -> None:
    calls = ToolCallAccumulator()
    calls.add(ToolCallDelta(1, "c1", "g"), '{"b"')
    calls.add(ToolCallDelta(0, "c0", "f"), "")
    calls.add(ToolCallDelta(0), "{}")
    calls.add(ToolCallDelta(1), ": 2}")
    assert calls.calls() == [ToolCall("c0", "f", "{}"), ToolCall("c1", "g", '{"b": 2}')]


def test_the_accumulator_takes_an_id_and_a_name_sent_on_every_fragment_once() -> None:
    calls = ToolCallAccumulator()
    for fragment in ("{", '"a": 1', "}"):
        calls.add(ToolCallDelta(0, "call_9", "f"), fragment)
    assert calls.calls() == [ToolCall("call_9", "f", '{"a": 1}')]


def test_native_frames_give_each_run_its_own_event_and_id() -> None:
    channels: Channels = [REASONING, ToolCallDelta(0, "c0", "f"), ToolCallDelta(0), None]
    frame = NATIVE_FRAMES.tokens(14, ["hm", '{"a', '":1}', "ok"], 99, channels)
    events = SSEParser().feed(frame)
    assert [(e.type, e.last_event_id) for e in events] == [
        ("token", "11"),
        ("token", "13"),
        ("token", "14"),
    ]
    assert [e.json() for e in events] == [
        {"seq": 11, "n": 1, "text": "hm", "ts": 99, "channel": "reasoning"},
        {
            "seq": 13,
            "n": 2,
            "text": '{"a":1}',
            "ts": 99,
            "channel": "tool_call",
            "tool_call": {"index": 0, "id": "c0", "name": "f"},
        },
        {"seq": 14, "n": 1, "text": "ok", "ts": 99},
    ]
