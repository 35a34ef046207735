"""Study results as tables: trials and front DataFrames, written to the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dse._version import __version__
from dse.loading import space_evaluator
from dse.results.io import write_parquet
from dse.results.pareto import pareto_mask
from dse.spec.metrics import METRIC_UNITS, METRICS, MODEL_CONSTRAINTS
from dse.spec.registry import INPUT_FIELDS
from dse.spec.study import Constraint, Study

_EXACT_INT = 2**53  # floats hold every integer below this exactly


def violations(metrics: dict[str, np.ndarray], constraints: list[Constraint]) -> dict[str, np.ndarray]:
    """Constraint columns, ``<= 0`` feasible: the model's own (memory fit always, links, reticle,
    shoreline, serving where computed: :data:`dse.spec.metrics.MODEL_CONSTRAINTS`), then the study's bounds."""
    out = {f"c_{name}" if not name.startswith("c_") else name: metrics[name]
           for name in MODEL_CONSTRAINTS if name in metrics}
    for con in constraints:
        if con.max is not None:
            out[f"c_{con.metric}_max"] = metrics[con.metric] - con.max
        if con.min is not None:
            out[f"c_{con.metric}_min"] = con.min - metrics[con.metric]
    return out


def design_table(study: Study, params: dict[str, np.ndarray], trial_numbers: np.ndarray | None = None
                 ) -> pd.DataFrame:
    """Evaluate knob values and return knobs, design columns, metrics, constraints, feasibility."""
    space = study.space
    columns = space.columns(params, strict=False)  # a non-finite derived value: flagged by the evaluator
    n = len(next(iter(params.values()))) if params else 0
    metrics = space_evaluator(space)({k: np.broadcast_to(v, (n,)) if np.ndim(v) else v for k, v in columns.items()})
    cons = violations(metrics, study.constraints)
    data: dict[str, Any] = {}
    if trial_numbers is not None:
        data["trial"] = trial_numbers
    decoded = space.decode({**params, **columns})  # effective values (after `when`) win
    for name in list(params) + [c for c in columns if c not in params]:
        value = decoded.get(name, columns.get(name))
        data[name] = value if np.ndim(value) else np.full(n, value)
    for name in METRICS:
        if name in metrics:
            data[name] = metrics[name]
    data.update(cons)
    data["feasible"] = np.all(np.stack(list(cons.values())) <= 0, axis=0) if n else np.zeros(0, bool)
    return pd.DataFrame(data)


def front_of(df: pd.DataFrame, objectives: list[tuple[str, bool]], knobs: list[str] | None = None
             ) -> pd.DataFrame:
    """The feasible non-dominated rows of ``df``, sorted by the first objective (best first).

    One row per distinct design of ``knobs``, and one per point: of designs with identical
    objective values (a knob without effect, say), the first row is kept."""
    feasible = df[df["feasible"]]
    if knobs:
        feasible = feasible.drop_duplicates(subset=knobs)
    if feasible.empty:
        return feasible.copy()
    values = feasible[[m for m, _ in objectives]].to_numpy(dtype=float)
    front = feasible[pareto_mask(values, [up for _, up in objectives])]
    front = front.drop_duplicates(subset=[m for m, _ in objectives])
    first, up = objectives[0]
    return front.sort_values(first, ascending=not up, kind="stable").reset_index(drop=True)


def units_for(df: pd.DataFrame) -> dict[str, str]:
    """Unit of every column: the registry's for knobs and hardware fields, the metric table's for
    metrics and their constraint columns, else from the name's unit suffix (DESIGN.md 3.3)."""
    units = {**{name: f.unit for name, f in INPUT_FIELDS.items()}, **METRIC_UNITS}
    suffixes = {"_bytes_per_s": "B/s", "_flop_per_s": "FLOP/s", "_pj_per_bit": "pJ/bit", "_pj_per_flop": "pJ/FLOP",
                "_bytes": "B", "_bits": "bit", "_s": "s", "_w": "W", "_hz": "Hz", "_frac": "1", "_j": "J"}
    for col in df.columns:
        if col in units:
            continue
        base = col[2:] if col.startswith("c_") else col
        base = base.removesuffix("_max").removesuffix("_min")
        if base in METRIC_UNITS:
            units[col] = METRIC_UNITS[base]
            continue
        for suffix, unit in suffixes.items():
            if col.endswith(suffix):
                units[col] = unit
                break
    return {c: u for c, u in units.items() if c in df.columns}


def integer_columns(study: Study) -> set[str]:
    """Columns whose values are whole numbers: the space's ``int`` knobs and the registry's
    non-float inputs (``int``, ``code`` and ``flag`` kinds)."""
    return {k.name for k in study.space.knobs if k.kind == "int"} | {
        name for name, f in INPUT_FIELDS.items() if f.kind != "float"}


def file_table(study: Study, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as the result files store it: whole-number knobs as integers (not ``64.0``), a
    ``platform`` and a ``model`` column even where the space fixes them, and ``fits``
    (the design fits in memory). Idempotent (a merge writes tables read back from files)."""
    out = df.copy()
    for col in integer_columns(study) & set(out.columns):
        values = out[col].to_numpy()
        if values.dtype.kind == "f" and len(values) and np.all(np.isfinite(values)) \
                and np.all(values == np.round(values)) and np.abs(values).max() < _EXACT_INT:
            out[col] = values.astype(np.int64)
    space = study.space
    at = next((i + 1 for i, c in enumerate(out.columns) if c in ("trial", "design_index")), 0)
    for name, values in (("model", space.models), ("platform", space.platforms)):
        if name not in out and len(values) == 1:
            out.insert(at, name, pd.Categorical([values[0]] * len(out), categories=list(values)))
    if "g_memory_bytes" in out and "fits" not in out:
        out.insert(out.columns.get_loc("g_memory_bytes") + 1, "fits", out["g_memory_bytes"].to_numpy() <= 0)
    return out


def write_results(study: Study, trials: pd.DataFrame, front: pd.DataFrame, extra_meta: dict | None = None
                  ) -> dict[str, Path]:
    """Write ``trials.parquet`` and ``front.parquet`` (atomically, as :func:`file_table`) plus
    ``front.png`` (coloured by the platform, memory technology or model where the study varies
    it: :func:`dse.results.plot.default_color_by`, recorded as ``color_by`` in the metadata)."""
    from dse.results.plot import default_color_by, plot_front

    trials, front = file_table(study, trials), file_table(study, front)
    color_by = default_color_by(trials)
    meta = {"spec": study.raw, "spec_hash": study.spec_hash, "version": __version__, "seed": study.seed,
            "objectives": [[m, up] for m, up in study.objectives], "study": study.name, "color_by": color_by,
            **(extra_meta or {})}
    out, units = study.output, units_for(trials)
    paths = {
        "trials": write_parquet(trials, out / "trials.parquet", units=units, metadata=meta),
        "front": write_parquet(front, out / "front.parquet", units=units_for(front), metadata=meta),
    }
    paths["plot"] = plot_front(trials, front, study.objectives, out / "front.png", title=study.name,
                               color_by=color_by, units=units)
    return paths
