"""Tensor-parallel check on the project's 2x H200 measurements (issue 11, "Done means").

Two independent inputs, never the TP2 rows themselves:

1. **Link**: :func:`fit_allreduce` fits the two free terms of the model's all-reduce,
   ``collective_overhead_s`` and ``link_bw_eff_frac``, to a stand-alone NCCL all-reduce sweep
   (``validation/nccl_allreduce_h200x2.csv``, 1 KB-256 MB, 2 GPUs), through
   :func:`dse.model.collectives.all_reduce` itself with the preset's datasheet bandwidth and
   NCCL's per-step latency held fixed. Least squares on ``ln(model / measured)``.
2. **Device**: :func:`dse.validation.calibration.calibrate` on at most four TP1 (single-GPU)
   rows (:data:`CALIBRATION_ROWS`).

:func:`tp_check` then predicts every row (TP1 and TP2) with the calibrated preset and the
link fields and reports the errors per metric, model and batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from dse.api import evaluate
from dse.model import collectives as coll
from dse.results.io import read_table
from dse.spec.presets import Platform, data_dir, load_platform
from dse.validation.calibration import DEFAULT_FIT, CalibrationResult, calibrate

SYSTEM = "h200-nvlink-2"
TP_ROWS_FILE = "measurements_tp_h200.csv"
#: Held-out rows (other prompts, batches, out_len and one model card, measured after the model
#: was built); predicted with the calibration on :data:`CALIBRATION_ROWS` of :data:`TP_ROWS_FILE`,
#: never a fit target.
HELDOUT_ROWS_FILE = "measurements_tp_h200_heldout.csv"
SWEEP_FILE = "nccl_allreduce_h200x2.csv"
#: The TP1 rows the device is calibrated on, (model, batch, in_len), chosen before any TP2
#: prediction to span the model sizes (1B-70B) and the batches (1-64): a launch-bound step
#: (1B, batch 1), a bandwidth-bound one (70B, batch 1), a compute-heavy prefill (8B, batch 64)
#: and a middle point (13B, batch 8).
CALIBRATION_ROWS: tuple[tuple[str, int, int], ...] = (
    ("llama-3.2-1b", 1, 512), ("llama-3-8b", 64, 512), ("llama-2-13b", 8, 512), ("llama-3-70b", 1, 512),
)
METRICS: tuple[str, ...] = ("decode_tokens_per_s", "tpot_s", "ttft_s", "decode_power_w", "decode_tokens_per_j")
_DESIGN = ("batch", "in_len", "out_len", "w_bits", "a_bits", "kv_bits", "tp")


@dataclass(frozen=True)
class LinkFit:
    """Result of :func:`fit_allreduce`: the fitted fields (SI) and per-point residuals."""

    collective_overhead_s: float
    link_bw_eff_frac: float
    residuals: pd.DataFrame  # msg_bytes, measured_s, model_s, error_pct

    @property
    def rms_error_pct(self) -> float:
        return float(np.sqrt(np.mean(self.residuals["error_pct"].to_numpy(float) ** 2)))

    @property
    def max_abs_error_pct(self) -> float:
        return float(np.max(np.abs(self.residuals["error_pct"].to_numpy(float))))


def allreduce_s(msg_bytes: np.ndarray, n_ranks: np.ndarray, platform: Platform, **fields: float) -> np.ndarray:
    """The model's time of one all-reduce of ``msg_bytes`` over ``n_ranks`` devices of ``platform``'s
    node, seconds (ring, NCCL's default on one node); ``fields`` override the preset's (SI)."""
    sys = {**{key: platform.fields[key] for key in coll.SYSTEM_FIELDS}, **fields}
    return np.asarray(coll.all_reduce(np.asarray(msg_bytes, float), np.asarray(n_ranks, float), sys).time_s)


def fit_allreduce(sweep: pd.DataFrame | None = None, platform: str | Platform = SYSTEM, mode: str = "graph",
                  ) -> LinkFit:
    """Fit ``collective_overhead_s`` and ``link_bw_eff_frac`` to an all-reduce sweep.

    ``sweep``: rows with ``n_ranks``, ``mode``, ``msg_bytes``, ``time_s`` (default: the shipped
    :data:`SWEEP_FILE`); ``mode``: ``graph`` (calls captured in a CUDA graph, as the decode
    steps run them) or ``eager``. Bounds: overhead 0-1 ms, efficiency 0.05-1.
    """
    base = load_platform(platform)
    df = read_table(data_dir("validation") / SWEEP_FILE) if sweep is None else sweep
    pts = df[df["mode"] == mode]
    size, ranks, meas = (pts[c].to_numpy(float) for c in ("msg_bytes", "n_ranks", "time_s"))

    def resid(x: np.ndarray) -> np.ndarray:
        model = allreduce_s(size, ranks, base, collective_overhead_s=x[0] * 1e-6, link_bw_eff_frac=x[1])
        return np.log(model / meas)

    sol = least_squares(resid, [10.0, 0.8], bounds=([0.0, 0.05], [1000.0, 1.0]))
    over_s, eff = float(sol.x[0]) * 1e-6, float(sol.x[1])
    model = allreduce_s(size, ranks, base, collective_overhead_s=over_s, link_bw_eff_frac=eff)
    residuals = pd.DataFrame({"msg_bytes": size, "measured_s": meas, "model_s": model,
                              "error_pct": 100.0 * (model / meas - 1.0)})
    return LinkFit(over_s, eff, residuals)


@dataclass(frozen=True)
class StreamFit:
    """Result of :func:`fit_attn_stream`: the fitted rate (B/s) and the pairs it was fitted to."""

    attn_stream_bw_bytes_per_s: float
    pairs: pd.DataFrame  # model, batch, in_lo, in_hi, d_tpot_s, stream_bytes, rate_bytes_per_s


def fit_attn_stream(rows: pd.DataFrame | None = None) -> StreamFit:
    """Fit ``attn_stream_bw_bytes_per_s`` to the TP1 rows measured at two prompt lengths.

    For each TP1 (model, batch, out_len) measured at a short and a long prompt, the step
    time added by the longer context is decode attention alone; with ``batch x n_kv_heads``
    streams below the bandwidth limit every stream reads its own ``n_layers x 2 x head_dim x
    2 B`` per extra context token at the stream rate, whatever the batch. Rate per pair =
    extra bytes per stream per step / extra TPOT; the fit is their geometric mean (least
    squares on the log). Only TP1 rows are read (default: :data:`TP_ROWS_FILE`).
    """
    from dse.spec.presets import load_model

    rows = tp_rows() if rows is None else rows
    tp1 = rows[pd.to_numeric(rows["tp"]) == 1]
    out = []
    for (model, batch, _out_len), g in tp1.groupby(["model", "batch", "out_len"], sort=True):
        if g["in_len"].nunique() < 2:
            continue
        lo, hi = g.loc[g["in_len"].idxmin()], g.loc[g["in_len"].idxmax()]
        m = load_model(str(model)).fields
        kv_bytes = float(lo["kv_bits"]) / 8.0
        stream_bytes = m["n_layers"] * 2.0 * m["head_dim"] * kv_bytes * (float(hi["in_len"]) - float(lo["in_len"]))
        d_tpot = float(hi["tpot_s"]) - float(lo["tpot_s"])
        out.append({"model": model, "batch": int(batch), "in_lo": int(lo["in_len"]), "in_hi": int(hi["in_len"]),
                    "d_tpot_s": d_tpot, "stream_bytes": stream_bytes, "rate_bytes_per_s": stream_bytes / d_tpot})
    pairs = pd.DataFrame(out)
    if pairs.empty:
        raise ValueError("no TP1 (model, batch) measured at two prompt lengths")
    rate = float(np.exp(np.mean(np.log(pairs["rate_bytes_per_s"].to_numpy(float)))))
    return StreamFit(rate, pairs)


def tp_rows() -> pd.DataFrame:
    """The shipped TP1/TP2 rows (:data:`TP_ROWS_FILE`)."""
    return read_table(data_dir("validation") / TP_ROWS_FILE)


def heldout_rows() -> pd.DataFrame:
    """The held-out TP1/TP2 rows (:data:`HELDOUT_ROWS_FILE`)."""
    return read_table(data_dir("validation") / HELDOUT_ROWS_FILE)


def calibration_rows(rows: pd.DataFrame, picks: Sequence[tuple[str, int, int]] = CALIBRATION_ROWS) -> pd.DataFrame:
    """The TP1 rows named by ``picks`` (model, batch, in_len); every pick must match one row."""
    tp1 = rows[pd.to_numeric(rows["tp"]) == 1]
    out = []
    for model, batch, in_len in picks:
        hit = tp1[(tp1["model"] == model) & (tp1["batch"] == batch) & (tp1["in_len"] == in_len)]
        if len(hit) != 1:
            raise ValueError(f"calibration row {model} batch {batch} in_len {in_len}: {len(hit)} matches")
        out.append(hit)
    return pd.concat(out)


def predict(platform: Platform, rows: pd.DataFrame) -> pd.DataFrame:
    """Per row and metric of :data:`METRICS`: measured, predicted, ``error_pct`` (100 (pred/meas - 1))."""
    designs = pd.DataFrame({"model": rows["model"].astype(str).to_numpy()})
    for col in _DESIGN:
        designs[col] = pd.to_numeric(rows[col]).to_numpy(float)
    pred = evaluate(designs, platform=platform)
    parts = []
    for metric in METRICS:
        meas = pd.to_numeric(rows[metric]).to_numpy(float)
        parts.append(pd.DataFrame({"model": designs["model"], "batch": designs["batch"], "in_len": designs["in_len"],
                                   "tp": designs["tp"], "metric": metric, "measured": meas,
                                   "predicted": pred[metric].to_numpy(float)}))
    out = pd.concat(parts, ignore_index=True)
    return out.assign(error_pct=100.0 * (out["predicted"] / out["measured"] - 1.0))


@dataclass(frozen=True)
class TpCheck:
    """Result of :func:`tp_check`: the calibration, per-row errors and their summary."""

    calibration: CalibrationResult
    errors: pd.DataFrame  # model, batch, in_len, tp, metric, measured, predicted, error_pct
    summary: pd.DataFrame  # per (tp, metric): n, mae_pct, max_abs_pct, mean_pct

    def mae_pct(self, metric: str, tp: int = 2) -> float:
        """Mean absolute % error of ``metric`` over the rows at ``tp``."""
        return float(self.summary.loc[(tp, metric), "mae_pct"])


def summarise(errors: pd.DataFrame) -> pd.DataFrame:
    """Per (tp, metric): n, mean |error| %, max |error| %, mean (signed) error %."""
    g = errors.assign(abs_pct=errors["error_pct"].abs()).groupby(["tp", "metric"], sort=True)
    return pd.DataFrame({"n": g.size(), "mae_pct": g["abs_pct"].mean(), "max_abs_pct": g["abs_pct"].max(),
                         "mean_pct": g["error_pct"].mean()})


def tp_check(platform: str | Platform = SYSTEM, rows: pd.DataFrame | None = None,
             picks: Sequence[tuple[str, int, int]] = CALIBRATION_ROWS, fit: Sequence[str] = DEFAULT_FIT) -> TpCheck:
    """Calibrate ``platform`` on the TP1 rows ``picks`` (at most four), predict every row.

    The link fields are the preset's (for ``h200-nvlink-2``: fitted to the all-reduce sweep,
    :func:`fit_allreduce`); calibration touches only the device fields in ``fit``.

    >>> check = tp_check()  # doctest: +SKIP
    >>> check.mae_pct("decode_tokens_per_s", tp=2)  # doctest: +SKIP
    """
    if len(picks) > 4:
        raise ValueError(f"at most 4 calibration rows, got {len(picks)}")
    rows = tp_rows() if rows is None else rows
    base = load_platform(platform)
    cal = calibrate(base, calibration_rows(rows, picks), fit=fit, name=f"{base.name}-cal",
                    label=f"{len(picks)} TP1 rows of {TP_ROWS_FILE}")
    errors = predict(cal.platform, rows)
    return TpCheck(cal, errors, summarise(errors))


def heldout_check(platform: str | Platform = SYSTEM, picks: Sequence[tuple[str, int, int]] = CALIBRATION_ROWS,
                  fit: Sequence[str] = DEFAULT_FIT) -> TpCheck:
    """:func:`tp_check`'s calibration (the TP1 rows ``picks`` of :data:`TP_ROWS_FILE`), applied
    unchanged to the held-out rows :data:`HELDOUT_ROWS_FILE`: nothing is fitted to them."""
    check = tp_check(platform, picks=picks, fit=fit)
    errors = predict(check.calibration.platform, heldout_rows())
    return TpCheck(check.calibration, errors, summarise(errors))


def error_table(check: TpCheck, tp: int = 2) -> pd.DataFrame:
    """One row per measured design at ``tp``: the % error of each metric (wide)."""
    e = check.errors[check.errors["tp"] == tp]
    return e.pivot_table(index=["model", "in_len", "batch"], columns="metric", values="error_pct", sort=False)


def per_system(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per (system preset, metric) of a :func:`dse.validation.validate.validate` comparison table: n,
    mean |error| %, max |error| %, mean (signed) error % (error = predicted/measured - 1)."""
    g = comparisons.assign(abs_pct=comparisons["error_pct"].abs()).groupby(["platform", "metric"], sort=True)
    return pd.DataFrame({"n": g.size(), "mape_pct": g["abs_pct"].mean(), "max_abs_pct": g["abs_pct"].max(),
                         "mean_pct": g["error_pct"].mean()})
