"""CDF plots of the gaps a user sees between updates, one panel per network profile.

matplotlib is imported here only, and only when ``--plots`` asks: the benchmark's
other figures need nothing beyond the suite's own dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GAP_LIMIT_MS = 6000
DPI = 72


def _cdf(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    return ordered, [(i + 1) / len(ordered) for i in range(len(ordered))]


def gap_cdfs(figures: list[dict[str, Any]], folder: str, model_gap_ms: float) -> list[Path]:
    """Two PNGs, a panel per profile: the designs under adaptive flush, the flush policies over SSE."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    views = [
        ("gaps-by-design.png", "flush", "adaptive", "design"),
        ("gaps-by-flush.png", "design", "sse", "flush"),
    ]
    written = []
    for name, fixed, value, varied in views:
        cells = [f for f in figures if f[fixed] == value and f["gaps_ms"]]
        if cells:
            title = f"CDF of gaps between visible updates ({fixed} {value}), model: dotted"
            _panels(cells, varied, title, model_gap_ms, out / name)
            written.append(out / name)
    return written


def _panels(
    cells: list[dict[str, Any]], varied: str, title: str, model_gap_ms: float, path: Path
) -> None:
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(f["profile"] for f in cells))
    columns = min(3, len(profiles))
    rows = -(-len(profiles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
    for ax, profile in zip(axes.flat, profiles, strict=False):
        for f in cells:
            if f["profile"] == profile:
                ax.plot(*_cdf(f["gaps_ms"]), label=f[varied], linewidth=1.2)
        ax.axvline(model_gap_ms, color="grey", linestyle=":")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, GAP_LIMIT_MS)
        ax.set_title(profile, fontsize=10)
        ax.set_xlabel("gap between updates (ms)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(profiles) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
