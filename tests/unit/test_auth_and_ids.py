from __future__ import annotations

import time

import pytest

from libs.common.auth import (
    ANONYMOUS,
    is_stream_id,
    mint_read_token,
    new_stream_id,
    tenant_for,
    verify_read_token,
)
from libs.common.errors import Forbidden, Unauthorized

SECRET = b"s3cret"


def test_stream_ids_are_unique_128_bit_and_subject_safe() -> None:
    ids = {new_stream_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_stream_id(i) and "." not in i and len(i) == 35 for i in ids)
    assert not is_stream_id("st_../../x")
    for wrong in ("st_" + "a" * 31, "st_" + "a" * 33, "xx_" + "a" * 32, "a" * 35, "st_" + "g" * 32):
        assert not is_stream_id(wrong), wrong


def test_read_token_binds_stream_and_tenant() -> None:
    token = mint_read_token(SECRET, "st_a", "acme", 60)
    assert verify_read_token(SECRET, "st_a", token) == "acme"
    for stream_id, secret in (("st_b", SECRET), ("st_a", b"other")):
        with pytest.raises(Forbidden):
            verify_read_token(secret, stream_id, token)


def test_a_read_token_holds_until_its_expiry_second_and_not_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
    token = mint_read_token(SECRET, "st_a", "acme", 60)
    monkeypatch.setattr(time, "time", lambda: 1_000_060.0)
    assert verify_read_token(SECRET, "st_a", token) == "acme", "valid through its last second"
    monkeypatch.setattr(time, "time", lambda: 1_000_060.5)
    with pytest.raises(Forbidden):
        verify_read_token(SECRET, "st_a", token)


def test_an_expired_read_token_is_rejected() -> None:
    with pytest.raises(Forbidden):
        verify_read_token(SECRET, "st_a", mint_read_token(SECRET, "st_a", "acme", -1))


def test_an_extended_expiry_is_rejected() -> None:
    _, tenant, signature = mint_read_token(SECRET, "st_a", "acme", -1).split(".")
    with pytest.raises(Forbidden):
        verify_read_token(SECRET, "st_a", f"9999999999.{tenant}.{signature}")


def test_tampered_tenant_is_rejected() -> None:
    expires, _, signature = mint_read_token(SECRET, "st_a", "acme", 60).split(".")
    forged = f"{expires}.Z2xvYmV4.{signature}"
    with pytest.raises(Forbidden):
        verify_read_token(SECRET, "st_a", forged)


def test_missing_token_is_unauthorized_and_garbage_forbidden() -> None:
    with pytest.raises(Unauthorized):
        verify_read_token(SECRET, "st_a", None)
    for garbage in ("x", "1.2", "a.b.c", "9999999999.!!.??"):
        with pytest.raises(Forbidden):
            verify_read_token(SECRET, "st_a", garbage)


def test_api_keys_map_to_tenants() -> None:
    keys = {"k1": "acme"}
    assert tenant_for({}, None) == ANONYMOUS
    assert tenant_for(keys, "Bearer k1") == "acme"
    for header in (None, "Bearer nope", ""):
        with pytest.raises(Unauthorized):
            tenant_for(keys, header)
