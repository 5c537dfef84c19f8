"""The public client decodes a status frame's optional fields, and only well-typed ones."""

from __future__ import annotations

from libs.client.events import Status, decode_status


def test_a_status_frame_says_where_a_moved_answer_went_on() -> None:
    moved = decode_status('{"status": "running", "continued_at": 412}')
    assert moved == Status("running", None, 412)


def test_a_status_frame_without_optional_fields_has_none() -> None:
    assert decode_status('{"status": "queued", "position": 3}') == Status("queued", 3, None)
    assert decode_status('{"status": "running", "continued_at": "x"}') == Status("running")
