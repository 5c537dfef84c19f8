from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from libs.common.auth import is_stream_id, mint_read_token, new_stream_id, verify_read_token
from libs.common.errors import Forbidden, Unauthorized
from libs.common.keys import ANONYMOUS, key_ring, load_ring
from libs.common.settings import SettingsError

SECRET = b"s3cret-s3cret-s3cret-s3cret-s3cret"
OLD = b"the-secret-being-rotated-out-of-use"


def test_stream_ids_are_unique_128_bit_and_subject_safe() -> None:
    ids = {new_stream_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_stream_id(i) and "." not in i and len(i) == 35 for i in ids)
    assert not is_stream_id("st_../../x")


def test_read_token_binds_the_stream_and_the_secret() -> None:
    token = mint_read_token(SECRET, "st_a", 60)
    verify_read_token([SECRET], "st_a", token)
    for stream_id, secret in (("st_b", SECRET), ("st_a", b"other")):
        with pytest.raises(Forbidden):
            verify_read_token([secret], stream_id, token)


def test_read_token_carries_no_tenant() -> None:
    token = mint_read_token(SECRET, "st_a", 60)
    expires, signature = token.split(".")
    assert expires.isdigit() and len(signature) == 43


def test_every_secret_in_rotation_verifies_and_the_first_signs() -> None:
    old_token = mint_read_token(OLD, "st_a", 60)
    verify_read_token([SECRET, OLD], "st_a", old_token)
    with pytest.raises(Forbidden):
        verify_read_token([SECRET], "st_a", old_token)


def test_missing_token_is_unauthorized_and_garbage_forbidden() -> None:
    with pytest.raises(Unauthorized):
        verify_read_token([SECRET], "st_a", None)
    for garbage in ("x", "1.2", "a.b.c", "9999999999.!!.??", "².AA", "9" * 5000 + ".AA", "1.é"):
        with pytest.raises(Forbidden):
            verify_read_token([SECRET], "st_a", garbage)


def test_token_expiry_is_checked() -> None:
    with pytest.raises(Forbidden):
        verify_read_token([SECRET], "st_x", mint_read_token(SECRET, "st_x", -1))


def test_api_keys_map_to_tenants() -> None:
    ring = load_ring("k1:acme", "")
    assert load_ring("", "").tenant_for(None) == ANONYMOUS
    assert ring.tenant_for("Bearer k1") == "acme" and ring.tenant_for("k1") == "acme"
    for header in (None, "Bearer nope", "", "Bearer "):
        with pytest.raises(Unauthorized):
            ring.tenant_for(header)


def test_keys_may_be_stored_as_their_sha256() -> None:
    digest = hashlib.sha256(b"the-real-key").hexdigest()
    ring = load_ring(f"sha256:{digest}:acme", "")
    assert ring.tenant_for("Bearer the-real-key") == "acme"
    with pytest.raises(Unauthorized):
        ring.tenant_for(f"Bearer sha256:{digest}")


@pytest.mark.parametrize(
    "entries",
    ["k3", ":acme", "k1:", "k1:a c", "k1:a.b", "k1:" + "t" * 65, "k1:a,k1:b"],
)
def test_a_bad_key_entry_stops_the_start_without_showing_the_key(entries: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_ring(entries, "")
    assert "SLUICE_API_KEYS" in str(error.value) or "two tenants" in str(error.value)
    assert "k1" not in str(error.value) and "k3" not in str(error.value)


def test_a_keys_file_without_a_key_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(SettingsError, match="hold no key"):
        load_ring("", str(path))


def test_keys_file_is_read_and_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# mounted from a Secret\nk1:acme\n\nk2:globex\n")
    ring = key_ring("k0:initech", str(path))
    assert [ring.tenant_for(k) for k in ("k0", "k1", "k2")] == ["initech", "acme", "globex"]
    path.write_text("k9:acme\n")
    os.utime(path, ns=(1, 1))
    assert key_ring("k0:initech", str(path)).tenant_for("k9") == "acme"
    path.write_text("not an entry\n")
    os.utime(path, ns=(2, 2))
    assert key_ring("k0:initech", str(path)).tenant_for("k9") == "acme"
