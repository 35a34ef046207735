"""Static plots (matplotlib, Agg): the Pareto front over all evaluated designs.

The front is drawn in black, a line through outlined markers on top of everything, so it is
never mistaken for a category; categories get distinct (colour, marker) pairs: the 9
strong ``tab10`` colours that are neither grey (infeasible designs) nor black (the front),
times 7 marker shapes: 63 categories before a pair repeats. Axes are labelled ``metric (unit)``
(:func:`axis_label`); an axis that far infeasible designs would squash the feasible ones into
under a quarter of is zoomed to the feasible designs (:func:`zoom_to_feasible`). ``front.png``
(:func:`plot_front`) and ``dse report``'s plots both come from :func:`front_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dse.results.io import atomic_write, display_unit

# tab10 without its grey
PALETTE: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                            "#17becf")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")
FRONT_COLOUR = "#000000"  # not in PALETTE
INFEASIBLE_COLOUR = "#dddddd"
FEASIBLE_COLOUR = "#7fa7d9"
# columns a study varies that colour its plot, in order of preference
COLOR_BY_CANDIDATES: tuple[str, ...] = ("platform", "mem_technology", "model")
ZOOM_BELOW = 0.25  # zoom an axis where the feasible designs would span less than this share of it
INFEASIBLE_OFF_AXES = "infeasible (some off the axes)"  # the legend's label for grey points once zoomed


def category_styles(names: list) -> dict:
    """A distinct ``(colour, marker)`` per category name, in the order given: colours cycle
    fastest, the marker changes every 9 categories (unique for up to 63 categories)."""
    return {name: (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE)) % len(MARKERS)])
            for i, name in enumerate(names)}


def default_color_by(trials: pd.DataFrame) -> str | None:
    """The first of :data:`COLOR_BY_CANDIDATES` that takes several values in ``trials``, else None."""
    return next((c for c in COLOR_BY_CANDIDATES if c in trials and trials[c].nunique() > 1), None)


def axis_label(name: str, units: Mapping[str, str]) -> str:
    """``name (unit)``, the unit as :func:`dse.results.io.display_unit` gives it, ``dimensionless`` where blank.

    >>> axis_label("decode_tokens_per_s", {"decode_tokens_per_s": "token/s"}), axis_label("ppl_delta", {})
    ('decode_tokens_per_s (token/s)', 'ppl_delta (dimensionless)')
    """
    return f"{name} ({display_unit(name, units) or 'dimensionless'})"


def zoom_to_feasible(ax: Any, axis: str, values: np.ndarray) -> bool:
    """Limit ``axis`` (``"x"`` or ``"y"``) to the feasible designs' ``values`` (+5 % each side, in the
    axis' scale) where infeasible outliers would squash them into under :data:`ZOOM_BELOW` of the axis;
    True if it did (some infeasible designs then lie off the axes)."""
    scale = ax.get_xscale() if axis == "x" else ax.get_yscale()
    values = values[np.isfinite(values) & ((values > 0) if scale == "log" else True)]
    if not len(values):
        return False
    to, back = (np.log10, lambda v: 10.0 ** v) if scale == "log" else (lambda v: v, lambda v: v)
    lo, hi = to(values.min()), to(values.max())
    shown = [to(v) for v in (ax.get_xlim() if axis == "x" else ax.get_ylim())]
    if hi - lo >= ZOOM_BELOW * (shown[1] - shown[0]):
        return False
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo) * 0.05, 0.05)
    (ax.set_xlim if axis == "x" else ax.set_ylim)(back(lo - pad), back(hi + pad))
    return True


def plot_front(trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, bool]], path: str | Path,
               *, title: str = "", color_by: str | None = None, units: Mapping[str, str] | None = None) -> Path:
    """Draw :func:`front_figure` into the PNG ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    fig = front_figure(trials, front, objectives, title=title, color_by=color_by, units=units)
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path


def front_figure(trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, bool]], *,
                 title: str = "", color_by: str | None = None, units: Mapping[str, str] | None = None) -> Any:
    """A matplotlib figure: all designs (infeasible grey; feasible blue, or one style per
    ``color_by`` value) with the front on top as white markers outlined in black, joined by a
    black line when the study has two objectives (with more, the front has no order in the
    first two's plane); log-log axes where both columns are positive. Axes labelled :func:`axis_label`
    with ``units`` (column -> unit, as stored in the result files; None: the registry's and the
    metric table's), each zoomed by :func:`zoom_to_feasible`."""
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
        if len(objectives) <= 2:  # with more objectives the front has no order in these two axes: no line
            ax.plot(f[x], f[y], "-", c=FRONT_COLOUR, lw=1.4, zorder=3)
        shown_of = "" if len(objectives) <= 2 else f"; {len(objectives)} objectives, the first two shown"
        ax.scatter(f[x], f[y], s=46, facecolors="white", edgecolors=FRONT_COLOUR, linewidths=1.5, zorder=4,
                   label=f"Pareto front ({len(front)}{shown_of})")
    positive = all((trials[c] > 0).all() for c in (x, y)) if len(trials) else False
    if positive:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(axis_label(x, units or {}))
    ax.set_ylabel(axis_label(y, units or {}))
    shown = pd.concat([trials[trials["feasible"].astype(bool)], front]) if len(trials) else front
    zoomed = [zoom_to_feasible(ax, axis, shown[name].to_numpy(dtype=float)) for axis, name in (("x", x), ("y", y))]
    if any(zoomed):
        ax.collections[0].set_label(INFEASIBLE_OFF_AXES)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if wide:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False,
                  markerscale=1.5, title=color_by, title_fontsize=7, ncols=2 if len(groups) > 24 else 1)
    else:
        ax.legend(fontsize=7, loc="best", title=color_by if groups else None, title_fontsize=7)
    fig.tight_layout()
    return fig
