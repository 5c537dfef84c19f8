"""API keys and the tenants they name.

Entries are ``key:tenant`` (or ``sha256:<hex digest of the key>:tenant``, so the
configuration need not hold the key itself), from ``SLUICE_API_KEYS`` and from the file
``SLUICE_API_KEYS_FILE`` (a Kubernetes Secret mount: one entry a line, ``#`` comments).
A presented key is hashed and compared with every stored digest in constant time.
Errors name an entry by its position, never by its text: the text is a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass

from libs.common.errors import Unauthorized
from libs.common.settings import SettingsError

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Tenants appear in Redis keys and logs: no ``:`` (it separates key parts), no ``.``."""

_HASHED = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class KeyRing:
    """``sha256(key) → tenant``; empty means authentication is off."""

    digests: tuple[tuple[bytes, str], ...] = ()

    def tenant_for(self, authorization: str | None) -> str:
        """Map ``Authorization: Bearer <key>`` (or a bare key) to its tenant."""
        if not self.digests:
            return ANONYMOUS
        if not authorization:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        presented = hashlib.sha256(authorization.removeprefix("Bearer ").strip().encode()).digest()
        found = ""
        for digest, tenant in self.digests:
            if hmac.compare_digest(presented, digest):
                found = tenant
        if not found:
            raise Unauthorized("unknown API key")
        return found


def is_tenant(value: str) -> bool:
    return TENANT_PATTERN.fullmatch(value) is not None


def _entry(text: str, where: str) -> tuple[bytes, str]:
    key, colon, tenant = text.rpartition(":")
    if not colon or not key:
        raise SettingsError(f"{where}: expected key:tenant (or sha256:<hex>:tenant)")
    if not is_tenant(tenant):
        raise SettingsError(f"{where}: the tenant must match {TENANT_PATTERN.pattern}")
    hashed = _HASHED.fullmatch(key)
    digest = bytes.fromhex(hashed.group(1)) if hashed else hashlib.sha256(key.encode()).digest()
    return digest, tenant


def parse_entries(text: str, source: str) -> list[tuple[bytes, str]]:
    """Entries separated by commas or lines; blank ones and ``#`` comment lines are skipped."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        for position, item in enumerate(line.split(","), 1):
            if item.strip():
                entries.append(_entry(item.strip(), f"{source} line {number} entry {position}"))
    return entries


def _check_unique(entries: list[tuple[bytes, str]]) -> None:
    tenants: dict[bytes, str] = {}
    for digest, tenant in entries:
        if tenants.setdefault(digest, tenant) != tenant:
            raise SettingsError(
                f"one API key is given to two tenants ({tenants[digest]}, {tenant})"
            )


def _file_version(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError as exc:
        raise SettingsError(f"SLUICE_API_KEYS_FILE={path!r}: {exc.strerror}") from None


def load_ring(inline: str, path: str) -> KeyRing:
    """Read and check every entry; a bad one raises :class:`SettingsError`."""
    entries = parse_entries(inline, "SLUICE_API_KEYS")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                entries += parse_entries(file.read(), "SLUICE_API_KEYS_FILE")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"SLUICE_API_KEYS_FILE={path!r}: {exc}") from None
    if (inline.strip() or path) and not entries:
        raise SettingsError("SLUICE_API_KEYS / SLUICE_API_KEYS_FILE hold no key: auth would be off")
    _check_unique(entries)
    return KeyRing(tuple(entries))


_loaded: dict[tuple[str, str], tuple[int, KeyRing]] = {}


def key_ring(inline: str, path: str) -> KeyRing:
    """The keys in force. A changed file (a rotated Secret) is read again on next use;
    if the new file is bad, the keys read last stay in force and the error is logged."""
    try:
        version = _file_version(path)
        known = _loaded.get((inline, path))
        if known is None or known[0] != version:
            _loaded[(inline, path)] = (version, load_ring(inline, path))
    except SettingsError as exc:
        if (inline, path) not in _loaded:
            raise
        log.error("keeping the API keys read before: %s", exc)
    return _loaded[(inline, path)][1]
