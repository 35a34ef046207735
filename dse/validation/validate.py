"""Compare the model with measured LLM-inference numbers (``dse validate``).

Input is a table of *measurement rows*: design columns (``platform``, ``model``,
``batch``, ``in_len``, ``out_len``, optional ``w_bits``/``a_bits``/``kv_bits``,
16 when absent) plus measured metric columns named as in :data:`dse.model.pipeline.METRICS`.
A row of a PIM system (``platform_class`` pim) is predicted with ``pim_offload`` 2 unless it
gives its own (:func:`pim_offload_of`).
Every row is predicted with its preset and card, or listed as skipped with the
reason; nothing is dropped silently. Shipped sets live in ``validation/``
(``published``, ``survey``, ``h100``, ``h200``, ``tp``, ``multi``, ``serving``); any CSV/Parquet file of rows
works too. Multi-device rows name their system preset in a ``system`` column (or, for ``tp``,
in :data:`SET_SYSTEMS`) and their parallelism in the knob columns ``tp``/``pp``/``ep``/``dp``.
Any knob column travels with the rows (categorical ones by name, e.g. ``workload``); rows are
evaluated in groups that give the same knob columns, so sets with different columns mix.
Serving rows (``serving``: ``docs/serving.md`` section 4) give a ``workload`` and the scheduler
knobs, and measured serving metrics (``serving_tokens_per_s``, ``tpot_p90_s``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from dse._version import __version__
from dse.api import evaluate
from dse.results.io import atomic_write, read_table, write_parquet
from dse.spec.errors import SpecError
from dse.spec.presets import data_dir, load_model, load_platform
from dse.spec.registry import KNOB_BY_NAME, KNOB_NAMES

#: Measured metrics validate compares (``tpot_s`` is folded into ``decode_tokens_per_s``).
MEASURED_METRICS: tuple[str, ...] = (
    "decode_tokens_per_s", "tokens_per_s", "ttft_s", "decode_power_w", "decode_tokens_per_j", "tdp_tokens_per_j",
    "serving_tokens_per_s", "serving_capacity_req_per_s", "goodput_req_per_s", "ttft_p90_s", "tpot_p90_s",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("platform", "model", "batch", "in_len", "out_len")
BITS_DEFAULT = 16.0
#: Shipped sets: name -> file in the validation folder.
SETS: dict[str, str] = {"published": "published.csv", "survey": "survey_points.csv", "h100": "measurements_h100.csv",
                        "h200": "measurements_h200.csv", "tp": "measurements_tp_h200.csv",
                        "tp-heldout": "measurements_tp_h200_heldout.csv",
                        "multi": "published_multi.csv", "serving": "serving_published.csv"}
#: Shipped sets measured on one system whose preset the rows do not name: set -> system preset.
SET_SYSTEMS: dict[str, str] = {"tp": "h200-nvlink-2", "tp-heldout": "h200-nvlink-2"}  # 2x H200 NVLink (README_tp.md)
#: What a survey point leaves unknown, and the value assumed for it (README: validation/).
SURVEY_ASSUMED: dict[str, object] = {"model": "llama-2-7b", "in_len": 128.0, "out_len": 128.0}
_SURVEY_COLUMNS = frozenset({"work", "power_w", "tokens_per_j"})
_CARRIED = ("set", "source", "device", "stack", "work", "method", "power_kind", "model_assumed", "notes")
CLASS_COLOURS: dict[str, str] = {  # the survey's own colours (survey.md section 9)
    "cpu": "#70AD47", "gpu": "#4472C4", "fpga": "#FFC000", "asic": "#C00000", "pim": "#7030A0", "?": "#888888",
}
BAND_FRAC = 0.25  # the plot's +-25 % band
PIM_ROW_OFFLOAD = 2.0  # a PIM-class row without its own pim_offload: every decode GEMV in memory
MARKERS = "o^sDv"  # one per set in the plot


def validation_dir() -> Path:
    """The shipped ``validation/`` folder: the checkout's, else the wheel's ``dse/data/validation``."""
    return data_dir("validation")


def load_set(name: str) -> pd.DataFrame:
    """Measurement rows of a shipped set (:data:`SETS`) or of a CSV/Parquet path."""
    path = validation_dir() / SETS[name] if name in SETS else Path(name)
    df = read_table(path)
    if name in SET_SYSTEMS:
        df["system"] = SET_SYSTEMS[name]
    df.insert(0, "set", name if name in SETS else path.stem)
    df.insert(1, "row", range(len(df)))  # position in the file, kept through concatenation
    return measurement_rows(df)


def measurement_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise a table to measurement rows (idempotent).

    * Survey points (columns ``work``, ``power_w``, ``tokens_per_j``) get the
      assumptions of :data:`SURVEY_ASSUMED` where unknown, flagged ``model_assumed``.
    * ``decode_tokens_per_s`` is filled from ``batch / tpot_s`` where missing.
    * Rows with ``power_kind == "tdp"``: their tokens/J was computed at TDP, so it is
      compared with ``tdp_tokens_per_j``; a TDP is no decode power, so none is compared.
    * Rows with ``power_kind == "accelerator"``: the power is the accelerator design's own
      (on-chip, as FPGA works report it), without the board, its memory or static power, so
      neither it nor the tokens/J made from it is compared with the board-level model.
    * Rows with a ``system`` (multi-device rows): predicted on that system preset (a
      platform preset with ``base:`` and link fields); the device preset moves to
      ``device_platform``. Rows with an empty ``system`` keep their ``platform``.
    """
    out = df.copy()
    if "system" in out and "device_platform" not in out:
        system = out["system"].map(_text)
        device = out["platform"] if "platform" in out else pd.Series("", index=out.index, dtype=object)
        out["device_platform"] = device
        out["platform"] = system.where(system != "", device)
    if _SURVEY_COLUMNS <= set(out.columns):
        out = _from_survey(out)
    if "tpot_s" in out and "batch" in out:
        derived = pd.to_numeric(out["batch"], errors="coerce") / pd.to_numeric(out["tpot_s"], errors="coerce")
        out["decode_tokens_per_s"] = out["decode_tokens_per_s"].fillna(derived) if "decode_tokens_per_s" in out \
            else derived
    if "power_kind" in out:
        tdp = out["power_kind"].astype(str).str.strip().str.lower().eq("tdp")
        if "decode_tokens_per_j" in out:
            moved = out["decode_tokens_per_j"].where(tdp)
            out["tdp_tokens_per_j"] = out["tdp_tokens_per_j"].fillna(moved) if "tdp_tokens_per_j" in out else moved
            out.loc[tdp, "decode_tokens_per_j"] = np.nan
        if "decode_power_w" in out:
            out.loc[tdp, "decode_power_w"] = np.nan
        accelerator = out["power_kind"].astype(str).str.strip().str.lower().eq("accelerator")
        for col in ("decode_power_w", "decode_tokens_per_j"):
            if col in out:
                out.loc[accelerator, col] = np.nan
    return out


def _from_survey(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    model = out["model"] if "model" in out else pd.Series(np.nan, index=out.index, dtype=object)
    out["model_assumed"] = model.isna() | model.astype(str).str.strip().eq("")
    for col, value in SURVEY_ASSUMED.items():
        current = out[col] if col in out else pd.Series(np.nan, index=out.index, dtype=object)
        out[col] = current.where(~(current.isna() | current.astype(str).str.strip().eq("")), value)
    out["decode_power_w"] = out["power_w"]
    out["decode_tokens_per_j"] = out["tokens_per_j"]
    return out.drop(columns=["power_w", "tokens_per_j"])


@dataclass(frozen=True)
class ValidationReport:
    """Result of :func:`validate`.

    ``comparisons``: one row per (input row, measured metric): design columns,
    ``metric``, ``measured``, ``predicted``, ``error_pct`` (100 (pred/meas - 1)) and
    ``log_ratio`` (ln(pred/meas)). ``summary``: per metric and platform class (and
    ``all``): ``n``, ``mape_pct``, ``median_abs_log_error``, ``gmean_ratio``,
    ``spearman_rho``. ``skipped``: input rows not predicted, with ``reason``.
    """

    comparisons: pd.DataFrame
    summary: pd.DataFrame
    skipped: pd.DataFrame

    def to_text(self) -> str:
        """Human-readable tables: every comparison, the skipped rows, the summary."""
        parts = []
        if len(self.comparisons):
            view = self.comparisons.copy()
            view["source"] = view.get("source", pd.Series("", index=view.index)).astype(str).str.slice(0, 40)
            cols = [c for c in ("set", "row", "platform", "model", "batch", "in_len", "out_len", "w_bits", "tp",
                                "metric", "measured", "predicted", "error_pct", "source") if c in view]
            parts.append(view[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        else:
            parts.append("no row could be predicted")
        if len(self.skipped):
            cols = [c for c in ("set", "row", "platform", "device", "model", "reason") if c in self.skipped]
            parts.append(f"skipped {len(self.skipped)} rows:\n"
                         + self.skipped[cols].to_string(index=False, max_colwidth=40))
        if len(self.summary):
            parts.append("summary (error = predicted/measured - 1):\n"
                         + self.summary.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        return "\n\n".join(parts) + "\n"


def validate(rows: pd.DataFrame) -> ValidationReport:
    """Predict every measurement row with its preset and card and compare (see module doc).

    >>> report = validate(load_set("published"))  # doctest: +SKIP
    >>> report.summary.query("platform_class == 'all'")  # doctest: +SKIP
    """
    rows = measurement_rows(rows).reset_index(drop=True)
    missing = [c for c in REQUIRED_COLUMNS if c not in rows]
    if missing:
        raise SpecError("<rows>", missing[0], "required column missing", list(rows.columns))
    metrics = [m for m in MEASURED_METRICS if m in rows]
    if not metrics:
        raise SpecError("<rows>", "<metrics>", f"no measured metric column (one of {list(MEASURED_METRICS)})",
                        list(rows.columns))
    for col in [*metrics, "batch", "in_len", "out_len", *(b for b in ("w_bits", "a_bits", "kv_bits") if b in rows)]:
        rows[col] = pd.to_numeric(rows[col], errors="coerce")
    reasons, classes = _skip_reasons(rows, metrics)
    kept = rows[reasons.isna()]
    comparisons = _compare(kept, classes[reasons.isna()], metrics)
    skipped = _carried(rows[reasons.notna()]).assign(platform_class=classes[reasons.notna()],
                                                     reason=reasons[reasons.notna()])
    return ValidationReport(comparisons, summarise(comparisons), skipped.reset_index(drop=True))


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def _resolvable(names: pd.Series, loader) -> dict[str, object]:
    """name -> loaded object, or None when the name resolves to nothing."""
    out: dict[str, object] = {}
    for name in {_text(n) for n in names}:
        try:
            out[name] = loader(name) if name else None
        except SpecError:
            out[name] = None
    return out


def _skip_reasons(rows: pd.DataFrame, metrics: list[str]) -> tuple[pd.Series, pd.Series]:
    """(reason or None, platform class) per row; the first failing check names the reason.

    The class is the row's own ``platform_class`` where given (the survey's), else the preset's.
    """
    platforms = _resolvable(rows["platform"], load_platform)
    models = _resolvable(rows["model"], load_model)
    row_class = rows["platform_class"].map(_text).str.lower() if "platform_class" in rows else None
    reasons, classes = [], []
    for i, r in rows.iterrows():
        plat, model = _text(r["platform"]), _text(r["model"])
        preset = platforms[plat]
        given = row_class[i] if row_class is not None else ""
        classes.append(given or (preset.platform_class if preset else "?"))
        device = _text(r["device"]) if "device" in rows else ""
        if not plat:
            reasons.append(f"no preset for device {device!r}" if device else "platform not given")
        elif preset is None:
            reasons.append(f"no preset {plat!r}")
        elif not model:
            reasons.append("model not given")
        elif models[model] is None:
            reasons.append(f"no model card {model!r}")
        else:
            reasons.append(_design_problem(r) or (None if r[metrics].notna().any() else "no measured metric"))
    return pd.Series(reasons, index=rows.index, dtype=object), pd.Series(classes, index=rows.index)


def _design_problem(r: pd.Series) -> str | None:
    for col in ("batch", "in_len", "out_len"):
        if not r[col] >= 1:
            return f"{col} not given" if pd.isna(r[col]) else f"{col} must be >= 1"
    for col in ("w_bits", "a_bits", "kv_bits"):
        if col in r and pd.notna(r[col]) and not 1 <= r[col] <= 32:
            return f"{col} must be in [1, 32]"
    return None


def _carried(rows: pd.DataFrame) -> pd.DataFrame:
    """Identity and design columns of rows; ``row`` is the input's ``row`` column, else the position in the input."""
    out = pd.DataFrame({"row": rows["row"] if "row" in rows else rows.index}, index=rows.index)
    for col in (*_CARRIED[:1], "platform", "model", "batch", "in_len", "out_len", "w_bits", "a_bits", "kv_bits",
                "tp", "pp", "workload", *_CARRIED[1:]):
        if col in rows:
            out[col] = rows[col]
    return out


def _compare(rows: pd.DataFrame, classes: pd.Series, metrics: list[str]) -> pd.DataFrame:
    """Long table of (row, metric) comparisons for predictable rows."""
    columns = [*_carried(rows.iloc[:0]).columns, "pim_offload", "platform_class", "metric", "measured", "predicted",
               "error_pct", "log_ratio", "fits_memory"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    designs = pd.DataFrame({"platform": rows["platform"].map(_text), "model": rows["model"].map(_text)})
    for knob in KNOB_NAMES:
        if knob in rows:
            designs[knob] = rows[knob].map(_text).replace("", np.nan) if KNOB_BY_NAME[knob].choices \
                else rows[knob].astype(float)
    for bits in ("w_bits", "a_bits", "kv_bits"):
        designs[bits] = designs[bits].fillna(BITS_DEFAULT) if bits in designs else BITS_DEFAULT
    designs["pim_offload"] = pim_offload_of(designs, classes)
    predicted = _evaluate_by_columns(designs)
    base = _carried(rows).assign(platform_class=classes, fits_memory=predicted["g_memory_bytes"] <= 0)
    for knob in ("w_bits", "a_bits", "kv_bits", "pim_offload"):
        base[knob] = designs[knob]
    parts = []
    for metric in metrics:
        measured = rows[metric]
        has = measured.notna() & (measured > 0)
        part = base[has].assign(metric=metric, measured=measured[has], predicted=predicted.loc[has, metric])
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    ratio = out["predicted"].astype(float) / out["measured"].astype(float)
    out["error_pct"] = 100.0 * (ratio - 1.0)
    out["log_ratio"] = np.log(ratio)
    return out[[c for c in columns if c in out]]


def _evaluate_by_columns(designs: pd.DataFrame) -> pd.DataFrame:
    """``evaluate`` over rows grouped by the knob columns they give (a column empty in a row is
    left to its default there), in the input's order and index."""
    given = designs.notna()
    parts = []
    for _, idx in given.groupby(list(given.columns), sort=False).groups.items():
        part = designs.loc[idx, given.loc[idx].all()]
        parts.append(evaluate(part.reset_index(drop=True)).set_axis(idx))
    return pd.concat(parts).loc[designs.index]


def pim_offload_of(designs: pd.DataFrame, classes: pd.Series) -> pd.Series:
    """The ``pim_offload`` each row is predicted with: the row's own value where given, else
    :data:`PIM_ROW_OFFLOAD` for a PIM-class row (a survey point measured on a PIM system, e.g. the
    AiMX card, ran its decode GEMVs in memory) and 0 for every other row. A preset without PIM
    units ignores it."""
    given = designs["pim_offload"] if "pim_offload" in designs else pd.Series(np.nan, index=designs.index)
    pim_row = classes.reindex(designs.index).astype(str).str.strip().str.lower().eq("pim")
    return given.where(given.notna(), np.where(pim_row, PIM_ROW_OFFLOAD, 0.0)).astype(float)


def summarise(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per set (where a ``set`` column exists), metric and platform class (plus ``all``): n, MAPE %,
    median |ln(pred/meas)|, geometric-mean pred/meas and Spearman's rank correlation (NaN below 3 points)."""
    by = ["set", "metric"] if "set" in comparisons else ["metric"]
    rows = []
    for key, group in comparisons.groupby(by, sort=False):
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        for cls, part in [("all", group), *group.groupby("platform_class")]:
            rows.append({**labels, "platform_class": cls, **_stats(part)})
    return pd.DataFrame(rows, columns=[*by, "platform_class", "n", "mape_pct", "median_abs_log_error",
                                       "gmean_ratio", "spearman_rho"])


def _stats(g: pd.DataFrame) -> dict[str, float]:
    meas, pred = g["measured"].to_numpy(float), g["predicted"].to_numpy(float)
    log_ratio = g["log_ratio"].to_numpy(float)
    varied = len(g) >= 3 and np.ptp(meas) > 0 and np.ptp(pred) > 0
    return {
        "n": len(g),
        "mape_pct": float(np.mean(np.abs(pred / meas - 1.0)) * 100.0),
        "median_abs_log_error": float(np.median(np.abs(log_ratio))),
        "gmean_ratio": float(np.exp(np.mean(log_ratio))),
        "spearman_rho": float(spearmanr(meas, pred)[0]) if varied else float("nan"),
    }


def plot_validation(report: ValidationReport, path: str | Path) -> Path:
    """Predicted vs measured, log-log, one panel per metric: y = x, +-25 % band, colour = platform class,
    marker = set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    comp = report.comparisons
    metrics = list(dict.fromkeys(comp["metric"])) or ["decode_tokens_per_s"]
    ncols = min(len(metrics), 3)
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.2 * nrows), dpi=110, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        part = comp[comp["metric"] == metric]
        values = np.concatenate([part["measured"].to_numpy(float), part["predicted"].to_numpy(float)])
        lo, hi = (values.min() / 1.5, values.max() * 1.5) if len(values) else (0.1, 10.0)
        line = np.geomspace(lo, hi, 50)
        ax.fill_between(line, line * (1 - BAND_FRAC), line * (1 + BAND_FRAC), color="#dddddd", label="±25 %")
        ax.plot(line, line, "k-", lw=0.8, label="y = x")
        sets = part["set"] if "set" in part else pd.Series("", index=part.index)
        for (cls, name), g in part.groupby([part["platform_class"], sets]):
            marker = MARKERS[sorted(set(sets)).index(name) % len(MARKERS)]
            ax.scatter(g["measured"], g["predicted"], s=16, marker=marker, color=CLASS_COLOURS.get(cls, "#888888"),
                       edgecolors="none", label=f"{cls} {name} ({len(g)})".replace("  ", " "))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        for axis in (ax.xaxis, ax.yaxis):  # minor labels collide on a narrow range (board power: 300-2,000 W)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"measured {metric}")
        ax.set_ylabel(f"predicted {metric}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_report(report: ValidationReport, out_dir: str | Path, *, sets: Sequence[str] = ()) -> dict[str, Path]:
    """``validation.parquet`` (comparisons; summary and skipped rows in the schema metadata) and ``validation.png``."""
    out_dir = Path(out_dir)
    table = report.comparisons.copy()
    for col in table.columns:
        if col in ("fits_memory", "model_assumed"):
            table[col] = table[col].astype("boolean")
        elif table[col].dtype == object:
            table[col] = table[col].map(_text)
    meta = {"version": __version__, "sets": list(sets),
            "summary": report.summary.to_dict(orient="records"),
            "skipped": report.skipped.astype(object).where(report.skipped.notna(), None).to_dict(orient="records")}
    return {"parquet": write_parquet(table, out_dir / "validation.parquet", metadata=meta),
            "plot": plot_validation(report, out_dir / "validation.png")}
