"""A partial meta write names exactly the fields of the meta it writes."""

from __future__ import annotations

from typing import get_type_hints

from libs.common.store import MetaFields, StreamMeta


def test_meta_fields_match_the_stream_meta_name_for_name_and_type() -> None:
    meta_types = get_type_hints(StreamMeta)
    assert get_type_hints(MetaFields) == meta_types
    assert set(meta_types) == set(StreamMeta.__struct_fields__)
