"""The survey's central figure, reproduced: decode tokens/s against power with lines of equal tokens/J.

Li et al., "Large Language Model Inference Acceleration: A Comprehensive Hardware
Perspective" (arXiv 2410.04466) compares ~7B decode at batch 1 (and batch 8) on CPU, GPU,
FPGA, ASIC and PIM/NDP platforms in one log-log scatter: x = power (W), y = decode
tokens/s, diagonals of equal tokens/J. This module draws the same axes with

* the survey's published batch-1 points (``validation/survey_points.csv``), coloured by
  platform class; hollow where the survey's power is a TDP, filled where it was measured
  (black edge) or reported by the cited work (no edge). The survey's batch-8 points are
  not public, so the batch-8 figure says so and shows the batch-1 points in grey only;
* what llm-dse predicts for every preset (Llama-2-7B, the study's lengths): the default
  software setting (16-bit, dense, decode GEMVs on PIM where the preset has PIM units; the
  widest weights that fit where 16-bit does not)
  and the best setting (highest decode tokens/J that fits), both at the modelled decode
  power, and the default again at the preset's TDP (the survey's convention), joined to
  its modelled position by a thin line;
* the Pareto front (decode tokens/s vs decode tokens/J) of the study.

:func:`survey_disagreements` compares each published point on a device we have a preset
for with the prediction at its setting and gives, where they differ by more than 2x, the
reasons that the row's own columns support (never guessed).

The predictions come from a results folder of ``dse run studies/survey-bs{1,8}.yaml``
(``trials.parquet``/``front.parquet``) or are computed here with :func:`dse.evaluate`.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dse.api import evaluate
from dse.results.io import atomic_write, read_table
from dse.results.tables import front_of
from dse.spec.errors import SpecError
from dse.spec.presets import load_platform, read_yaml, resolve
from dse.validation.validate import CLASS_COLOURS, validation_dir

#: The software knobs of the survey study and their default values: uncompressed and dense, with
#: every decode GEMV on the PIM units where the preset has them (the device's own mapping; the
#: knob has no effect on a preset without PIM units).
DEFAULT_SETTING: dict[str, float] = {"w_bits": 16.0, "a_bits": 16.0, "kv_bits": 16.0, "nm_sparse": 0.0,
                                     "pim_offload": 2.0}
OBJECTIVES: list[tuple[str, bool]] = [("decode_tokens_per_s", True), ("decode_tokens_per_j", True)]
#: Diagonals of equal tokens/J drawn in the figure (the survey's).
TOKENS_PER_J_LINES: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
#: The survey's axes (survey.md section 9), widened where a plotted point needs it.
X_LIMITS = (1.0, 1000.0)
Y_LIMITS = (1.0, 10_000.0)
#: Disagreement threshold: |log2(predicted / published)| above this (2x).
LOG2_THRESHOLD = 1.0
#: Reasons :func:`survey_disagreements` may give, in the order the rules are tried.
REASONS: tuple[str, ...] = (
    "model size differs",
    "fast decoding used (the survey studies run without spec_len)",
    "multi-device system",
    "quantisation/bits unknown",
    "measured/reported power differs",
    "TDP vs measured power",
    "unknown setup",
)
CLASS_NAMES = {"cpu": "CPU", "gpu": "GPU", "fpga": "FPGA", "asic": "ASIC", "pim": "PIM/NDP"}
_STUDY = "survey-bs{batch}"
_MULTI_DEVICE = re.compile(r"\+|,|\d\s*x\s*[A-Za-z]")
_OTHER_SIZE = re.compile(r"(?<![\d.])(?!7B)(\d+(?:\.\d+)?B)\b", re.IGNORECASE)


# ---- predictions ---------------------------------------------------------------------------

def compute_predictions(batch: int, *, study: str = "survey-bs1") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, front) of the survey study at ``batch``, computed with :func:`dse.evaluate`.

    Every design of the study's space (every preset x software setting, ``choices`` knobs),
    the study's model and fixed lengths, the batch given; ``feasible`` = fits in memory
    (the survey studies have no other constraint); the front is that of ``dse run``.
    """
    spec = read_yaml(resolve("studies", study))
    space = read_yaml(resolve("spaces", spec["space"]))
    knobs = space.get("knobs", {})
    names, values = [], []
    for name, knob in knobs.items():
        if not isinstance(knob, dict) or "choices" not in knob:
            raise SpecError(str(spec["space"]), f"knobs.{name}", "survey predictions need `choices` knobs", knob)
        names.append(name)
        values.append(list(knob["choices"]))
    designs = pd.DataFrame(list(itertools.product(*values)), columns=names)
    for name, value in {**space.get("fixed", {}), **spec.get("workload", {}), "batch": batch}.items():
        designs[name] = value
    trials = evaluate(designs, model=spec["model"])
    for col in names:
        if col != "platform":
            trials[col] = trials[col].astype(float)
    trials["feasible"] = trials["g_memory_bytes"] <= 0
    return trials, front_of(trials, OBJECTIVES, names)


def load_predictions(results_dir: str | Path | None, batch: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, front) from a study folder (``trials.parquet``, ``front.parquet``), else computed."""
    if results_dir is None:
        return compute_predictions(batch)
    folder = Path(results_dir)
    trials, front = read_table(folder / "trials.parquet"), read_table(folder / "front.parquet")
    batches = set(pd.to_numeric(trials["batch"]).unique()) if "batch" in trials else {float(batch)}
    if batches != {float(batch)}:
        raise SpecError(str(folder / "trials.parquet"), "batch", f"results are for batch {sorted(batches)}, "
                        f"not {batch}", sorted(batches))
    return trials, front


def _setting_mask(df: pd.DataFrame, setting: dict[str, float]) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for knob, value in setting.items():
        if knob in df:
            mask &= np.isclose(df[knob].astype(float), value)
    return mask


def setting_label(row: pd.Series | dict) -> str:
    """Short label of a software setting, e.g. ``w4a8kv4 2:4 pim``."""
    def bits(x: float) -> str:
        return f"{x:g}"
    text = f"w{bits(row['w_bits'])}a{bits(row['a_bits'])}kv{bits(row['kv_bits'])}"
    if row.get("nm_sparse", 0) > 0:
        text += " 2:4"
    if row.get("pim_offload", 0) > 0 and "platform" in row and _has_pim(str(row["platform"])):
        text += " pim"
    return text


def _has_pim(platform: str) -> bool:
    try:
        return load_platform(platform).fields.get("pim_peak_flop_per_s", 0.0) > 0
    except SpecError:
        return False


def preset_predictions(trials: pd.DataFrame) -> pd.DataFrame:
    """Two rows per preset: ``kind`` = ``default`` (:data:`DEFAULT_SETTING`; the widest weights
    that fit where 16-bit does not) and ``best`` (highest decode tokens/J among the settings that
    fit, then highest tokens/s), with ``platform_class``, ``tdp_w`` and ``setting``."""
    rows = []
    for platform, group in trials.groupby("platform", sort=False):
        preset = load_platform(str(platform))
        default = None
        for w_bits in sorted(group["w_bits"].unique(), reverse=True):
            cand = group[_setting_mask(group, {**DEFAULT_SETTING, "w_bits": float(w_bits)})]
            if len(cand) and (default is None or cand["feasible"].any()):
                default = cand[cand["feasible"]].iloc[0] if cand["feasible"].any() else cand.iloc[0]
                if default["feasible"]:
                    break
        feasible = group[group["feasible"]]
        best = (feasible.sort_values(["decode_tokens_per_j", "decode_tokens_per_s"], ascending=False).iloc[0]
                if len(feasible) else None)
        for kind, row in (("default", default), ("best", best)):
            if row is None:
                continue
            rows.append({**row.to_dict(), "kind": kind, "platform_class": preset.platform_class,
                         "tdp_w": preset.fields["tdp_w"], "setting": setting_label(row)})
    return pd.DataFrame(rows)


# ---- published points and disagreements ---------------------------------------------------

def load_points() -> pd.DataFrame:
    """The survey's 180 published batch-1 points (``validation/survey_points.csv``)."""
    return pd.read_csv(validation_dir() / "survey_points.csv")


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def _log2(x: float) -> float:
    return float(np.log2(x)) if x > 0 and np.isfinite(x) else float("nan")


def _match(preds: pd.DataFrame, point: pd.Series) -> tuple[pd.Series | None, str]:
    """The prediction row for a point: its platform, its published bits (nearest in the grid),
    16-bit where not stated, otherwise :data:`DEFAULT_SETTING`; narrower weights where that does not fit."""
    cand = preds[(preds["platform"].astype(str) == _text(point["platform"]))]
    cand = cand[_setting_mask(cand, {k: DEFAULT_SETTING[k] for k in ("kv_bits", "nm_sparse", "pim_offload")})]
    if cand.empty:
        return None, "no prediction for this preset"
    notes = []
    target = {}
    for knob in ("w_bits", "a_bits"):
        given = pd.to_numeric(point.get(knob), errors="coerce")
        want = float(given) if pd.notna(given) else DEFAULT_SETTING[knob]
        grid = np.sort(cand[knob].astype(float).unique())
        near = float(grid[np.argmin(np.abs(np.log2(grid) - np.log2(want)) - 1e-9 * grid)])
        if pd.isna(given):
            notes.append(f"{knob} not stated, {want:g} assumed")
        if not np.isclose(near, want):
            notes.append(f"{knob} {want:g} not in the study grid, {near:g} used")
        target[knob] = near
    rows = cand[_setting_mask(cand, target)]
    if len(rows) and not rows["feasible"].any():
        smaller = cand[np.isclose(cand["a_bits"].astype(float), target["a_bits"])
                       & (cand["w_bits"].astype(float) < target["w_bits"]) & cand["feasible"]]
        if len(smaller):
            w = float(smaller["w_bits"].max())
            notes.append(f"w_bits {target['w_bits']:g} does not fit in memory, {w:g} used")
            rows = smaller[np.isclose(smaller["w_bits"].astype(float), w)]
    if rows.empty:
        return None, "setting not in the predictions"
    return rows.iloc[0], "; ".join(notes)


def _reasons(point: pd.Series, pred: pd.Series, d_tps: bool, d_tpj: bool, d_figure: bool
             ) -> tuple[list[str], list[str]]:
    """(reasons, evidence) for a disagreement, from the point's own columns only (see
    :func:`survey_disagreements` for the rules)."""
    reasons, evidence = [], []
    model, method = _text(point.get("model")), _text(point.get("method"))
    device, power_kind = _text(point.get("device")), _text(point.get("power_kind")).lower()
    pub_w, pred_w = float(point["power_w"]), float(pred["decode_power_w"])
    power_differs = power_kind in ("measured", "reported") and abs(_log2(pred_w / pub_w)) > LOG2_THRESHOLD
    if d_tps or (d_tpj and not power_differs):
        if model and model != "llama-2-7b":
            reasons.append("model size differs")
            evidence.append(f"model={model} (predicted: llama-2-7b)")
        if method == "Fast Decoding":
            reasons.append("fast decoding used (the survey studies run without spec_len)")
            evidence.append(f"method={method}")
        if "Cooperation" in method or _MULTI_DEVICE.search(device):
            reasons.append("multi-device system")
            evidence.append(f"method={method}" + (f", device={device}" if _MULTI_DEVICE.search(device) else ""))
        if method == "Quantization" and pd.isna(pd.to_numeric(point.get("w_bits"), errors="coerce")):
            reasons.append("quantisation/bits unknown")
            bits = _text(point.get("bits_evidence"))
            evidence.append(f"method=Quantization, bits {bits!r}" if bits else "method=Quantization, bits not stated")
        if not reasons:
            reasons.append("unknown setup")
            notes = [f"method={method}"] if method else []
            model_ev = _text(point.get("model_evidence"))
            if model_ev:
                sizes = _OTHER_SIZE.findall(model_ev)
                notes.append(f"model evidence {model_ev!r}" + (f" (names {', '.join(sizes)})" if sizes else ""))
            else:
                notes.append("model and bits not stated")
            evidence.append(", ".join(notes))
    if d_tpj and power_differs:
        reasons.append("measured/reported power differs")
        evidence.append(f"{power_kind} power {pub_w:g} W vs modelled decode power {pred_w:.0f} W")
    if d_figure and power_kind == "tdp":
        reasons.append("TDP vs measured power")
        evidence.append(f"survey power {pub_w:g} W is a TDP; modelled decode power {pred_w:.0f} W")
    return reasons, evidence


def survey_disagreements(points: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Published points on a device with a preset, against llm-dse's prediction at their setting.

    ``points``: survey rows (``validation/survey_points.csv`` columns: ``platform``,
    ``decode_tokens_per_s``, ``power_w``, ``tokens_per_j``, ``power_kind``, ``method``,
    ``model``, ``w_bits``, ``a_bits``, ...). ``predictions``: evaluated designs with the
    survey study's knobs (``platform``, ``w_bits``, ``a_bits``, ``kv_bits``, ``nm_sparse``,
    ``pim_offload``) and metrics, e.g. ``trials.parquet`` of ``dse run studies/survey-bs1.yaml``.

    Each point is matched with its preset's design at the point's bits (16 where not stated,
    the nearest grid value otherwise; narrower weights where those do not fit in memory),
    dense, KV 16-bit, no PIM offload: always a Llama-2-7B prediction, as in the figure.
    Ratios are predicted / published:

    * ``ratio_tokens_per_s``: decode tokens/s;
    * ``ratio_tokens_per_j``: like for like: our ``tdp_tokens_per_j`` where the survey's
      power is a TDP (``power_kind == 'tdp'``), our ``decode_tokens_per_j`` otherwise;
    * ``ratio_tokens_per_j_modelled``: our ``decode_tokens_per_j`` (the figure's position).

    ``disagrees``: some |log2 ratio| > 1 (2x). ``reason``: for those, ``"; "``-joined entries of
    :data:`REASONS`, each from a rule on the row's columns, never guessed:

    * where tokens/s differ, or like-for-like tokens/J differ without a power explanation:
      ``model size differs`` (the ``model`` named is not llama-2-7b), ``speculative/fast
      decoding not modelled`` (method ``Fast Decoding``), ``multi-device system`` (method
      ``* Cooperation``, or a device naming several parts), ``quantisation/bits unknown``
      (method ``Quantization`` without ``w_bits``); ``unknown setup`` where none applies;
    * ``measured/reported power differs``: like-for-like tokens/J differ and the survey's
      measured or reported power is more than 2x from our modelled decode power;
    * ``TDP vs measured power``: the survey's power is a TDP and the tokens/J at our modelled
      power (the figure's comparison) differs by more than 2x.

    ``evidence`` quotes the columns behind each reason. Sorted worst first.
    """
    preds = predictions.copy()
    if "feasible" not in preds:
        preds["feasible"] = preds["g_memory_bytes"] <= 0 if "g_memory_bytes" in preds else True
    matched = points[points["platform"].map(_text) != ""] if "platform" in points else points.iloc[:0]
    rows = []
    for idx, point in matched.iterrows():
        pred, note = _match(preds, point)
        if pred is None:
            continue
        pub_tps, pub_w = float(point["decode_tokens_per_s"]), float(point["power_w"])
        pub_tpj = float(point["tokens_per_j"]) if pd.notna(point.get("tokens_per_j")) else pub_tps / pub_w
        tdp = _text(point.get("power_kind")).lower() == "tdp"
        like = float(pred["tdp_tokens_per_j"] if tdp else pred["decode_tokens_per_j"])
        r_tps = float(pred["decode_tokens_per_s"]) / pub_tps
        r_tpj = like / pub_tpj
        r_fig = float(pred["decode_tokens_per_j"]) / pub_tpj
        d_tps, d_tpj, d_fig = (abs(_log2(r)) > LOG2_THRESHOLD for r in (r_tps, r_tpj, r_fig))
        reasons, evidence = _reasons(point, pred, d_tps, d_tpj, d_fig) if (d_tps or d_tpj or d_fig) else ([], [])
        rows.append({
            "row": idx, "platform_class": _text(point.get("platform_class")), "device": _text(point.get("device")),
            "work": _text(point.get("work")), "method": _text(point.get("method")),
            "model": _text(point.get("model")), "power_kind": _text(point.get("power_kind")),
            "platform": _text(point["platform"]), "setting": setting_label(pred), "setting_note": note,
            "published_tokens_per_s": pub_tps, "published_power_w": pub_w, "published_tokens_per_j": pub_tpj,
            "predicted_tokens_per_s": float(pred["decode_tokens_per_s"]),
            "predicted_power_w": float(pred["decode_power_w"]),
            "predicted_tokens_per_j": float(pred["decode_tokens_per_j"]),
            "predicted_tdp_tokens_per_j": float(pred["tdp_tokens_per_j"]),
            "preset_tdp_w": float(load_platform(_text(point["platform"])).fields["tdp_w"]),
            "ratio_tokens_per_s": r_tps, "ratio_tokens_per_j": r_tpj, "ratio_tokens_per_j_modelled": r_fig,
            "worst_abs_log2": float(np.nanmax(np.abs([_log2(r_tps), _log2(r_tpj), _log2(r_fig)]))),
            "disagrees": bool(d_tps or d_tpj or d_fig), "reason": "; ".join(reasons), "evidence": " | ".join(evidence),
        })
    columns = ["row", "platform_class", "device", "work", "method", "model", "power_kind", "platform", "setting",
               "setting_note", "published_tokens_per_s", "published_power_w", "published_tokens_per_j",
               "predicted_tokens_per_s", "predicted_power_w", "predicted_tokens_per_j", "predicted_tdp_tokens_per_j",
               "preset_tdp_w", "ratio_tokens_per_s", "ratio_tokens_per_j", "ratio_tokens_per_j_modelled",
               "worst_abs_log2", "disagrees", "reason", "evidence"]
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values("worst_abs_log2", ascending=False, kind="stable").reset_index(drop=True)


def reason_counts(disagreements: pd.DataFrame) -> pd.Series:
    """How many disagreeing points each reason of :data:`REASONS` applies to (a point may have several)."""
    split = disagreements.loc[disagreements["disagrees"], "reason"].str.split("; ").explode()
    return split.value_counts().reindex(list(REASONS), fill_value=0)


# ---- the figure ----------------------------------------------------------------------------

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
    for cls, group in same_batch.groupby(same_batch["platform_class"].map(_text).str.lower()):
        colour = CLASS_COLOURS.get(cls, CLASS_COLOURS["?"])
        kind = group["power_kind"].map(_text).str.lower()
        tdp, measured, reported = group[kind == "tdp"], group[kind == "measured"], group[~kind.isin(["tdp",
                                                                                                        "measured"])]
        ax.scatter(tdp["x"], tdp["y"], s=26, facecolors="none", edgecolors=colour, lw=1.1, zorder=3)
        ax.scatter(reported["x"], reported["y"], s=24, c=colour, lw=0, alpha=0.75, zorder=3)
        ax.scatter(measured["x"], measured["y"], s=34, c=colour, edgecolors="black", lw=0.9, zorder=4)
    for _, r in same_batch.iterrows():
        if not (xlim[0] <= r["x"] <= xlim[1] and ylim[0] <= r["y"] <= ylim[1]):
            outside.append(f"{_text(r.get('work'))} ({r['y']:g} tokens/s, {r['x']:g} W)")

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
    study = _STUDY.format(batch=batch)
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


def results_for(results: str | Path | None, batch: int) -> Path | None:
    """The results folder of ``batch`` under ``results`` (``dse plot --survey --results DIR``): DIR/survey-bs<B>,
    DIR/bs<B> or DIR itself; None to compute the predictions."""
    if results is None:
        return None
    base = Path(results)
    for folder in (base / _STUDY.format(batch=batch), base / f"bs{batch}", base):
        if (folder / "trials.parquet").is_file() and (folder / "front.parquet").is_file():
            trials = read_table(folder / "trials.parquet")
            if "batch" not in trials or set(pd.to_numeric(trials["batch"]).unique()) == {float(batch)}:
                return folder
    raise SpecError(str(base), "--results", f"no trials.parquet/front.parquet of batch {batch} "
                    f"(looked in {_STUDY.format(batch=batch)}/, bs{batch}/ and the folder itself)", str(base))
