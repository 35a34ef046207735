"""The survey's published points against llm-dse's predictions at their setting.

:func:`survey_disagreements` compares each published point on a device we have a preset
for with the prediction at its setting and gives, where they differ by more than 2x, the
reasons that the row's own columns support (never guessed); :func:`reason_counts` tallies them.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from dse.spec.presets import load_platform
from dse.validation.survey import DEFAULT_SETTING, cell_text, setting_label, setting_mask

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
_MULTI_DEVICE = re.compile(r"\+|,|\d\s*x\s*[A-Za-z]")
_OTHER_SIZE = re.compile(r"(?<![\d.])(?!7B)(\d+(?:\.\d+)?B)\b", re.IGNORECASE)


def _log2(x: float) -> float:
    return float(np.log2(x)) if x > 0 and np.isfinite(x) else float("nan")


def _match(preds: pd.DataFrame, point: pd.Series) -> tuple[pd.Series | None, str]:
    """The prediction row for a point: its platform, its published bits (nearest in the grid),
    16-bit where not stated, otherwise :data:`DEFAULT_SETTING`; narrower weights where that does not fit."""
    cand = preds[(preds["platform"].astype(str) == cell_text(point["platform"]))]
    cand = cand[setting_mask(cand, {k: DEFAULT_SETTING[k] for k in ("kv_bits", "nm_sparse", "pim_offload")})]
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
    rows = cand[setting_mask(cand, target)]
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
    model, method = cell_text(point.get("model")), cell_text(point.get("method"))
    device, power_kind = cell_text(point.get("device")), cell_text(point.get("power_kind")).lower()
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
            bits = cell_text(point.get("bits_evidence"))
            evidence.append(f"method=Quantization, bits {bits!r}" if bits else "method=Quantization, bits not stated")
        if not reasons:
            reasons.append("unknown setup")
            notes = [f"method={method}"] if method else []
            model_ev = cell_text(point.get("model_evidence"))
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
    matched = points[points["platform"].map(cell_text) != ""] if "platform" in points else points.iloc[:0]
    rows = []
    for idx, point in matched.iterrows():
        pred, note = _match(preds, point)
        if pred is None:
            continue
        pub_tps, pub_w = float(point["decode_tokens_per_s"]), float(point["power_w"])
        pub_tpj = float(point["tokens_per_j"]) if pd.notna(point.get("tokens_per_j")) else pub_tps / pub_w
        tdp = cell_text(point.get("power_kind")).lower() == "tdp"
        like = float(pred["tdp_tokens_per_j"] if tdp else pred["decode_tokens_per_j"])
        r_tps = float(pred["decode_tokens_per_s"]) / pub_tps
        r_tpj = like / pub_tpj
        r_fig = float(pred["decode_tokens_per_j"]) / pub_tpj
        d_tps, d_tpj, d_fig = (abs(_log2(r)) > LOG2_THRESHOLD for r in (r_tps, r_tpj, r_fig))
        reasons, evidence = _reasons(point, pred, d_tps, d_tpj, d_fig) if (d_tps or d_tpj or d_fig) else ([], [])
        rows.append({
            "row": idx, "platform_class": cell_text(point.get("platform_class")),
            "device": cell_text(point.get("device")),
            "work": cell_text(point.get("work")), "method": cell_text(point.get("method")),
            "model": cell_text(point.get("model")), "power_kind": cell_text(point.get("power_kind")),
            "platform": cell_text(point["platform"]), "setting": setting_label(pred), "setting_note": note,
            "published_tokens_per_s": pub_tps, "published_power_w": pub_w, "published_tokens_per_j": pub_tpj,
            "predicted_tokens_per_s": float(pred["decode_tokens_per_s"]),
            "predicted_power_w": float(pred["decode_power_w"]),
            "predicted_tokens_per_j": float(pred["decode_tokens_per_j"]),
            "predicted_tdp_tokens_per_j": float(pred["tdp_tokens_per_j"]),
            "preset_tdp_w": float(load_platform(cell_text(point["platform"])).fields["tdp_w"]),
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

