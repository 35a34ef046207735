"""What ``dse report`` shows, read from a study's output folder: no HTML here.

:func:`load_report` reads a result folder into a :class:`ReportData` (the only I/O); the other
functions are pure and return the numbers and tables the page shows (:mod:`dse.results.report`
renders them): counts, the columns that describe a design, the top designs per objective and,
per constraint, the share of designs violating it and whether it binds on the front.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from dse.results.io import read_front, read_metadata, read_table, read_units
from dse.results.pareto import pareto_mask
from dse.spec.errors import DseError, SpecError
from dse.spec.metrics import METRIC_BY_NAME, METRICS
from dse.spec.study import Study, load_study

INDEX_COLUMNS = ("design_index", "trial")
_NOT_DESIGN = {"feasible", "fits", *INDEX_COLUMNS}
_JOURNAL_PEEK = 1 << 16  # bytes read at each end of optuna.journal for the first and last trial times


@dataclass
class ReportData:
    """What a report shows: a result folder's tables and metadata, and its study as it loads today."""

    folder: Path
    front: pd.DataFrame
    trials: pd.DataFrame | None  # None: no trials.parquet
    meta: dict[str, Any]  # the dse.* schema metadata of front.parquet
    units: dict[str, str] = field(default_factory=dict)  # column -> unit (Arrow field metadata)
    study: Study | None = None  # the spec resolved now; None where it no longer loads
    notes: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    trial_times: tuple[str, str] | None = None  # first trial start, last trial end (optuna.journal)
    written_at: str = ""  # front.parquet's modification time (UTC)

    @property
    def observed(self) -> pd.DataFrame:
        """The designs the space, design columns and top tables are read from: trials.parquet, else the front."""
        return self.trials if self.trials is not None else self.front


class Counts(NamedTuple):
    evaluated: int
    feasible: int | None  # None: unknown
    invalid: int | None  # designs with an input out of range; None: unknown
    sample: bool  # trials.parquet holds a sample of the evaluated designs


# ---- reading ------------------------------------------------------------------------------------

def _folder_of(source: str | Path) -> tuple[Path, Study | None]:
    """The result folder ``source`` names: a folder, a file in one, or a study spec (its output)."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        return path, None
    if path.is_file() and path.suffix == ".parquet":
        return path.parent, None
    if not path.exists() and (path.suffix not in ("", ".yaml", ".yml") or "/" in text):
        raise SpecError(text, "", "no such results folder or study file", text)
    study = load_study(text)
    if not study.output.is_dir():
        raise SpecError(study.file, "output", f"no results yet: run `dse run {text}` first", str(study.output))
    return study.output, study


def trial_times(journal: Path) -> tuple[str, str] | None:
    """First ``datetime_start`` and last ``datetime_complete`` of an Optuna journal, from its two ends."""
    try:
        size = journal.stat().st_size
        with journal.open("rb") as fh:
            head = fh.read(_JOURNAL_PEEK).decode(errors="replace")
            fh.seek(max(0, size - _JOURNAL_PEEK))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None

    def stamps(text: str, key: str) -> list[str]:
        found = []
        for line in text.splitlines():
            try:
                value = json.loads(line).get(key)
            except (ValueError, AttributeError):
                continue  # a line cut by the peek window
            if isinstance(value, str):
                found.append(value)
        return found

    starts, ends = stamps(head, "datetime_start"), stamps(tail, "datetime_complete")
    return (min(starts), max(ends)) if starts and ends else None


def load_report(source: str | Path) -> ReportData:
    """Read a result folder (``dse run``/``sweep``/``merge`` output), a file in it or a study spec whose
    output folder holds results. A SpecError (one line) for anything that is not a study's output."""
    folder, study = _folder_of(source)
    front_path = folder / "front.parquet"
    if not front_path.is_file():
        rule = "no results yet (the run was stopped before its first batch finished): run it again to resume" \
            if (folder / "optuna.journal").is_file() else "not a study output folder (no front.parquet)"
        if Path(source).is_file() and study is None:
            rule = "not in a study output folder (no front.parquet beside it)"
        raise SpecError(str(source), "", rule, str(source))
    front = read_front(folder)
    meta = read_metadata(front_path)
    if not meta.get("objectives"):
        raise SpecError(str(front_path), "", "not a study output (no dse.objectives in its metadata)", str(front_path))
    trials_path = folder / "trials.parquet"
    trials = read_table(trials_path) if trials_path.is_file() else None
    names = [str(m) for m, _ in meta["objectives"]]
    for path, table, needed in ((front_path, front, names), (trials_path, trials, [*names, "feasible"])):
        missing = [c for c in needed if table is not None and c not in table]
        if missing:
            raise SpecError(str(path), "", "not a study output (columns missing)", missing)
    units = {**(read_units(trials_path) if trials is not None else {}), **read_units(front_path)}
    data = ReportData(folder, front, trials, meta, units)
    if trials is None:
        data.notes.append("no trials.parquet: the counts and constraint shares come from the metadata only")
    data.files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()
                  and not p.name.startswith(".")}
    stamp = dt.datetime.fromtimestamp(front_path.stat().st_mtime, tz=dt.timezone.utc)
    data.written_at = stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
    if (folder / "optuna.journal").is_file():
        data.trial_times = trial_times(folder / "optuna.journal")
    if study is None and isinstance(meta.get("spec"), dict):
        try:
            study = load_study(meta["spec"], file=str(front_path), output=folder)
        except (DseError, OSError) as exc:
            data.notes.append(f"the stored spec no longer loads ({exc}); the space is shown as observed")
    if study is not None and meta.get("spec_hash") and study.spec_hash != meta["spec_hash"]:
        data.notes.append(f"the spec or the files it names changed since the run (spec hash now {study.spec_hash}, "
                          f"results {meta['spec_hash']}): declared ranges are today's")
    data.study = study
    return data


# ---- what the page shows ------------------------------------------------------------------------

def objectives(data: ReportData) -> list[tuple[str, bool]]:
    """``(metric, maximise)`` per objective, from the metadata."""
    return [(str(m), bool(up)) for m, up in data.meta["objectives"]]


def design_columns(data: ReportData) -> list[str]:
    """Columns that describe a design and vary between the evaluated designs (knobs first)."""
    table = data.observed
    cols = [c for c in table.columns if c not in METRICS and not c.startswith("c_") and c not in _NOT_DESIGN]
    if data.study is not None:
        knobs = [k.name for k in data.study.space.knobs if k.name in cols]
        cols = knobs + [c for c in cols if c not in knobs]
    return [c for c in cols if table[c].nunique(dropna=False) > 1]


def constraint_columns(data: ReportData) -> list[str]:
    return [c for c in data.observed.columns if c.startswith("c_")]


def counts(data: ReportData) -> Counts:
    """Designs evaluated, feasible, invalid and whether trials.parquet is a sample."""
    meta, trials = data.meta, data.trials
    n_rows = len(trials) if trials is not None else 0
    evaluated = int(meta.get("n_evaluated") or n_rows)
    feasible = meta.get("n_feasible")
    if feasible is None and trials is not None:
        feasible = int(trials["feasible"].sum())
    sample = evaluated > n_rows
    invalid = None
    if trials is not None and "c_invalid_input" in trials and not sample:
        invalid = int((trials["c_invalid_input"] > 0).sum())
    return Counts(evaluated, feasible, invalid, sample)


def describe_constraint(col: str, spec: dict) -> str:
    """The rule behind a constraint column (the inverse of :func:`dse.results.tables.violations`' naming)."""
    for con in spec.get("constraints") or []:
        if not isinstance(con, dict):
            continue
        metric = con.get("metric")
        if col == f"c_{metric}_max":
            return f"{metric} ≤ {con.get('max')}"
        if col == f"c_{metric}_min":
            return f"{metric} ≥ {con.get('min')}"
    if col == "c_invalid_input":
        return "model: every input in its valid range and finite"
    metric = METRIC_BY_NAME.get(col) or METRIC_BY_NAME.get(col[2:])
    return f"model: {metric.doc.replace(' (a constraint)', '')}" if metric else col


def front_columns(data: ReportData) -> list[str]:
    """The front table's columns: index, objectives, design columns, the other metrics."""
    names = [m for m, _ in objectives(data)]
    index = [c for c in INDEX_COLUMNS if c in data.front]
    design = [c for c in design_columns(data) if c in data.front]
    metrics = [c for c in data.front.columns if c in METRICS and c not in names and not c.startswith("c_")]
    return index + names + design + metrics


def top_designs(data: ReportData, top: int) -> list[tuple[str, bool, pd.DataFrame, list[str]]]:
    """Per objective ``(metric, maximise, rows, columns)``: the ``top`` best feasible designs, ties broken
    by the other objectives in order, and the columns shown: index, that objective, the others, the design."""
    table = data.observed
    feasible = table[table["feasible"].astype(bool)] if "feasible" in table else table
    objs = objectives(data)
    index = [c for c in INDEX_COLUMNS if c in table]
    design = design_columns(data)
    out = []
    for m, up in objs:
        order = [(m, up)] + [o for o in objs if o[0] != m]
        best = feasible.sort_values([o for o, _ in order], ascending=[not u for _, u in order], kind="stable")
        cols = index + [m] + [o for o, _ in objs if o != m] + design
        out.append((m, up, best.head(top), cols))
    return out


def constraint_stats(data: ReportData) -> pd.DataFrame | None:
    """Per constraint column of trials.parquet: ``rule``, ``infeasible`` (share violating it), ``only``
    (designs infeasible by it alone), ``gain`` (distinct points of those that would join the front
    without it: it binds when > 0) and ``slack`` (its largest value on the front). None: nothing to analyse."""
    trials = data.trials
    cols = constraint_columns(data)
    if trials is None or not cols:
        return None
    objs = objectives(data)
    names = [m for m, _ in objs]
    maximize = [up for _, up in objs]
    violated = trials[cols].to_numpy(dtype=float) > 0
    front_values = data.front[names].to_numpy(dtype=float)
    rows = []
    for j, col in enumerate(cols):
        only = violated[:, j] & (violated.sum(axis=1) == 1)
        cand = trials.loc[only, names].to_numpy(dtype=float)
        cand = cand[np.isfinite(cand).all(axis=1)]
        gain = 0
        if len(cand):
            keep = pareto_mask(np.concatenate([front_values, cand]), maximize)[len(front_values):]
            gain = len({tuple(r) for r in cand[keep]} - {tuple(r) for r in front_values})
        slack = float(data.front[col].max()) if col in data.front and len(data.front) else float("nan")
        rows.append({"constraint": col, "rule": describe_constraint(col, data.meta.get("spec") or {}),
                     "infeasible": float(violated[:, j].mean()), "only": int(only.sum()), "gain": gain,
                     "slack": slack})
    return pd.DataFrame(rows)
