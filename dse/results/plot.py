"""Static plots (matplotlib, Agg): the Pareto front over all evaluated designs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dse.results.io import atomic_write

_LABELS = {
    "decode_tokens_per_s": "decode tokens/s", "decode_tokens_per_j": "decode tokens/J",
    "tokens_per_s": "tokens/s", "tokens_per_j": "tokens/J", "decode_power_w": "decode power (W)",
    "ttft_s": "TTFT (s)", "tpot_s": "TPOT (s)", "tdp_tokens_per_j": "tokens/J at TDP",
}


def plot_front(trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, bool]], path: str | Path,
               *, title: str = "", color_by: str | None = None) -> Path:
    """Scatter of all designs (feasible / infeasible) with the front highlighted, log-log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (x, _), (y, _) = objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    sample = trials.sample(n=min(len(trials), 20_000), random_state=0) if len(trials) else trials
    infeasible = sample[~sample["feasible"]] if len(sample) else sample
    feasible = sample[sample["feasible"]] if len(sample) else sample
    ax.scatter(infeasible[x], infeasible[y], s=4, c="#cccccc", label="infeasible", rasterized=True)
    if color_by and color_by in feasible and len(feasible):
        for name, group in feasible.groupby(color_by):
            ax.scatter(group[x], group[y], s=5, alpha=0.6, label=str(name), rasterized=True)
    else:
        ax.scatter(feasible[x], feasible[y], s=5, c="#7fa7d9", alpha=0.6, label="feasible", rasterized=True)
    if len(front):
        f = front.sort_values(x)
        ax.plot(f[x], f[y], "-o", c="#d62728", ms=3, lw=1.2, label=f"Pareto front ({len(front)})")
    positive = all((trials[c] > 0).all() for c in (x, y)) if len(trials) else False
    if positive:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS.get(y, y))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
