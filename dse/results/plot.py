"""Static plots (matplotlib, Agg): the Pareto front over all evaluated designs.

The front is drawn in black, a line through outlined markers on top of everything, so it is
never mistaken for a category; categories get distinct (colour, marker) pairs: the 9
strong ``tab10`` colours that are neither grey (infeasible designs) nor black (the front),
times 7 marker shapes: 63 categories before a pair repeats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dse.results.io import atomic_write

_LABELS = {
    "decode_tokens_per_s": "decode tokens/s", "decode_tokens_per_j": "decode tokens/J",
    "tokens_per_s": "tokens/s", "tokens_per_j": "tokens/J", "decode_power_w": "decode power (W)",
    "ttft_s": "TTFT (s)", "tpot_s": "TPOT (s)", "tdp_tokens_per_j": "tokens/J at TDP",
}
# tab10 without its grey
PALETTE: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                            "#17becf")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
FRONT_COLOUR = "#000000"  # not in PALETTE
INFEASIBLE_COLOUR = "#dddddd"
FEASIBLE_COLOUR = "#7fa7d9"
# columns a study varies that colour its plot, in order of preference
COLOR_BY_CANDIDATES: tuple[str, ...] = ("platform", "mem_technology", "model")


def category_styles(names: list) -> dict:
    """A distinct ``(colour, marker)`` per category name, in the order given: colours cycle
    fastest, the marker changes every 9 categories (unique for up to 63 categories)."""
    return {name: (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE)) % len(MARKERS)])
            for i, name in enumerate(names)}


def default_color_by(trials: pd.DataFrame) -> str | None:
    """The first of :data:`COLOR_BY_CANDIDATES` that takes several values in ``trials``, else None."""
    return next((c for c in COLOR_BY_CANDIDATES if c in trials and trials[c].nunique() > 1), None)


def plot_front(trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, bool]], path: str | Path,
               *, title: str = "", color_by: str | None = None) -> Path:
    """Draw :func:`front_figure` into the PNG ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    fig = front_figure(trials, front, objectives, title=title, color_by=color_by)
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def front_figure(trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, bool]], *,
                 title: str = "", color_by: str | None = None) -> Any:
    """A matplotlib figure: all designs (infeasible grey; feasible blue, or one style per
    ``color_by`` value) with the front on top as a black line through white markers outlined
    in black; log-log axes where both columns are positive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (x, _), (y, _) = objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
    sample = trials.sample(n=min(len(trials), 20_000), random_state=0) if len(trials) else trials
    infeasible = sample[~sample["feasible"].astype(bool)] if len(sample) else sample
    feasible = sample[sample["feasible"].astype(bool)] if len(sample) else sample
    groups = []
    if color_by and color_by in trials and len(feasible):
        names = sorted(trials[color_by].dropna().unique(), key=str)
        styles = category_styles(names)
        groups = [(name, styles[name], feasible[feasible[color_by] == name]) for name in names]
    wide = len(groups) > 10
    fig, ax = plt.subplots(figsize=(9.5 if wide else 7, 5), dpi=120)
    ax.scatter(infeasible[x], infeasible[y], s=4, c=INFEASIBLE_COLOUR, label="infeasible", rasterized=True, zorder=1)
    if groups:
        for name, (colour, marker), group in groups:
            ax.scatter(group[x], group[y], s=14, c=colour, marker=marker, alpha=0.75, lw=0, label=str(name),
                       rasterized=True, zorder=2)
    else:
        ax.scatter(feasible[x], feasible[y], s=5, c=FEASIBLE_COLOUR, alpha=0.6, label="feasible", rasterized=True,
                   zorder=2)
    if len(front):
        f = front.sort_values(x)
        ax.plot(f[x], f[y], "-", c=FRONT_COLOUR, lw=1.4, zorder=3)
        ax.scatter(f[x], f[y], s=46, facecolors="white", edgecolors=FRONT_COLOUR, linewidths=1.5, zorder=4,
                   label=f"Pareto front ({len(front)})")
    positive = all((trials[c] > 0).all() for c in (x, y)) if len(trials) else False
    if positive:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if wide:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False,
                  markerscale=1.5, title=color_by, title_fontsize=7, ncols=2 if len(groups) > 24 else 1)
    else:
        ax.legend(fontsize=7, loc="best", title=color_by if groups else None, title_fontsize=7)
    fig.tight_layout()
    return fig
