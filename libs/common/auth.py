"""Stream ids and HMAC read tokens.

A read token is a capability: ``expiry.HMAC-SHA256(secret, id | expiry)``. It names no
tenant (a stream id belongs to exactly one, so the id binds it) and so reveals nothing
when a URL is logged or shared. The streamer checks it without a lookup, against every
secret in rotation, and every failure looks the same, so a token never tells whether a
stream exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

from libs.common.errors import Forbidden, Unauthorized

STREAM_ID_PREFIX = "st_"


def new_stream_id() -> str:
    """128 random bits, URL- and subject-safe (no dots)."""
    return STREAM_ID_PREFIX + secrets.token_hex(16)


def is_stream_id(value: str) -> bool:
    body = value.removeprefix(STREAM_ID_PREFIX)
    return value.startswith(STREAM_ID_PREFIX) and len(body) == 32 and _is_hex(body)


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdef" for c in value)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, stream_id: str, expires: int) -> bytes:
    message = f"read\x1f{stream_id}\x1f{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def mint_read_token(secret: bytes, stream_id: str, ttl_s: int) -> str:
    """A token for ``stream_id``, signed with ``secret`` (the first of the rotation)."""
    expires = int(time.time()) + ttl_s
    return f"{expires}.{_b64(_signature(secret, stream_id, expires))}"


def verify_read_token(secrets_: Sequence[bytes], stream_id: str, token: str | None) -> None:
    """Accept a token signed by any secret in rotation; 401 without one, 403 for a bad one."""
    if not token:
        raise Unauthorized("a read token is required (?token=)")
    expires_text, _, signature_text = token.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 12):
        raise Forbidden("read token rejected")
    expires = int(expires_text)
    try:
        signature = _unb64(signature_text)
    except ValueError:
        raise Forbidden("read token rejected") from None
    matched = False
    for secret in secrets_:
        matched |= hmac.compare_digest(signature, _signature(secret, stream_id, expires))
    if not matched or expires < time.time():
        raise Forbidden("read token rejected")
