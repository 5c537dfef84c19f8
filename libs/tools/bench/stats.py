"""Percentiles and the report every benchmark mode prints."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from libs.client.http import StreamRefused


def error_label(exc: Exception) -> str:
    """How a failed stream is counted: status and type of a refusal, else the exception's class."""
    return exc.label() if isinstance(exc, StreamRefused) else type(exc).__name__


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def line(name: str, values: Sequence[float], unit: str = "ms") -> str:
    s = summary(values)
    return (
        f"  {name:<34} p50 {s['p50']:9.3f}  p95 {s['p95']:9.3f}  p99 {s['p99']:9.3f}"
        f"  max {s['max']:9.3f} {unit}  (n={s['n']})"
    )


def emit(title: str, lines: list[str], result: dict[str, Any], json_path: str | None) -> None:
    print(f"\n{title}")
    for text in lines:
        print(text)
    if json_path:
        write_json(result, json_path)
        print(f"  (raw figures written to {json_path})")


def write_json(result: dict[str, Any], path: str) -> None:
    with open(path, "w") as out:
        json.dump(result, out, indent=2, default=float)
