"""How a reader turns tokens into frames, as a client may choose with ``?flush=``.

``adaptive`` (the default) is sluice's own: a frame at once while the socket keeps up,
bigger frames while it does not. ``token`` writes one frame per token, as naive
servers do; a number of milliseconds writes fixed batches that often, as servers that
flush on a timer do. ``sluice bench network`` compares the three over bad networks.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.errors import InvalidRequest

MAX_INTERVAL_MS = 1000


@dataclass(frozen=True, slots=True)
class Flush:
    per_token: bool = False
    interval_s: float = 0.0


ADAPTIVE = Flush()
PER_TOKEN = Flush(per_token=True)


def flush_of(raw: str | None) -> Flush:
    """The policy named by a ``flush`` query parameter; 400 for anything else."""
    if raw is None or raw == "adaptive":
        return ADAPTIVE
    if raw == "token":
        return PER_TOKEN
    if raw.isdigit() and 1 <= int(raw) <= MAX_INTERVAL_MS:
        return Flush(interval_s=int(raw) / 1000)
    raise InvalidRequest(
        f"flush must be adaptive, token or a batch interval of 1-{MAX_INTERVAL_MS} ms, got {raw!r}"
    )
