"""A study's results as one self-contained HTML page, for people who would rather look.

The page holds its CSS, a few lines of script (click a column header to sort) and its plots
(base64 PNG drawn by :func:`dse.results.plot.front_figure`); it loads nothing from anywhere.
:func:`load_report` reads a result folder into a :class:`ReportData` (the only I/O but the
final write), :func:`render_report` turns that into the HTML text, :func:`write_report`
writes it atomically.

>>> _fmt(1234567.0), _fmt(7), _fmt(True), _fmt(float("inf")), _fmt(None)
('1.235e+06', '7', 'yes', 'inf', '–')
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from dse.results.io import atomic_write, read_metadata, read_table
from dse.results.pareto import pareto_mask
from dse.spec.errors import DseError, SpecError
from dse.spec.metrics import METRIC_BY_NAME, METRICS
from dse.spec.registry import INPUT_FIELDS
from dse.spec.study import Study, load_study

TOP_DEFAULT = 10  # designs per objective in the "top designs" tables
FRONT_ROWS_MAX = 1000  # front rows shown (the rest are in front.parquet)
_INDEX = ("design_index", "trial")
_NOT_DESIGN = {"feasible", "fits", *_INDEX}
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


def _units(path: Path) -> dict[str, str]:
    return {f.name: f.metadata[b"unit"].decode() for f in pq.read_schema(path) if f.metadata and b"unit" in f.metadata}


def _trial_times(journal: Path) -> tuple[str, str] | None:
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
    front = read_table(front_path)
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
    units = {**(_units(trials_path) if trials is not None else {}), **_units(front_path)}
    data = ReportData(folder, front, trials, meta, units)
    if trials is None:
        data.notes.append("no trials.parquet: the counts and constraint shares come from the metadata only")
    data.files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()
                  and not p.name.startswith(".")}
    stamp = dt.datetime.fromtimestamp(front_path.stat().st_mtime, tz=dt.timezone.utc)
    data.written_at = stamp.strftime("%Y-%m-%d %H:%M:%S UTC")
    if (folder / "optuna.journal").is_file():
        data.trial_times = _trial_times(folder / "optuna.journal")
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


def write_report(text: str, path: str | Path) -> Path:
    """Write the HTML ``text`` to ``path`` atomically (readers never see half a page)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ---- formatting ---------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _unit(name: str, units: dict[str, str]) -> str:
    unit = units.get(name) or (INPUT_FIELDS[name].unit if name in INPUT_FIELDS else "")
    return "" if unit == "1" else unit


def _table(df: pd.DataFrame, columns: list[str], units: dict[str, str], *, strong: tuple[str, ...] = (),
           cls: str = "data") -> str:
    """An HTML table: headers with units, numbers right-aligned with their exact value in ``data-v``."""
    head = "".join(f'<th{" class=obj" if c in strong else ""}>{_esc(c)}'
                   f'{"<br><small>" + _esc(_unit(c, units)) + "</small>" if _unit(c, units) else ""}</th>'
                   for c in columns)
    body = []
    for row in df[columns].itertuples(index=False, name=None):
        cells = []
        for c, v in zip(columns, row, strict=True):
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            attrs = f' class="num{" obj" if c in strong else ""}" data-v="{float(v)!r}"' if num else ""
            cells.append(f"<td{attrs}>{_esc(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class=scroll><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}' \
           "</tbody></table></div>"


def _pairs(rows: list[tuple[str, str]]) -> str:
    return "<table class=kv>" + "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


# ---- content ------------------------------------------------------------------------------------

def _objectives(data: ReportData) -> list[tuple[str, bool]]:
    return [(str(m), bool(up)) for m, up in data.meta["objectives"]]


def _design_columns(data: ReportData) -> list[str]:
    """Columns that describe a design and vary between the evaluated designs (knobs first)."""
    table = data.trials if data.trials is not None else data.front
    cols = [c for c in table.columns if c not in METRICS and not c.startswith("c_") and c not in _NOT_DESIGN]
    if data.study is not None:
        knobs = [k.name for k in data.study.space.knobs if k.name in cols]
        cols = knobs + [c for c in cols if c not in knobs]
    return [c for c in cols if table[c].nunique(dropna=False) > 1]


def _constraint_columns(data: ReportData) -> list[str]:
    table = data.trials if data.trials is not None else data.front
    return [c for c in table.columns if c.startswith("c_")]


def _counts(data: ReportData) -> tuple[int, int | None, int | None, bool]:
    """Designs evaluated, feasible, invalid (None: unknown) and whether trials.parquet is a sample."""
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
    return evaluated, feasible, invalid, sample


def _describe_constraint(col: str, spec: dict) -> str:
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


def _summary(data: ReportData) -> str:
    meta, spec, study = data.meta, data.meta.get("spec") or {}, data.study
    objectives = ", ".join(f"{'maximise' if up else 'minimise'} <code>{_esc(m)}</code>"
                           + (f" ({_esc(_unit(m, data.units))})" if _unit(m, data.units) else "")
                           for m, up in _objectives(data))
    cons = [_describe_constraint(c, spec) for c in _constraint_columns(data)]
    evaluated, feasible, invalid, sample = _counts(data)
    front = len(data.front)
    budget = spec.get("budget") if isinstance(spec.get("budget"), dict) else {}
    sampler = str(meta.get("sampler", "?"))
    if isinstance(spec.get("sampler"), (str, dict)):
        asked = spec["sampler"] if isinstance(spec["sampler"], str) else spec["sampler"].get("name", "auto")
        sampler = sampler if asked == sampler else f"{asked} → {sampler}"
    counts = f"{evaluated:,} evaluated, {_fmt(feasible)} feasible" + \
        (f", {invalid:,} invalid (an input out of range)" if invalid is not None else "") + f"; front of {front:,}"
    if data.trials is not None:
        counts += f"; trials.parquet holds {len(data.trials):,}" + (" (a uniform sample plus the front)" if sample
                                                                   else "")
    run = []
    if meta.get("points_per_s") and meta.get("n_evaluated"):
        run.append(f"{meta['n_evaluated'] / meta['points_per_s']:.3g} s of evaluation "
                   f"({meta['points_per_s']:,.0f} designs/s)")
    if data.trial_times:
        first, last = (dt.datetime.fromisoformat(t) for t in data.trial_times)
        run.append(f"trials from {first:%Y-%m-%d %H:%M:%S} to {last:%H:%M:%S} "
                   f"({(last - first).total_seconds():.3g} s, pauses between resumed runs included)")
    run.append(f"results written {data.written_at}")
    models = study.space.models if study else sorted({str(v) for v in data.front.get("model", [])})
    platforms = study.space.platforms if study else sorted({str(v) for v in data.front.get("platform", [])})
    rows = [("study", f"<b>{_esc(meta.get('study', ''))}</b>"),
            ("description", _esc(spec.get("description", "")) or "–"),
            ("objectives", objectives), ("constraints", "<br>".join(_esc(c) for c in cons) or "–"),
            ("model", _esc(", ".join(models)) or "–"), ("platform", _esc(", ".join(platforms)) or "–"),
            ("space", _esc(spec.get("space", "?")) if not isinstance(spec.get("space"), dict) else "(inline)"),
            ("sampler", _esc(sampler)), ("designs", counts),
            ("budget", _esc(", ".join(f"{k} {v}" for k, v in budget.items()) or "–")),
            ("seed", _esc(meta.get("seed", "–"))),
            ("spec hash", f"<code>{_esc(meta.get('spec_hash', '–'))}</code>"),
            ("llm-dse version", _esc(meta.get("version", "–"))), ("run", "<br>".join(_esc(r) for r in run))]
    if meta.get("shard"):
        rows.append(("shard", _esc(f"{meta['shard'][0]} of {meta['shard'][1]}")))
    return _pairs(rows)


def _space(data: ReportData) -> str:
    observed = data.trials if data.trials is not None else data.front
    rows = []
    knobs = data.study.space.knobs if data.study is not None else []
    for k in knobs:
        if k.kind == "categorical":
            declared = "{" + ", ".join(_fmt(c) for c in k.choices) + "}"
        else:
            declared = f"[{_fmt(k.low)}, {_fmt(k.high)}]" + (f" step {_fmt(k.step)}" if k.step else "") + \
                (" log" if k.log else "")
        if k.when is not None:
            declared += f" when {k.when.text}"
        rows.append({"knob": k.name, "kind": k.kind, "declared": declared, "values": _seen(observed, k.name),
                     "unit": _unit(k.name, data.units)})
    if not knobs:
        rows = [{"knob": c, "kind": "", "declared": "?", "values": _seen(observed, c), "unit": _unit(c, data.units)}
                for c in _design_columns(data)]
    table = pd.DataFrame(rows, columns=["knob", "kind", "declared", "values", "unit"])
    out = _table(table, list(table.columns), {}, cls="plain")
    if data.study is not None:
        space = data.study.space
        size = f"{space.size:,} designs" if space.size else "continuous"
        fixed = ", ".join(f"{k} = {_fmt(v)} {_unit(k, data.units)}".rstrip() for k, v in space.fixed.items()
                          if not isinstance(v, (list, dict)))
        derived = ", ".join(f"{n} = {space.derived[n].text}" for n in space.derived_order)
        out += _pairs([("size", _esc(size)), ("fixed", _esc(fixed) or "–"), ("derived", _esc(derived) or "–")])
    return out


def _seen(df: pd.DataFrame, col: str) -> str:
    if col not in df:
        return "–"
    values = df[col].dropna()
    if values.nunique() <= 8 or values.dtype.kind not in "iuf":
        shown = sorted(values.unique(), key=lambda v: (str(type(v)), v))
        return ", ".join(_fmt(v) for v in shown[:12]) + (" …" if len(shown) > 12 else "")
    return f"{_fmt(values.min())} … {_fmt(values.max())} ({values.nunique():,} values)"


def _figure_png(trials: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, bool]], *, title: str,
                color_by: str | None, projection: bool) -> str:
    """One front plot as base64 PNG; a projection of a 3+-objective front draws its points without the line."""
    import matplotlib.pyplot as plt

    from dse.results.plot import front_figure

    fig = front_figure(trials, front, objectives, title=title, color_by=color_by)
    try:
        if projection and fig.axes[0].lines:
            fig.axes[0].lines[-1].set_linestyle("none")  # a projected front is not a curve
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90 if projection else 110)
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(data: ReportData) -> str:
    objectives = _objectives(data)
    trials = data.trials if data.trials is not None else data.front.assign(feasible=True)
    color_by = data.meta.get("color_by")
    color_by = color_by if color_by in trials else None
    pairs = list(itertools.combinations(objectives, 2))
    if not pairs:
        return "<p class=note>One objective: no front plot (the table below is the ranking).</p>"
    projection = len(objectives) > 2
    out = []
    for x, y in pairs:
        png = _figure_png(trials, data.front, [x, y], title=f"{data.meta.get('study', '')}: {y[0]} vs {x[0]}",
                          color_by=color_by, projection=projection)
        out.append(f'<figure><img alt="{_esc(y[0])} against {_esc(x[0])}" src="data:image/png;base64,{png}">'
                   "</figure>")
    note = f"<p class=note>Pairwise projections of a front of {len(objectives)} objectives: a front design may look " \
        "dominated in one panel and is not in the others.</p>" if projection else ""
    return note + '<div class=plots>' + "".join(out) + "</div>"


def _front(data: ReportData) -> str:
    objectives = [m for m, _ in _objectives(data)]
    index = [c for c in _INDEX if c in data.front]
    design = [c for c in _design_columns(data) if c in data.front]
    metrics = [c for c in data.front.columns if c in METRICS and c not in objectives and not c.startswith("c_")]
    cols = index + objectives + design + metrics
    shown = data.front.head(FRONT_ROWS_MAX)
    note = f"<p class=note>First {FRONT_ROWS_MAX:,} of {len(data.front):,} rows (all in front.parquet).</p>" \
        if len(data.front) > FRONT_ROWS_MAX else ""
    if data.front.empty:
        return "<p>No feasible design: the front is empty.</p>"
    return note + _table(shown, cols, data.units, strong=tuple(objectives))


def _top(data: ReportData, top: int) -> str:
    table = data.trials if data.trials is not None else data.front
    feasible = table[table["feasible"].astype(bool)] if "feasible" in table else table
    objectives = _objectives(data)
    index = [c for c in _INDEX if c in table]
    design = _design_columns(data)
    out = []
    for m, up in objectives:  # ties broken by the other objectives, in order
        order = [(m, up)] + [o for o in objectives if o[0] != m]
        best = feasible.sort_values([o for o, _ in order], ascending=[not u for _, u in order], kind="stable")
        best = best.head(top)
        cols = index + [m] + [o for o, _ in objectives if o != m] + design
        out.append(f"<h3>{'Highest' if up else 'Lowest'} <code>{_esc(m)}</code></h3>"
                   + _table(best, cols, data.units, strong=(m,)))
    return "".join(out)


def _binding(data: ReportData) -> str:
    trials = data.trials
    cols = _constraint_columns(data)
    if trials is None or not cols:
        return "<p>No evaluated designs with constraint values (trials.parquet) to analyse.</p>"
    objectives = _objectives(data)
    names = [m for m, _ in objectives]
    maximize = [up for _, up in objectives]
    violated = trials[cols].to_numpy(dtype=float) > 0
    front_values = data.front[names].to_numpy(dtype=float)
    rows = []
    for j, col in enumerate(cols):
        only = violated[:, j] & (violated.sum(axis=1) == 1)
        cand = trials.loc[only, names].to_numpy(dtype=float)
        cand = cand[np.isfinite(cand).all(axis=1)]
        gain = 0
        if len(cand):
            merged = np.concatenate([front_values, cand])
            keep = pareto_mask(merged, maximize)[len(front_values):]
            new = {tuple(r) for r in cand[keep]} - {tuple(r) for r in front_values}
            gain = len(new)
        tightest = float(data.front[col].max()) if col in data.front and len(data.front) else float("nan")
        rows.append({"constraint": col, "rule": _describe_constraint(col, data.meta.get("spec") or {}),
                     "infeasible share": f"{violated[:, j].mean():.1%}", "only this one": int(only.sum()),
                     "binds on the front": f"yes: {_count(gain, 'design')} would join it" if gain else "no",
                     "slack on the front": tightest})
    df = pd.DataFrame(rows)
    units = {"slack on the front": ""}
    _, _, _, sample = _counts(data)
    where = "a uniform sample of the designs plus the front" if sample else "every evaluated design"
    return (f"<p class=note>Shares over the {len(trials):,} designs of trials.parquet ({where}). "
            "<i>only this one</i>: designs infeasible by this constraint alone; the constraint <i>binds</i> when "
            "some of them would be on the front without it. <i>slack on the front</i>: the largest constraint value "
            "of a front design (≤ 0 feasible; near 0: the front touches the bound), in the constraint's unit.</p>"
            + _table(df, list(df.columns), units, cls="plain"))


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}.note{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #e5e5e5;
text-align:left;vertical-align:top}table.kv th{width:11em;color:#555;font-weight:600}
table.data th,table.plain th{background:#f6f6f6;position:sticky;top:0;cursor:pointer;white-space:nowrap}
table.data th::after,table.plain th::after{content:" \\2195";color:#aaa;font-size:11px}
td.num{text-align:right;font-variant-numeric:tabular-nums}.obj{background:#fff7e0}
tbody tr:hover{background:#f0f6ff}small{color:#777;font-weight:400}.scroll{overflow:auto;max-height:70vh}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{max-width:100%;height:auto}
footer{margin-top:3em;color:#777;font-size:12px}
"""
# Click a header: sort that table by the column (numbers by their exact value), again to reverse.
_JS = """
document.querySelectorAll("table.data th, table.plain th").forEach(function(th){th.onclick=function(){
var t=th.closest("table"),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),
d=th.dataset.d==="1"?-1:1;th.dataset.d=d===1?"1":"0";
var k=function(r){var c=r.children[i];return c.dataset.v!==undefined?parseFloat(c.dataset.v):c.textContent;};
Array.from(b.rows).sort(function(x,y){var a=k(x),c=k(y);return (a<c?-1:a>c?1:0)*d;})
.forEach(function(r){b.appendChild(r);});};});
"""


def render_report(data: ReportData, *, top: int = TOP_DEFAULT) -> str:
    """The HTML page of ``data``: summary, space, front (plots, table), top designs per objective,
    constraints. Self-contained: no external resource."""
    name = data.meta.get("study", data.folder.name)
    notes = "".join(f"<p class=note>Note: {_esc(n)}</p>" for n in data.notes)
    files = ", ".join(f"{_esc(n)} ({size / 1e6:.2f} MB)" for n, size in data.files.items())
    sections = [
        ("Study", _summary(data) + notes), ("Design space", _space(data)),
        (f"Pareto front ({_count(len(data.front), 'design')})",
         (_plots(data) if len(data.front) else "") + _front(data)),
        (f"Top {top} feasible designs per objective", _top(data, top)), ("Constraints", _binding(data)),
    ]
    body = "".join(f"<section><h2>{_esc(title)}</h2>{content}</section>" for title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{_esc(name)} — llm-dse report</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(name)}</h1><p class=note>llm-dse report of <code>{_esc(data.folder)}</code></p>{body}"
            f"<footer>Files: {files}. Units are SI as stored in the Parquet field metadata; a blank unit is "
            f"dimensionless.</footer><script>{_JS}</script></body></html>\n")
