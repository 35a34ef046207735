"""Fit a preset's efficiencies, overheads and power terms to measurements (``dse calibrate``).

Bounded least squares (``scipy.optimize.least_squares``) on log-ratio residuals
``ln(predicted / measured)`` of the measured metrics each row has: decode speed
(``decode_tokens_per_s``, or ``tpot_s``; ``tokens_per_s`` only where neither is
given), ``ttft_s``, and decode power (``decode_power_w``, else
``decode_tokens_per_j``). Only parameters the data can identify are fitted: power
terms need a measured power, and a parameter the residuals do not move at the
solution is put back to its preset value with a warning.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import least_squares

from dse.api import evaluate
from dse.results.io import atomic_write
from dse.spec.errors import SpecError, did_you_mean
from dse.spec.presets import Platform, load_platform, read_yaml
from dse.spec.registry import KNOB_NAMES
from dse.spec.units import to_si
from dse.validation.validate import measurement_rows

DEFAULT_FIT: tuple[str, ...] = ("compute_eff_frac", "mem_bw_eff_frac", "kernel_overhead_s", "static_power_w",
                                "mem_energy_pj_per_bit", "flop16_energy_pj_per_flop")
ENERGY_PARAMS: frozenset[str] = frozenset({"mem_energy_pj_per_bit", "sram_energy_pj_per_bit",
                                           "flop16_energy_pj_per_flop", "pim_energy_pj_per_bit",
                                           "pim_energy_pj_per_flop", "host_link_energy_pj_per_bit"})
POWER_PARAMS: frozenset[str] = ENERGY_PARAMS | {"static_power_w"}
FITTABLE: tuple[str, ...] = ("compute_eff_frac", "mem_bw_eff_frac", "kernel_overhead_s", "static_power_w",
                             *sorted(ENERGY_PARAMS))
REQUIRED_COLUMNS: tuple[str, ...] = ("model", "batch", "in_len", "out_len")
SPEED_METRICS: tuple[str, ...] = ("decode_tokens_per_s", "ttft_s", "tokens_per_s")
POWER_METRICS: tuple[str, ...] = ("decode_power_w", "decode_tokens_per_j")
EFF_BOUNDS = (0.05, 1.0)
OVERHEAD_BOUNDS_S = (0.0, 1e-3)
ENERGY_SCALE = 10.0  # energy terms may move within [preset / 10, preset * 10]
MIN_SENSITIVITY = 1e-2  # |d ln(metric) / d u| below this for every residual: not identifiable (u: 0..1 over bounds)
AT_BOUND_U = 1e-3  # a fitted u this close to 0 or 1 is reported as at its bound
DEGENERATE_SV_RATIO = 1e-4  # smallest/largest singular value of the Jacobian below this: collinear parameters


@dataclass(frozen=True)
class _Param:
    """A fitted hardware field, mapped to u in [0, 1] over its bounds (log scale for energy terms)."""

    name: str
    preset: float
    lower: float
    upper: float
    log: bool

    def to_u(self, value: float) -> float:
        if self.log:
            return math.log(value / self.lower) / math.log(self.upper / self.lower)
        return (value - self.lower) / (self.upper - self.lower)

    def from_u(self, u: float) -> float:
        if self.log:
            return self.lower * (self.upper / self.lower) ** u
        return self.lower + u * (self.upper - self.lower)


def _param(name: str, platform: Platform) -> _Param | str:
    """The bounded parameter, or the reason it cannot be fitted."""
    value = platform.fields[name]
    if name.endswith("_eff_frac"):
        lo, hi, log = *EFF_BOUNDS, False
    elif name == "kernel_overhead_s":
        lo, hi, log = *OVERHEAD_BOUNDS_S, False
    elif name == "static_power_w":
        lo, hi, log = 0.0, platform.fields["tdp_w"], False
    elif value <= 0:
        return "preset value is 0, so no [0.1x, 10x] range exists; kept at 0"
    else:
        lo, hi, log = value / ENERGY_SCALE, value * ENERGY_SCALE, True
    if not hi > lo:
        return f"empty range [{lo:g}, {hi:g}]"
    return _Param(name, value, lo, hi, log)


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of :func:`calibrate`.

    ``platform``: the calibrated :class:`~dse.spec.presets.Platform` (usable as ``platform=``
    in :func:`dse.evaluate`). ``params``: per candidate parameter ``preset``,
    ``value``, ``lower``, ``upper``, ``fitted`` and ``note``. ``residuals``: per row
    and metric ``measured``, ``predicted``, ``error_pct``, ``log_ratio``.
    """

    platform: Platform
    base: Platform
    params: pd.DataFrame
    residuals: pd.DataFrame
    warnings: tuple[str, ...]
    label: str

    @property
    def rms_error_pct(self) -> float:
        """Root mean square of the relative errors of the fitted rows, %."""
        err = self.residuals["error_pct"].to_numpy(float)
        return float(np.sqrt(np.mean(err**2))) if err.size else float("nan")

    def to_yaml(self, path: str | Path) -> Path:
        """Write the calibrated preset (the base preset's YAML with fitted keys replaced and sourced)."""
        fitted = {r.Index: r.value for r in self.params[self.params["fitted"]].itertuples()}
        n_rows = self.residuals["row"].nunique()
        note = (f"fitted by dse calibrate to {n_rows} rows of {self.label} on {_dt.date.today().isoformat()}, "
                f"residual RMS {self.rms_error_pct:.1f}%")
        raw = _base_mapping(self.base)
        sources = dict(raw.pop("sources", {}))
        out: dict = {"name": self.platform.name}
        for key, value in raw.items():
            si_key, factor = to_si(str(key))
            if si_key in fitted:
                out[key] = _round(fitted.pop(si_key) / factor)
                sources[key] = note
            elif key != "name":
                out[key] = value
        for si_key, value in fitted.items():  # fields the base file left at their default
            out[si_key] = _round(value)
            sources[si_key] = note
        out["description"] = f"{raw.get('description', self.base.name)} (calibrated: {note})"
        out["sources"] = sources
        text = yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=120)
        return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")


def _base_mapping(platform: Platform) -> dict:
    """The preset's YAML mapping; for an in-memory platform, its SI fields with copied sources."""
    if platform.path and Path(platform.path).is_file():
        raw = read_yaml(Path(platform.path))
        if isinstance(raw, dict):
            return dict(raw)
    fields = {k: _round(v) for k, v in platform.fields.items()}
    sources = {k: platform.sources.get(k, f"copied from in-memory platform {platform.name}") for k in fields}
    info = {"platform_class": platform.platform_class, "description": platform.description}
    if platform.mem_technology:
        info["mem_technology"] = platform.mem_technology
    if platform.process_nm is not None:
        info["process_nm"] = platform.process_nm
    return {**info, **fields, "sources": sources}


def _column(rows: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as floats; all NaN when absent."""
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(float) if name in rows else np.full(len(rows), np.nan)


def _targets(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per metric, the measured values used as fit targets (NaN where a row does not use it)."""
    decode, ttft, e2e = (_column(rows, m) for m in SPEED_METRICS)
    power, per_j = (_column(rows, m) for m in POWER_METRICS)
    out = {"decode_tokens_per_s": decode, "ttft_s": ttft,
           "tokens_per_s": np.where(np.isnan(decode), e2e, np.nan),
           "decode_power_w": power, "decode_tokens_per_j": np.where(np.isnan(power), per_j, np.nan)}
    return {m: np.where(v > 0, v, np.nan) for m, v in out.items() if np.any(v > 0)}


def _designs(rows: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in rows]
    if missing:
        raise SpecError("<measurements>", missing[0], "required column missing", list(rows.columns))
    designs = pd.DataFrame({"model": rows["model"].astype(str).str.strip()})
    for knob in KNOB_NAMES:
        if knob in rows:
            designs[knob] = pd.to_numeric(rows[knob], errors="coerce")
    for bits in ("w_bits", "a_bits", "kv_bits"):
        designs[bits] = designs[bits].fillna(16.0) if bits in designs else 16.0
    bad = designs.drop(columns="model").isna().any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        col = designs.columns[1:][designs.drop(columns="model").iloc[row].isna().to_numpy()][0]
        raise SpecError("<measurements>", f"row {rows.index[row]}.{col}", "design value missing", None)
    return designs.reset_index(drop=True)


def compare(platform: Platform, rows: pd.DataFrame) -> pd.DataFrame:
    """Per row and measured metric: measured, predicted, ``error_pct``, ``log_ratio`` (rows: measurement rows)."""
    rows = measurement_rows(rows)
    predicted = evaluate(_designs(rows), platform=platform)
    parts = []
    for metric in (m for m in (*SPEED_METRICS, *POWER_METRICS) if m in rows):
        measured = _column(rows, metric)
        has = measured > 0
        parts.append(pd.DataFrame({"row": rows.index[has], "model": rows["model"].to_numpy()[has],
                                   "batch": rows["batch"].to_numpy()[has], "metric": metric,
                                   "measured": measured[has], "predicted": predicted[metric].to_numpy()[has]}))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["row", "model", "batch", "metric", "measured", "predicted"])
    ratio = out["predicted"].astype(float) / out["measured"].astype(float)
    return out.assign(error_pct=100.0 * (ratio - 1.0), log_ratio=np.log(ratio))


def calibrate(platform: str | Path | Platform, measurements: pd.DataFrame, *, fit: Sequence[str] = DEFAULT_FIT,
              name: str | None = None, label: str = "measurements") -> CalibrationResult:
    """Fit ``fit`` hardware fields of ``platform`` to ``measurements`` (measurement rows).

    Every row is taken as a measurement of ``platform``. Bounds: efficiencies in
    [0.05, 1], ``kernel_overhead_s`` in [0, 1 ms], ``static_power_w`` in [0, TDP],
    energy per bit/FLOP in [0.1x, 10x] the preset. ``label`` names the data in the
    written preset's sources.

    >>> result = calibrate("h100-sxm", read_table("validation/measurements_h100.csv").head(4))  # doctest: +SKIP
    >>> dse.evaluate({"batch": 8}, model="llama-2-7b", platform=result.platform)  # doctest: +SKIP
    """
    base = load_platform(platform)
    unknown = [p for p in fit if p not in FITTABLE]
    if unknown:
        raise SpecError("--fit", unknown[0], f"not a fittable field{did_you_mean(unknown[0], FITTABLE)}", unknown[0])
    rows = measurement_rows(measurements)
    designs = _designs(rows)
    targets = _targets(rows)
    if not targets:
        raise SpecError("<measurements>", "<metrics>",
                        f"no measured metric to fit (one of {[*SPEED_METRICS, *POWER_METRICS, 'tpot_s']})",
                        list(rows.columns))
    has_power = any(m in targets for m in POWER_METRICS)
    notes: dict[str, str] = {}
    bounded: dict[str, _Param] = {}
    for pname in dict.fromkeys(fit):
        p = _param(pname, base)
        if isinstance(p, str):
            notes[pname] = p
        else:
            bounded[pname] = p
            if pname in POWER_PARAMS and not has_power:
                notes[pname] = "no measured power in the data; kept preset value"
    names, measured = list(targets), np.concatenate(list(targets.values()))
    used = ~np.isnan(measured)

    def residuals(u: np.ndarray, active: list[_Param]) -> np.ndarray:
        plat = base.with_fields(**{p.name: p.from_u(x) for p, x in zip(active, u, strict=True)})
        pred = evaluate(designs, platform=plat)
        return np.log(np.concatenate([pred[m].to_numpy(float) for m in names])[used] / measured[used])

    values = {name: p.preset for name, p in bounded.items()}
    warnings: list[str] = []
    active = [p for name, p in bounded.items() if name not in notes]
    while active:
        u0 = np.clip([p.to_u(min(max(p.preset, p.lower), p.upper)) for p in active], 1e-6, 1 - 1e-6)
        sol = least_squares(residuals, u0, bounds=(0.0, 1.0), args=(active,), x_scale="jac")
        dead = [p for p, s in zip(active, np.max(np.abs(sol.jac), axis=0), strict=True) if s < MIN_SENSITIVITY]
        if not dead:
            values.update({p.name: p.from_u(x) for p, x in zip(active, sol.x, strict=True)})
            warnings.extend(_collinearity(sol.jac, active))
            warnings.extend(f"{p.name}: fitted value {p.from_u(x):.4g} is at its bound; the model may lack an "
                            "effect the data shows" for p, x in zip(active, sol.x, strict=True) if _at_bound(p, x))
            break
        for p in dead:
            notes[p.name] = "the measurements do not constrain it; kept preset value"
        active = [p for p in active if p not in dead]
    warnings.extend(f"{pname}: {note}" for pname, note in notes.items())
    calibrated = base.with_fields(name=name or f"{base.name}-calibrated", **values)
    nan = float("nan")
    table = pd.DataFrame([{"param": n, "preset": base.fields[n], "value": values.get(n, base.fields[n]),
                           "lower": bounded[n].lower if n in bounded else nan,
                           "upper": bounded[n].upper if n in bounded else nan,
                           "fitted": n in values and n not in notes, "note": notes.get(n, "")}
                          for n in dict.fromkeys(fit)]).set_index("param")
    return CalibrationResult(calibrated, base, table, compare(calibrated, rows), tuple(warnings), label)


def _at_bound(p: _Param, u: float) -> bool:
    """At the upper bound, or at the lower one where that is implausible (zero overhead is plausible)."""
    return u > 1.0 - AT_BOUND_U or (u < AT_BOUND_U and p.name != "kernel_overhead_s")


def _collinearity(jac: np.ndarray, active: list[_Param]) -> list[str]:
    """A warning when the Jacobian is (nearly) rank-deficient: some parameters trade off against each other."""
    if len(active) < 2:
        return []
    names = [p.name for p in active]
    if jac.shape[0] >= len(active):
        _, s, vt = np.linalg.svd(jac, full_matrices=False)
        if s[-1] >= DEGENERATE_SV_RATIO * s[0]:
            return []
        names = [n for n, w in zip(names, vt[-1], strict=True) if abs(w) > 0.3] or names
    return [f"parameters {names} are not separately determined by the data; "
            "the fit picked one of several equally good combinations"]
