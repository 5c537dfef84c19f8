"""Stream ids, API keys and HMAC read tokens.

A read token is a capability: ``HMAC-SHA256(secret, id | tenant | expiry)``. The
streamer checks it without a lookup, and every failure looks the same, so a token
never tells whether a stream exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from libs.common.errors import Forbidden, Unauthorized

ANONYMOUS = "anonymous"
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


def _signature(secret: bytes, stream_id: str, tenant: str, expires: int) -> bytes:
    message = f"{stream_id}\x1f{tenant}\x1f{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def mint_read_token(secret: bytes, stream_id: str, tenant: str, ttl_s: int) -> str:
    expires = int(time.time()) + ttl_s
    signature = _signature(secret, stream_id, tenant, expires)
    return f"{expires}.{_b64(tenant.encode())}.{_b64(signature)}"


def verify_read_token(secret: bytes, stream_id: str, token: str | None) -> str:
    """Return the tenant the token was minted for; 401 without a token, 403 for a bad one."""
    if not token:
        raise Unauthorized("a read token is required (?token=)")
    try:
        expires_text, tenant_text, signature_text = token.split(".")
        expires, tenant = int(expires_text), _unb64(tenant_text).decode()
        signature = _unb64(signature_text)
    except ValueError:
        raise Forbidden("read token rejected") from None
    expected = _signature(secret, stream_id, tenant, expires)
    if not hmac.compare_digest(signature, expected) or expires < time.time():
        raise Forbidden("read token rejected")
    return tenant


def tenant_for(keys_to_tenants: Mapping[str, str], authorization: str | None) -> str:
    """Map ``Authorization: Bearer <key>`` (or a bare key) to a tenant."""
    if not keys_to_tenants:
        return ANONYMOUS
    if not authorization:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    key = authorization.removeprefix("Bearer ").strip()
    for known, tenant in keys_to_tenants.items():
        if hmac.compare_digest(key.encode(), known.encode()):
            return tenant
    raise Unauthorized("unknown API key")
