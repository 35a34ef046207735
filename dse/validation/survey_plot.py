"""The survey's central figure, reproduced: decode tokens/s against power with lines of equal tokens/J.

Li et al. (arXiv 2410.04466) draw ~7B decode at batch 1 (and batch 8) in one log-log scatter:
x = power (W), y = decode tokens/s, diagonals of equal tokens/J. :func:`survey_figure` draws
the same axes with

* the survey's published batch-1 points (``validation/survey_points.csv``), coloured by
  platform class; hollow where the survey's power is a TDP, filled where it was measured
  (black edge) or reported by the cited work (no edge). The survey's batch-8 points are
  not public, so the batch-8 figure says so and shows the batch-1 points in grey only;
* what llm-dse predicts for every preset (:mod:`dse.validation.survey`): the default
  software setting (16-bit, dense, decode GEMVs on PIM where the preset has PIM units; the
  widest weights that fit where 16-bit does not)
  and the best setting (highest decode tokens/J that fits), both at the modelled decode
  power, and the default again at the preset's TDP (the survey's convention), joined to
  its modelled position by a thin line;
* the Pareto front (decode tokens/s vs decode tokens/J) of the study.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dse.results.io import atomic_write
from dse.validation.survey import STUDY, cell_text, load_points, load_predictions, preset_predictions, setting_label
from dse.validation.validate import CLASS_COLOURS

#: Diagonals of equal tokens/J drawn in the figure (the survey's).
TOKENS_PER_J_LINES: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
#: The survey's axes (survey.md section 9), widened where a plotted point needs it.
X_LIMITS = (1.0, 1000.0)
Y_LIMITS = (1.0, 10_000.0)
CLASS_NAMES = {"cpu": "CPU", "gpu": "GPU", "fpga": "FPGA", "asic": "ASIC", "pim": "PIM/NDP"}


def _spread_labels(ax, xy: list[tuple[float, float]], texts: list[str], *, fontsize: float = 7.0,
                   colours: list[str] | None = None, side: str = "left", gap_px: float = 7.0,
                   lift_px: list[float] | None = None) -> None:
    """Label points (log axes) on one ``side``, pushing overlapping labels apart vertically
    (a thin leader line where a label moved off its point)."""
    fig = ax.figure
    fig.canvas.draw()
    to_disp = ax.transData.transform
    sign_x = -1.0 if side == "left" else 1.0
    anchors = [np.array(to_disp(p), dtype=float) for p in xy]
    lift = lift_px or [0.0] * len(xy)
    pos = [a + np.array([sign_x * gap_px, up]) for a, up in zip(anchors, lift, strict=True)]
    px = fig.dpi / 72.0
    height = fontsize * px * 1.3 * max(t.count("\n") + 1 for t in texts) if texts else 0.0
    widths = [max(len(line) for line in t.split("\n")) * fontsize * px * 0.58 for t in texts]
    for _ in range(500):
        moved = False
        for i, j in itertools.combinations(range(len(pos)), 2):
            # horizontal extents of both labels: [x - w, x] on the left side, [x, x + w] on the right
            lo_i, hi_i = sorted((pos[i][0], pos[i][0] + sign_x * widths[i]))
            lo_j, hi_j = sorted((pos[j][0], pos[j][0] + sign_x * widths[j]))
            dy = pos[j][1] - pos[i][1]
            if lo_i < hi_j and lo_j < hi_i and abs(dy) < height:
                push = (height - abs(dy)) / 2 + 0.5
                sign = 1.0 if dy > 0 or (dy == 0 and j > i) else -1.0
                pos[j][1] += sign * push
                pos[i][1] -= sign * push
                moved = True
        if not moved:
            break
    inv = ax.transData.inverted().transform
    for k, ((x, y), text) in enumerate(zip(xy, texts, strict=True)):
        tx, ty = inv(pos[k])
        colour = colours[k] if colours else "#222222"
        leader = abs(pos[k][1] - anchors[k][1] - lift[k]) > height * 0.4 or lift[k] != 0
        ax.annotate(text, (x, y), xytext=(tx, ty), textcoords="data", fontsize=fontsize, color=colour,
                    va="center", ha="right" if side == "left" else "left", zorder=8,
                    bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.7},
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": colour, "alpha": 0.6, "shrinkA": 0,
                                "shrinkB": 3} if leader else None)


def survey_figure(results_dir: Path | None, batch: int, out: Path, *, points: pd.DataFrame | None = None) -> Path:
    """Draw the survey figure for ``batch`` into ``out`` (PNG); see the module docstring.

    ``results_dir``: folder of ``dse run studies/survey-bs{batch}.yaml`` (``trials.parquet``,
    ``front.parquet``), or None to compute the predictions. ``points``: the published points
    (default: ``validation/survey_points.csv``); they are batch 1, so at another batch they
    are drawn in grey as reference only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    trials, front = load_predictions(results_dir, batch)
    presets = preset_predictions(trials)
    points = load_points() if points is None else points
    pub = points.copy()
    pub["x"] = pd.to_numeric(pub["power_w"], errors="coerce")
    pub["y"] = pd.to_numeric(pub["decode_tokens_per_s"], errors="coerce")
    pub = pub[(pub["x"] > 0) & (pub["y"] > 0)]
    pub_batch = pd.to_numeric(pub.get("batch", pd.Series(1, index=pub.index)), errors="coerce").fillna(1)
    same_batch = pub[pub_batch == batch]
    reference = pub[pub_batch != batch]

    xs = np.concatenate([presets["decode_power_w"], presets["tdp_w"], front["decode_power_w"]]).astype(float)
    ys = np.concatenate([presets["decode_tokens_per_s"], front["decode_tokens_per_s"]]).astype(float)
    xlim = (min(X_LIMITS[0], 10 ** math.floor(math.log10(xs.min()))), max(X_LIMITS[1], 10 ** math.ceil(
        math.log10(xs.max()))))
    ylim = (min(Y_LIMITS[0], 10 ** math.floor(math.log10(ys.min()))), max(Y_LIMITS[1], 10 ** math.ceil(
        math.log10(ys.max()))))

    fig, ax = plt.subplots(figsize=(12.5, 8.2), dpi=130)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)

    # lines of equal tokens/J: y = e * x
    for eff in TOKENS_PER_J_LINES:
        x = np.geomspace(*xlim, 50)
        ax.plot(x, eff * x, ls=":", lw=0.9, color="#999999", zorder=1)
        # label where the line leaves the plot (top or right edge)
        xe = min(xlim[1], ylim[1] / eff)
        ye = eff * xe
        if xlim[0] < xe and ylim[0] < ye:
            ax.text(xe / 1.12, ye / 1.12 if xe < xlim[1] else ye / 1.25, f"{eff:g} tokens/J", fontsize=8,
                    color="#777777", rotation=0, ha="right", va="top", zorder=1)

    # published points
    outside = []
    if len(reference):
        ax.scatter(reference["x"], reference["y"], s=14, c="#c8c8c8", marker="o", lw=0, zorder=2)
    for cls, group in same_batch.groupby(same_batch["platform_class"].map(cell_text).str.lower()):
        colour = CLASS_COLOURS.get(cls, CLASS_COLOURS["?"])
        kind = group["power_kind"].map(cell_text).str.lower()
        tdp, measured, reported = group[kind == "tdp"], group[kind == "measured"], group[~kind.isin(["tdp",
                                                                                                        "measured"])]
        ax.scatter(tdp["x"], tdp["y"], s=26, facecolors="none", edgecolors=colour, lw=1.1, zorder=3)
        ax.scatter(reported["x"], reported["y"], s=24, c=colour, lw=0, alpha=0.75, zorder=3)
        ax.scatter(measured["x"], measured["y"], s=34, c=colour, edgecolors="black", lw=0.9, zorder=4)
    for _, r in same_batch.iterrows():
        if not (xlim[0] <= r["x"] <= xlim[1] and ylim[0] <= r["y"] <= ylim[1]):
            outside.append(f"{cell_text(r.get('work'))} ({r['y']:g} tokens/s, {r['x']:g} W)")

    # our predictions
    default = presets[presets["kind"] == "default"].set_index("platform")
    best = presets[presets["kind"] == "best"].set_index("platform")
    for name, d in default.iterrows():
        colour = CLASS_COLOURS.get(d["platform_class"], CLASS_COLOURS["?"])
        ax.plot([d["decode_power_w"], d["tdp_w"]], [d["decode_tokens_per_s"]] * 2, lw=0.7, color=colour, alpha=0.6,
                zorder=4)
        ax.scatter([d["tdp_w"]], [d["decode_tokens_per_s"]], marker="D", s=22, facecolors="white",
                   edgecolors=colour, lw=1.0, zorder=5)
        ax.scatter([d["decode_power_w"]], [d["decode_tokens_per_s"]], marker="D", s=48, c=colour,
                   edgecolors="black", lw=0.8, zorder=6)
        if name in best.index:
            b = best.loc[name]
            ax.plot([d["decode_power_w"], b["decode_power_w"]], [d["decode_tokens_per_s"], b["decode_tokens_per_s"]],
                    lw=0.6, ls="--", color=colour, alpha=0.7, zorder=4)
            ax.scatter([b["decode_power_w"]], [b["decode_tokens_per_s"]], marker="*", s=130, c=colour,
                       edgecolors="black", lw=0.6, zorder=6)

    # the study's Pareto front (tokens/s vs tokens/J), drawn in (power, tokens/s)
    if len(front):
        f = front.drop_duplicates(subset=["decode_tokens_per_s", "decode_tokens_per_j"]).sort_values(
            "decode_power_w")
        ax.plot(f["decode_power_w"], f["decode_tokens_per_s"], "-", color="#d62728", lw=2.0, alpha=0.85, zorder=7)
        ax.scatter(f["decode_power_w"], f["decode_tokens_per_s"], s=60, facecolors="none", edgecolors="#d62728",
                   lw=1.6, zorder=7)

    labels = [(d["decode_power_w"], d["decode_tokens_per_s"]) for _, d in default.iterrows()]
    texts = [str(n) + ("" if d["setting"] == "w16a16kv16" else f" ({d['setting']})") for n, d in default.iterrows()]
    colours = ["#222222"] * len(texts)
    lift = [0.0] * len(texts)
    if len(front):
        lift += [16.0] * len(f)
        labels += list(zip(f["decode_power_w"], f["decode_tokens_per_s"], strict=True))
        texts += [f"{r['platform']} {setting_label(r)}: {r['decode_tokens_per_j']:.2g} tokens/J"
                  for _, r in f.iterrows()]
        colours += ["#d62728"] * len(f)
    _spread_labels(ax, labels, texts, colours=colours, side="left", lift_px=lift)

    ax.set_xlabel("power (W): published points at the survey's power (mostly TDP); llm-dse at modelled decode power"
                  if len(same_batch) else "power (W): llm-dse at modelled decode power (and at TDP)")
    ax.set_ylabel("decode tokens/s")
    study = STUDY.format(batch=batch)
    if len(same_batch):
        title = (f"Survey (Li et al., arXiv 2410.04466) at batch {batch}: {len(same_batch)} published points "
                 f"vs llm-dse (Llama-2-7B, {study})")
    else:
        title = (f"Batch {batch}: the survey's batch-{batch} points are not public; llm-dse predictions only "
                 f"(Llama-2-7B, {study})")
    ax.set_title(title, fontsize=10.5)
    ax.grid(True, which="major", alpha=0.25)

    handles = [Line2D([], [], ls="", marker="s", ms=8, color=CLASS_COLOURS[c], label=CLASS_NAMES[c])
               for c in CLASS_NAMES]
    if len(same_batch):
        handles += [
            Line2D([], [], ls="", marker="o", ms=6, mfc="none", mec="#444444", label="published, power = TDP"),
            Line2D([], [], ls="", marker="o", ms=6, color="#444444", mec="black", label="published, measured power"),
            Line2D([], [], ls="", marker="o", ms=6, color="#444444", alpha=0.75,
                   label="published, power reported by the work"),
        ]
    if len(reference):
        handles.append(Line2D([], [], ls="", marker="o", ms=5, color="#c8c8c8",
                              label="survey batch-1 points (reference only:\nno batch-8 points published)"))
    handles += [
        Line2D([], [], ls="", marker="D", ms=7, color="#444444", mec="black",
               label="llm-dse preset, 16-bit dense (PIM presets:\nGEMVs on PIM), at modelled decode power"),
        Line2D([], [], ls="-", lw=0.7, marker="D", ms=5, color="#444444", mfc="white",
               label="same, at the preset's TDP\n(the survey's convention)"),
        Line2D([], [], ls="--", lw=0.6, marker="*", ms=11, color="#444444", mec="black",
               label="llm-dse best setting per preset\n(max tokens/J that fits)"),
        Line2D([], [], ls="-", lw=2.0, marker="o", ms=7, mfc="none", color="#d62728",
               label=f"Pareto front of {study}\n(tokens/s vs tokens/J)"),
        Line2D([], [], ls=":", lw=0.9, color="#999999", label="equal tokens/J"),
    ]
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              frameon=False, labelspacing=0.9)
    if outside:
        ax.text(1.01, 0.0, "outside the axes:\n" + "\n".join(outside), transform=ax.transAxes, fontsize=7,
                va="bottom", ha="left", color="#555555")
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return out

