"""Public evaluation API: ``dse.evaluate`` (tables) and ``dse.Evaluator`` (raw arrays).

This is the one seam between tables (pandas) and the model (numpy). The evaluator
resolves cards and presets once and evaluates column arrays in cache-sized chunks; the
table front-end adds name handling (``model``/``platform`` columns as categoricals) and
builds the output frame in one step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dse.model import jit, silicon
from dse.model.cost import COST_SETTINGS
from dse.model.pipeline import evaluate_arrays
from dse.model_data import model_data, quality_family
from dse.runtime import tune_malloc
from dse.spec.errors import SpecError, did_you_mean
from dse.spec.metrics import METRICS
from dse.spec.presets import ModelCard, Platform, load_model, load_platform
from dse.spec.registry import (
    CARD_FIELD_NAMES,
    HARDWARE_FIELD_NAMES,
    INPUT_COLUMNS,
    INPUT_FIELDS,
    KNOB_BY_NAME,
    KNOB_DEFAULTS,
    Field,
)

CHUNK = 16_384  # designs per inner call: arrays stay in cache (measured best of 2k..128k)
NAME_COLUMNS: tuple[str, str] = ("model", "platform")
Columns = Mapping[str, Any]


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
    integer codes indexing them (``ev.model_names``, ``ev.platform_names``). The serving
    stage (continuous batching, ~1.5-2 us per design) runs when ``serving`` is true, or, by
    default, when the batch has a ``workload`` column; its metrics are absent otherwise.
    """

    def __init__(self, model: str | ModelCard | Sequence[str | ModelCard] | None = None,
                 platform: str | Platform | Sequence[str | Platform] | None = None, *,
                 serving: bool | None = None) -> None:
        self.models: list[ModelCard] = [load_model(x) for x in _as_list(model)]
        self.platforms: list[Platform] = [load_platform(x) for x in _as_list(platform)]
        self.serving = serving
        tune_malloc(inherit=False)  # freed chunk arrays stay in the heap: 2.4x on a 16k-design call
        self.model_names = [c.name for c in self.models]
        self.platform_names = [p.name for p in self.platforms]
        self._data = model_data()
        self._card_table = {f: np.array([c.fields[f] for c in self.models]) for f in CARD_FIELD_NAMES}
        self._card_table["quality_family"] = np.array([quality_family(c.name) for c in self.models])
        self._hw_table = {f: np.array([p.fields[f] for p in self.platforms]) for f in HARDWARE_FIELD_NAMES}
        # each preset's provisioned static power: the anchor of its designs' static power (dse.model.silicon)
        # and the on-chip energy rule at each preset: the anchor of its designs' on-chip energy
        refs = [_preset_refs(p, self._data) for p in self.platforms]
        self._hw_table["static_ref_w"] = np.array([r[0] for r in refs])
        self._hw_table["onchip_ref_pj_per_bit"] = np.array([r[1] for r in refs])
        self._scalar_fields: dict[int, dict[str, float]] = {}  # by id of a table above: _fields' numbers

    def _fields(self, table: dict[str, np.ndarray], names: list[str], codes: Any, what: str) -> dict:
        if not names:
            raise SpecError("", what, f"no {what} given (pass {what}= or a '{what}' column)", None)
        if len(names) == 1 and codes is None:  # one model or platform: its fields as numbers, built once
            key = id(table)
            if key not in self._scalar_fields:
                self._scalar_fields[key] = {f: float(v[0]) for f, v in table.items()}
            return dict(self._scalar_fields[key])
        if codes is None:
            raise SpecError("", what, f"several {what}s given: a '{what}' column of codes is required", names)
        idx = np.asarray(codes)
        if not np.issubdtype(idx.dtype, np.integer):
            if not np.all(np.mod(idx, 1) == 0):
                raise SpecError("", what, "codes must be integers", idx)
            idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(names)):
            raise SpecError("", what, f"code out of range 0..{len(names) - 1}", int(idx.max()))
        if idx.ndim == 0:
            return {f: float(v[int(idx)]) for f, v in table.items()}
        return {f: v[idx] for f, v in table.items()}

    def __call__(self, columns: Columns, *, check: bool = True) -> dict[str, np.ndarray]:
        """Metric arrays for a batch given as column -> scalar or 1-D array (SI units).

        ``check`` validates every column against the registry's ranges first
        (:func:`check_columns`); pass False only for columns already checked.
        """
        cols = _numeric_columns(columns)
        n = _length(cols)
        if n <= CHUNK:
            if check:
                check_columns(cols)
                self._check_power(cols)
            res = self._evaluate_chunk(cols)
            return {name: np.broadcast_to(res[name], (n,)) if np.ndim(res[name]) == 0 else res[name]
                    for name in METRICS if name in res}
        try:
            return self._evaluate_chunks(cols, n, check)
        except Exception as error:  # re-raised below, after the whole-column check
            failure = error
        if check:  # the whole columns' error first: the one a check before any chunk gives
            check_columns(cols)
            self._check_power(cols)
        raise failure

    def _evaluate_chunks(self, cols: dict[str, Any], n: int, check: bool) -> dict[str, np.ndarray]:
        """A batch of more than CHUNK designs, chunk by chunk; with ``check`` the array columns are
        checked chunk by chunk (while in cache), the batch-wide ones once."""
        arrays = [c for c, v in cols.items() if np.ndim(v) > 0]
        if check:
            check_columns({c: v for c, v in cols.items() if c not in arrays})
        out: dict[str, np.ndarray] = {}
        for start in range(0, n, CHUNK):
            sl = slice(start, min(start + CHUNK, n))
            chunk = {**cols, **{c: cols[c][sl] for c in arrays}}
            if check:
                check_columns({c: chunk[c] for c in arrays})
                self._check_power(chunk)
            res = self._evaluate_chunk(chunk)
            if not out:  # the first chunk names the metrics: one output array each, filled chunk by chunk
                out = {name: np.empty(n) for name in METRICS if name in res}
            for name, arr in out.items():
                arr[sl] = res[name]
            del res  # freed before the next chunk, whose arrays reuse its buffers (smaller working set)
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
        k.update((name, cols[name]) for name in COST_SETTINGS if name in cols)
        serving = self.serving if self.serving is not None else "workload" in cols
        return evaluate_arrays(m, k, hw, {**self._data, "serving": serving})


_PRESET_REFS: dict[int, tuple[Platform, float, float]] = {}  # id -> (preset kept alive, static W, on-chip pJ/bit)


def _preset_refs(platform: Platform, data: dict) -> tuple[float, float]:
    """A preset's provisioned static power and on-chip rule value (the anchors of its designs),
    computed once per loaded preset object (presets are immutable and cached by the loader)."""
    hit = _PRESET_REFS.get(id(platform))
    if hit is not None and hit[0] is platform:
        return hit[1], hit[2]
    provisioned = silicon.provision(dict(platform.fields), data["tech"])
    refs = (float(provisioned["provisioned_static_w"]),
            float(silicon.onchip_rule_pj_per_bit(dict(platform.fields), data["onchip"], provisioned["area"])))
    if len(_PRESET_REFS) > 1024:
        _PRESET_REFS.clear()
    _PRESET_REFS[id(platform)] = (platform, *refs)
    return refs


def _numeric_columns(columns: Columns) -> dict[str, Any]:
    """Columns as float arrays (codes for ``model``/``platform``); unknown or malformed ones rejected."""
    if not isinstance(columns, Mapping):
        raise SpecError("", "<designs>", "must be a DataFrame or a mapping of column -> values",
                        type(columns).__name__)
    out: dict[str, Any] = {}
    for name, values in columns.items():
        if name not in INPUT_COLUMNS:
            raise SpecError("", str(name), f"unknown design column{did_you_mean(str(name), INPUT_COLUMNS)}", name)
        if name in NAME_COLUMNS:
            out[name] = values
            continue
        field = INPUT_FIELDS[name]
        if field.choices and _has_text(values):
            values = _codes_of(name, field, values)
        bad = _first_non_number(values, allow_bool=field.kind == "flag")
        if bad is not _NUMBERS_ONLY:
            raise SpecError("", name, "must be numbers", bad)
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise SpecError("", name, "must be numbers", _first(values)) from None
        if arr.ndim > 1:
            raise SpecError("", name, "must be a scalar or a 1-D array", f"shape {arr.shape}")
        out[name] = arr if arr.ndim else float(arr)
    return out


def _has_text(values: Any) -> bool:
    return isinstance(values, str) or np.asarray(values).dtype.kind in "OUS"


def _codes_of(name: str, field: Field, values: Any) -> np.ndarray | float:
    """Codes of a categorical field given by choice names (codes may be mixed in)."""
    arr = np.asarray(values, dtype=object)
    names, inverse = np.unique(arr.astype(str), return_inverse=True)
    codes = []
    for text in names:
        code = field.code_of(text)
        if code is None:
            try:
                code = float(text)
            except ValueError:
                raise SpecError("", name, f"must be one of {list(field.choices)}{did_you_mean(text, field.choices)}",
                                text) from None
        codes.append(code)
    out = np.asarray(codes, dtype=np.float64)[inverse.reshape(arr.shape)]
    return float(out) if out.ndim == 0 else out


_NUMBERS_ONLY = object()


def _first_non_number(values: Any, *, allow_bool: bool) -> Any:
    """The first value that is not a real number (a bool counts only for flags), else ``_NUMBERS_ONLY``.

    Numeric arrays pass at once; only object arrays and Python sequences are scanned."""
    arr = values if isinstance(values, np.ndarray) else None
    if arr is not None and arr.dtype.kind in "biuf":
        return values if arr.dtype.kind == "b" and not allow_bool and arr.size else _NUMBERS_ONLY
    items = [values] if np.ndim(values) == 0 or isinstance(values, str) else list(np.ravel(np.asarray(values,
                                                                                                   dtype=object)))
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            if not allow_bool:
                return item
        elif not isinstance(item, (int, float, np.integer, np.floating)):
            return item
    return _NUMBERS_ONLY


def _first(values: Any) -> Any:
    try:
        return next(iter(values)) if not isinstance(values, str) else values
    except TypeError:
        return values


def _length(cols: Mapping[str, Any]) -> int:
    lengths = {len(v) for v in cols.values() if np.ndim(v) > 0}
    if len(lengths) > 1:
        raise SpecError("", "<columns>", "array columns must have equal lengths", sorted(lengths))
    return lengths.pop() if lengths else 1


def check_columns(cols: Mapping[str, Any]) -> None:
    """Reject NaN/inf, values outside the registry's range for their column and fractions in
    whole-number columns (``int``, ``code`` and ``flag`` kinds: a 1.5-stage pipeline or a
    half-set flag has no meaning) with a SpecError.

    Two reductions per column (min and max: NaN propagates into both) and one rounding pass
    per whole-number column; the offending value is looked up only when a column fails.
    Rates must be 0 (absent) or at least one per second.
    """
    for name, values in cols.items():
        if name in NAME_COLUMNS:
            continue
        arr = np.asarray(values, dtype=np.float64)
        if not arr.size:
            continue
        low, high = float(arr.min()), float(arr.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise SpecError("", name, "must be finite", float(arr[~np.isfinite(arr)].flat[0]))
        field = INPUT_FIELDS[name]
        rule = range_violation(field, low, high)
        if rule:
            raise SpecError("", name, rule, low if low <= field.low else high)
        if field.kind != "float" and (_fractional_count(arr.reshape(-1)) if arr.ndim else arr != np.rint(arr)):
            raise SpecError("", name, "must be a whole number", float(arr[arr != np.rint(arr)].flat[0]))
        if name in _RATE_COLUMNS and low < 1.0 and ((arr > 0) & (arr < 1.0)).any():
            raise SpecError("", name, "a rate must be 0 or >= 1 per second", float(arr[(arr > 0) & (arr < 1)][0]))


@jit.kernel
def _fractional_count(values):  # noqa: ANN001, ANN202
    """How many of the finite ``values`` are not whole numbers (one vectorised pass; numpy's
    ``values != rint(values)`` takes three)."""
    count = 0
    for i in range(values.shape[0]):
        count += values[i] != math.floor(values[i])
    return count


_RATE_COLUMNS = frozenset(name for name in HARDWARE_FIELD_NAMES if name.endswith("_per_s"))


def range_violation(f: Field, low: float, high: float) -> str:
    """The rule that values spanning ``low..high`` break for field ``f``, or ``""``."""
    if f.name in KNOB_BY_NAME:
        return f"must be in [{f.low:g}, {f.high:g}]" if low < f.low or high > f.high else ""
    if f.positive and low <= f.low:
        return f"must be > {f.low:g}"
    if low < f.low:
        return f"must be >= {f.low:g}"
    if high > f.high:
        return f"must be <= {f.high:g} (beyond any real device)"
    return ""


def _names(values: Any, given: str | ModelCard | Platform | None, what: str) -> tuple[list, Any, Any]:
    """(names for the evaluator, codes for it or None, the column for the output table)."""
    if values is None:
        return ([given] if given is not None else []), None, None
    if given is not None:
        raise SpecError("", what, f"given both as a column and as {what}=", given)
    if isinstance(values, (str, ModelCard, Platform)) or np.ndim(values) == 0:
        name = values.name if isinstance(values, (ModelCard, Platform)) else values
        return [values], None, str(name)
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical):
        cats = [str(c) for c in values.categories]
        return cats, values.codes.astype(np.int64), values
    codes, names = factorize_names(np.asarray(values))
    return names, codes, pd.Categorical.from_codes(codes, names)


def factorize_names(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(int64 codes, distinct names in first-seen order) of a 1-D array of names.

    A fixed-width unicode array is hashed column by column over its code points (no
    Python string per row), factorized on the hashes and verified against the names;
    anything else (or a hash collision) goes through :func:`pandas.factorize`.
    """
    if values.dtype.kind == "U" and values.ndim == 1 and values.size:
        points = values.view(np.uint32).reshape(values.size, -1)
        h = np.zeros(values.size, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(points.shape[1]):
                h = h * np.uint64(1_000_003) + points[:, j]
        codes, hashes = pd.factorize(h)
        first = np.empty(len(hashes), dtype=np.int64)
        first[codes[::-1]] = np.arange(values.size - 1, -1, -1)  # repeated indices: the last write (first row) wins
        names = values[first]
        if np.array_equal(names[codes], values):
            return codes.astype(np.int64), [str(x) for x in names]
    codes, uniques = pd.factorize(np.asarray(values, dtype=object).astype(str))
    return codes.astype(np.int64), [str(x) for x in uniques]


def evaluate(designs: pd.DataFrame | Columns | None = None, *, model: str | ModelCard | None = None,
             platform: str | Platform | None = None, **columns: Any) -> pd.DataFrame:
    """Evaluate designs: a table of knobs (and optional hardware overrides) in, metrics out.

    ``designs`` is a DataFrame or a mapping of column -> scalar or array (scalars
    broadcast, arrays paired row by row); keyword columns are added to it.
    ``model``/``platform`` set one card and preset for every row, or ``model``/``platform``
    columns name them per row (returned as categoricals). Hardware-field columns
    (``mem_bw_bytes_per_s``, ...) override the preset's value. Returns the input columns
    followed by the metric columns of DESIGN.md 3.2. Bad input raises :class:`SpecError`
    naming the column.

    >>> df = evaluate({"batch": [1, 8]}, model="llama-2-7b", platform="a100-sxm-80gb")
    >>> list(df.columns[:3])
    ['batch', 'ttft_s', 'tpot_s']
    >>> int(df["batch"].iloc[1])
    8
    """
    if designs is not None and not isinstance(designs, (pd.DataFrame, Mapping)):
        raise SpecError("", "<designs>", "must be a DataFrame or a mapping of column -> values",
                        type(designs).__name__)
    given: dict[str, Any] = dict(designs.items()) if designs is not None else {}
    given.update(columns)
    raw: dict[str, Any] = {c: (v.to_numpy() if isinstance(v, pd.Series) and c not in NAME_COLUMNS else v)
                           for c, v in given.items()}
    models, model_codes, model_col = _names(raw.pop("model", None), model, "model")
    platforms, platform_codes, platform_col = _names(raw.pop("platform", None), platform, "platform")
    ev = Evaluator(models or None, platforms or None)
    cols = _numeric_columns(raw)
    if model_codes is not None and len(ev.models) > 1:
        cols["model"] = model_codes
    if platform_codes is not None and len(ev.platforms) > 1:
        cols["platform"] = platform_codes
    metrics = ev(cols)
    n = _length({**cols, "_": next(iter(metrics.values()))})
    out: dict[str, Any] = {}
    for name, value in given.items():
        if name == "model" and model_col is not None:
            value = model_col
        elif name == "platform" and platform_col is not None:
            value = platform_col
        elif isinstance(value, pd.Series):
            value = value.to_numpy()
        out[name] = np.full(n, value, dtype=object if isinstance(value, str) else None) if np.ndim(value) == 0 \
            else value
    out.update(metrics)
    index = designs.index if isinstance(designs, pd.DataFrame) and len(designs) == n else pd.RangeIndex(n)
    return _frame(out, index)


def _frame(columns: dict[str, Any], index: pd.Index) -> pd.DataFrame:
    """A DataFrame of ``columns``; all-float columns become one block without per-column work."""
    if all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in columns.values()):
        block = np.vstack(list(columns.values())).T  # (n, c) view of a (c, n) block: no second copy
        return pd.DataFrame(block, columns=pd.Index(list(columns)), index=index, copy=False)
    return pd.DataFrame(columns, index=index, copy=False)

