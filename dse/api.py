"""Public evaluation API: ``dse.evaluate`` (tables) and ``dse.Evaluator`` (raw arrays)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dse.model.pipeline import METRICS, evaluate_arrays
from dse.model.workload import KNOB_DEFAULTS, KNOB_NAMES
from dse.spec.cards import CARD_FIELD_NAMES
from dse.spec.errors import SpecError, did_you_mean
from dse.spec.hardware import HARDWARE_FIELD_NAMES
from dse.spec.presets import ModelCard, Platform, load_model, load_platform

CHUNK = 16_384  # designs per inner call: arrays stay in cache (measured best of 2k..128k)

# valid [low, high] of each knob
KNOB_RANGES: dict[str, tuple[float, float]] = {
    "batch": (1.0, 1e9),
    "in_len": (1.0, 1e9),
    "out_len": (1.0, 1e9),
    "w_bits": (1.0, 32.0),
    "a_bits": (1.0, 32.0),
    "kv_bits": (1.0, 32.0),
    "w_sparsity_frac": (0.0, 0.99),
    "nm_sparse": (0.0, 1.0),
    "pim_offload": (0.0, 2.0),
    "spec_len": (0.0, 16.0),
    "spec_accept_frac": (0.0, 0.99),
    "spec_draft_frac": (0.0, 1.0),
}
# hardware fields a design cannot run without (as for a preset, dse.spec.presets); the others must be >= 0
_POSITIVE: frozenset[str] = frozenset({"flop32_peak_flop_per_s", "mem_bw_bytes_per_s", "mem_capacity_bytes", "tdp_w",
                                       "compute_eff_frac", "mem_bw_eff_frac"})
INPUT_COLUMNS: tuple[str, ...] = ("model", "platform") + KNOB_NAMES + HARDWARE_FIELD_NAMES


def _as_list(x: Any) -> list:
    if x is None:
        return []
    if isinstance(x, (str, ModelCard, Platform)) or not isinstance(x, Iterable):
        return [x]
    return list(x)


class Evaluator:
    """The model with cards and presets resolved once, for repeated calls on numpy arrays.

    >>> ev = Evaluator(model="llama-2-7b", platform="h100-sxm")
    >>> out = ev({"batch": np.array([1.0, 8.0]), "w_bits": 16.0})
    >>> out["decode_tokens_per_s"].shape
    (2,)

    With several ``models``/``platforms``, the ``model``/``platform`` columns hold
    integer codes indexing them (``ev.model_names``, ``ev.platform_names``).
    """

    def __init__(self, model: str | ModelCard | Sequence | None = None,
                 platform: str | Platform | Sequence | None = None) -> None:
        self.models: list[ModelCard] = [load_model(x) for x in _as_list(model)]
        self.platforms: list[Platform] = [load_platform(x) for x in _as_list(platform)]
        self.model_names = [c.name for c in self.models]
        self.platform_names = [p.name for p in self.platforms]
        self._card_table = {f: np.array([c.fields[f] for c in self.models]) for f in CARD_FIELD_NAMES}
        self._hw_table = {f: np.array([p.fields[f] for p in self.platforms]) for f in HARDWARE_FIELD_NAMES}

    def _fields(self, table: dict[str, np.ndarray], names: list[str], codes: Any, what: str) -> dict:
        if not names:
            raise SpecError("", what, f"no {what} given (pass {what}= or a '{what}' column)", None)
        if len(names) == 1 and codes is None:
            return {f: float(v[0]) for f, v in table.items()}
        if codes is None:
            raise SpecError("", what, f"several {what}s given: a '{what}' column of codes is required", names)
        idx = np.asarray(codes)
        if not np.issubdtype(idx.dtype, np.integer):
            if not np.all(np.mod(idx, 1) == 0):
                raise SpecError("", what, "codes must be integers", idx)
            idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
            raise SpecError("", what, f"code out of range 0..{len(names) - 1}", int(idx.max()))
        return {f: v[idx] for f, v in table.items()}

    def __call__(self, columns: Mapping[str, Any], *, check: bool = True) -> dict[str, np.ndarray]:
        """Metric arrays for a batch given as column -> scalar or 1-D array (SI units)."""
        unknown = [c for c in columns if c not in INPUT_COLUMNS]
        if unknown:
            raise SpecError("", unknown[0], f"unknown design column{did_you_mean(unknown[0], INPUT_COLUMNS)}",
                            unknown[0])
        lengths = {np.size(v) for v in columns.values() if np.ndim(v) > 0}
        if len(lengths) > 1:
            raise SpecError("", "<columns>", "array columns must have equal lengths", sorted(lengths))
        n = lengths.pop() if lengths else 1
        cols = {c: (np.asarray(v, dtype=np.float64) if c not in ("model", "platform") else v)
                for c, v in columns.items()}
        if check:
            check_columns(cols)
            self._check_power(cols)
        out = {name: np.empty(n) for name in METRICS}
        for start in range(0, n, CHUNK):
            sl = slice(start, min(start + CHUNK, n))
            part = {c: (v[sl] if np.ndim(v) > 0 else v) for c, v in cols.items()}
            res = self._evaluate_chunk(part)
            for name in METRICS:
                out[name][sl] = res[name]
        return out

    def _check_power(self, cols: dict[str, Any]) -> None:
        """``tdp_w > static_power_w`` wherever a column overrides either (presets are checked on load)."""
        if "tdp_w" not in cols and "static_power_w" not in cols:
            return
        tdp = cols.get("tdp_w", self._hw_table["tdp_w"].min() if self.platforms else np.inf)
        static = cols.get("static_power_w", self._hw_table["static_power_w"].max() if self.platforms else 0.0)
        headroom = np.asarray(tdp) - np.asarray(static)
        if np.any(headroom <= 0):
            raise SpecError("", "tdp_w", "must exceed static_power_w", float(np.min(headroom)))

    def _evaluate_chunk(self, cols: dict[str, Any]) -> dict[str, np.ndarray]:
        m = self._fields(self._card_table, self.model_names, cols.get("model"), "model")
        hw = self._fields(self._hw_table, self.platform_names, cols.get("platform"), "platform")
        for f in HARDWARE_FIELD_NAMES:
            if f in cols:
                hw[f] = cols[f]
        k = {name: cols.get(name, default) for name, default in KNOB_DEFAULTS.items()}
        return evaluate_arrays(m, k, hw)


def check_columns(cols: Mapping[str, Any]) -> None:
    """Reject NaN/inf, negative hardware values and knobs outside their range (SpecError).

    Two reductions per column (min and max: NaN propagates into both); the offending
    value is looked up only when a column fails.
    """
    for name, values in cols.items():
        if name in ("model", "platform"):
            continue
        arr = np.asarray(values, dtype=np.float64)
        if not arr.size:
            continue
        low, high = float(arr.min()), float(arr.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise SpecError("", name, "must be finite", float(arr[~np.isfinite(arr)].flat[0]))
        if name in KNOB_RANGES:
            lo, hi = KNOB_RANGES[name]
            if low < lo or high > hi:
                raise SpecError("", name, f"must be in [{lo:g}, {hi:g}]", low if low < lo else high)
        elif name in _POSITIVE and low <= 0:
            raise SpecError("", name, "must be > 0", low)
        elif low < 0:
            raise SpecError("", name, "must be >= 0", low)
        if name.endswith("_frac") and high > 1:
            raise SpecError("", name, "must be <= 1", high)
        if name.endswith("_per_s") and np.any((arr > 0) & (arr < 1.0)):  # rates: 0 (absent) or >= 1 per second
            raise SpecError("", name, "a rate must be 0 or >= 1 per second", float(arr[(arr > 0) & (arr < 1)][0]))


def evaluate(designs: pd.DataFrame | Mapping[str, Any] | None = None, *,
             model: str | ModelCard | None = None, platform: str | Platform | None = None,
             **columns: Any) -> pd.DataFrame:
    """Evaluate designs: a table of knobs (and optional hardware overrides) in, metrics out.

    ``designs`` is a DataFrame or a mapping of column -> scalar or array (scalars
    broadcast); keyword columns are added to it. ``model``/``platform`` set one card
    and preset for every row, or the ``model``/``platform`` columns name them per row.
    Hardware field columns (``mem_bw_bytes_per_s``, ...) override the preset's value.
    Returns the input columns followed by the metric columns of DESIGN.md 3.2.

    >>> df = evaluate({"batch": [1, 8]}, model="llama-2-7b", platform="a100-sxm-80gb")
    >>> list(df.columns[-2:])
    ['memory_bytes', 'g_memory_bytes']
    """
    frame = pd.DataFrame(_broadcast({**dict(designs if designs is not None else {}), **columns}))
    raw: dict[str, Any] = {c: frame[c].to_numpy() for c in frame.columns}
    ev_models: list = [model] if model is not None else []
    ev_platforms: list = [platform] if platform is not None else []
    for col, given, store in (("model", model, ev_models), ("platform", platform, ev_platforms)):
        if col in raw:
            if given is not None:
                raise SpecError("", col, f"given both as a column and as {col}=", given)
            names, codes = np.unique(raw[col].astype(str), return_inverse=True)
            store.extend(names.tolist())
            raw[col] = codes.astype(np.int64)
    ev = Evaluator(ev_models or None, ev_platforms or None)
    if "model" in raw and len(ev.models) == 1:
        raw.pop("model")
    if "platform" in raw and len(ev.platforms) == 1:
        raw.pop("platform")
    metrics = ev(raw)
    out = frame.copy()
    for name in METRICS:
        out[name] = metrics[name]
    return out


def _broadcast(columns: Mapping[str, Any]) -> dict[str, Any]:
    """Columns with scalars repeated to the common length (at least one row)."""
    lengths = {len(v) for v in columns.values() if np.ndim(v) > 0 and not isinstance(v, str)}
    if len(lengths) > 1:
        raise SpecError("", "<columns>", "array columns must have equal lengths", sorted(lengths))
    n = lengths.pop() if lengths else 1
    return {c: (v if np.ndim(v) > 0 and not isinstance(v, str) else [v] * n) for c, v in columns.items()}
