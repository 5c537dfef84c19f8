"""CDF plots of the gaps a user sees between updates, one panel per network profile.

matplotlib is imported here only, and only when ``--plots`` asks: the benchmark's
other figures need nothing beyond the suite's own dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GAP_LIMIT_MS = 1500
DPI = 72


def _cdf(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    return ordered, [(i + 1) / len(ordered) for i in range(len(ordered))]


def gap_cdfs(figures: list[dict[str, Any]], folder: str, model_gap_ms: float) -> list[Path]:
    """One PNG per flush policy: per profile, the CDF of the gaps for each design."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    profiles = list(dict.fromkeys(f["profile"] for f in figures))
    for flush in dict.fromkeys(f["flush"] for f in figures):
        columns = min(3, len(profiles))
        rows = -(-len(profiles) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
        for ax, profile in zip(axes.flat, profiles, strict=False):
            for f in figures:
                if f["profile"] == profile and f["flush"] == flush and f["gaps_ms"]:
                    ax.plot(*_cdf(f["gaps_ms"]), label=f["design"], linewidth=1.2)
            ax.axvline(model_gap_ms, color="grey", linestyle=":", label="model")
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(0, GAP_LIMIT_MS)
            ax.set_title(profile, fontsize=10)
            ax.set_xlabel("gap between updates (ms)", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(profiles) :]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"CDF of gaps between visible updates, flush={flush}", fontsize=11)
        fig.tight_layout()
        path = out / f"gaps-{flush}.png"
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        written.append(path)
    return written
