"""A study's results as one self-contained HTML page, for people who would rather look.

The page holds its CSS, a few lines of script (click a column header to sort) and its plots
(base64 PNG drawn by :func:`dse.results.plot.front_figure`); it loads nothing from anywhere.
:func:`load_report` (:mod:`dse.results.report_data`) reads a result folder into a
:class:`ReportData` (the only I/O but the final write), :func:`render_report` turns that into
the HTML text (building blocks in :mod:`dse.results.report_html`), :func:`write_report`
writes it atomically.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
from pathlib import Path

import pandas as pd

from dse.results.io import atomic_write
from dse.results.report_data import (
    ReportData,
    constraint_columns,
    constraint_stats,
    counts,
    describe_constraint,
    design_columns,
    front_columns,
    load_report,
    objectives,
    top_designs,
)
from dse.results.report_html import count, esc, fmt, page, pairs, table, unit

__all__ = ["FRONT_ROWS_MAX", "TOP_DEFAULT", "ReportData", "load_report", "render_report", "write_report"]

TOP_DEFAULT = 10  # designs per objective in the "top designs" tables
FRONT_ROWS_MAX = 1000  # front rows shown (the rest are in front.parquet)


def write_report(text: str, path: str | Path) -> Path:
    """Write the HTML ``text`` to ``path`` atomically (readers never see half a page)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _summary(data: ReportData) -> str:
    meta, spec, study = data.meta, data.meta.get("spec") or {}, data.study
    objs = ", ".join(f"{'maximise' if up else 'minimise'} <code>{esc(m)}</code>"
                     + (f" ({esc(unit(m, data.units))})" if unit(m, data.units) else "")
                     for m, up in objectives(data))
    cons = [describe_constraint(c, spec) for c in constraint_columns(data)]
    evaluated, feasible, invalid, sample = counts(data)
    budget = spec.get("budget") if isinstance(spec.get("budget"), dict) else {}
    sampler = str(meta.get("sampler", "?"))
    if isinstance(spec.get("sampler"), (str, dict)):
        asked = spec["sampler"] if isinstance(spec["sampler"], str) else spec["sampler"].get("name", "auto")
        sampler = sampler if asked == sampler else f"{asked} → {sampler}"
    designs = f"{evaluated:,} evaluated, {fmt(feasible)} feasible" + \
        (f", {invalid:,} invalid (an input out of range)" if invalid is not None else "") + \
        f"; front of {len(data.front):,}"
    if data.trials is not None:
        designs += f"; trials.parquet holds {len(data.trials):,}" + (" (a uniform sample plus the front)" if sample
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
    rows = [("study", f"<b>{esc(meta.get('study', ''))}</b>"),
            ("description", esc(spec.get("description", "")) or "–"),
            ("objectives", objs), ("constraints", "<br>".join(esc(c) for c in cons) or "–"),
            ("model", esc(", ".join(models)) or "–"), ("platform", esc(", ".join(platforms)) or "–"),
            ("space", esc(spec.get("space", "?")) if not isinstance(spec.get("space"), dict) else "(inline)"),
            ("sampler", esc(sampler)), ("designs", designs),
            ("budget", esc(", ".join(f"{k} {v}" for k, v in budget.items()) or "–")),
            ("seed", esc(meta.get("seed", "–"))),
            ("spec hash", f"<code>{esc(meta.get('spec_hash', '–'))}</code>"),
            ("llm-dse version", esc(meta.get("version", "–"))), ("run", "<br>".join(esc(r) for r in run))]
    if meta.get("shard"):
        rows.append(("shard", esc(f"{meta['shard'][0]} of {meta['shard'][1]}")))
    return pairs(rows)


def _seen(df: pd.DataFrame, col: str) -> str:
    """The values a column takes: listed when few, else the range and how many."""
    if col not in df:
        return "–"
    values = df[col].dropna()
    if values.nunique() <= 8 or values.dtype.kind not in "iuf":
        shown = sorted(values.unique(), key=lambda v: (str(type(v)), v))
        return ", ".join(fmt(v) for v in shown[:12]) + (" …" if len(shown) > 12 else "")
    return f"{fmt(values.min())} … {fmt(values.max())} ({values.nunique():,} values)"


def _space(data: ReportData) -> str:
    observed = data.observed
    rows = []
    knobs = data.study.space.knobs if data.study is not None else []
    for k in knobs:
        if k.kind == "categorical":
            declared = "{" + ", ".join(fmt(c) for c in k.choices) + "}"
        else:
            declared = f"[{fmt(k.low)}, {fmt(k.high)}]" + (f" step {fmt(k.step)}" if k.step else "") + \
                (" log" if k.log else "")
        if k.when is not None:
            declared += f" when {k.when.text}"
        rows.append({"knob": k.name, "kind": k.kind, "declared": declared, "values": _seen(observed, k.name),
                     "unit": unit(k.name, data.units)})
    if not knobs:
        rows = [{"knob": c, "kind": "", "declared": "?", "values": _seen(observed, c), "unit": unit(c, data.units)}
                for c in design_columns(data)]
    df = pd.DataFrame(rows, columns=["knob", "kind", "declared", "values", "unit"])
    out = table(df, list(df.columns), {}, cls="plain")
    if data.study is not None:
        space = data.study.space
        size = f"{space.size:,} designs" if space.size else "continuous"
        fixed = ", ".join(f"{k} = {fmt(v)} {unit(k, data.units)}".rstrip() for k, v in space.fixed.items()
                          if not isinstance(v, (list, dict)))
        derived = ", ".join(f"{n} = {space.derived[n].text}" for n in space.derived_order)
        out += pairs([("size", esc(size)), ("fixed", esc(fixed) or "–"), ("derived", esc(derived) or "–")])
    return out


def _figure_png(trials: pd.DataFrame, front: pd.DataFrame, objs: list[tuple[str, bool]], *, title: str,
                color_by: str | None, projection: bool, units: dict[str, str]) -> str:
    """One front plot as base64 PNG (:func:`dse.results.plot.front_figure`: axes labelled with their units,
    zoomed past far infeasible designs); a projection of a 3+-objective front draws its points without the line."""
    import matplotlib.pyplot as plt

    from dse.results.plot import front_figure

    fig = front_figure(trials, front, objs, title=title, color_by=color_by, units=units)
    try:
        ax = fig.axes[0]
        if projection and ax.lines:
            ax.lines[-1].set_linestyle("none")  # a projected front is not a curve
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90 if projection else 110)
    finally:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(data: ReportData) -> str:
    objs = objectives(data)
    trials = data.trials if data.trials is not None else data.front.assign(feasible=True)
    color_by = data.meta.get("color_by")
    color_by = color_by if color_by in trials else None
    panels = list(itertools.combinations(objs, 2))
    if not panels:
        return "<p class=note>One objective: no front plot (the table below is the ranking).</p>"
    projection = len(objs) > 2
    out = []
    for x, y in panels:
        png = _figure_png(trials, data.front, [x, y], title=f"{data.meta.get('study', '')}: {y[0]} vs {x[0]}",
                          color_by=color_by, projection=projection, units=data.units)
        out.append(f'<figure><img alt="{esc(y[0])} against {esc(x[0])}" src="data:image/png;base64,{png}">'
                   "</figure>")
    note = f"<p class=note>Pairwise projections of a front of {len(objs)} objectives: a front design may look " \
        "dominated in one panel and is not in the others.</p>" if projection else ""
    return note + '<div class=plots>' + "".join(out) + "</div>"


def _front(data: ReportData) -> str:
    if data.front.empty:
        return "<p>No feasible design: the front is empty.</p>"
    note = f"<p class=note>First {FRONT_ROWS_MAX:,} of {len(data.front):,} rows (all in front.parquet).</p>" \
        if len(data.front) > FRONT_ROWS_MAX else ""
    strong = tuple(m for m, _ in objectives(data))
    return note + table(data.front.head(FRONT_ROWS_MAX), front_columns(data), data.units, strong=strong)


def _top(data: ReportData, top: int) -> str:
    return "".join(f"<h3>{'Highest' if up else 'Lowest'} <code>{esc(m)}</code></h3>"
                   + table(best, cols, data.units, strong=(m,))
                   for m, up, best, cols in top_designs(data, top))


def _binding(data: ReportData) -> str:
    stats = constraint_stats(data)
    if stats is None:
        return "<p>No evaluated designs with constraint values (trials.parquet) to analyse.</p>"
    df = pd.DataFrame({
        "constraint": stats["constraint"], "rule": stats["rule"],
        "infeasible share": [f"{v:.1%}" for v in stats["infeasible"]], "only this one": stats["only"],
        "binds on the front": [f"yes: {count(g, 'design')} would join it" if g else "no" for g in stats["gain"]],
        "slack on the front": stats["slack"]})
    where = "a uniform sample of the designs plus the front" if counts(data).sample else "every evaluated design"
    return (f"<p class=note>Shares over the {len(data.trials):,} designs of trials.parquet ({where}). "
            "<i>only this one</i>: designs infeasible by this constraint alone; the constraint <i>binds</i> when "
            "some of them would be on the front without it. <i>slack on the front</i>: the largest constraint value "
            "of a front design (≤ 0 feasible; near 0: the front touches the bound), in the constraint's unit.</p>"
            + table(df, list(df.columns), {}, cls="plain"))


def render_report(data: ReportData, *, top: int = TOP_DEFAULT) -> str:
    """The HTML page of ``data``: summary, space, front (plots, table), top designs per objective,
    constraints. Self-contained: no external resource."""
    name = data.meta.get("study", data.folder.name)
    notes = "".join(f"<p class=note>Note: {esc(n)}</p>" for n in data.notes)
    files = ", ".join(f"{esc(n)} ({size / 1e6:.2f} MB)" for n, size in data.files.items())
    sections = [
        ("Study", _summary(data) + notes), ("Design space", _space(data)),
        (f"Pareto front ({count(len(data.front), 'design')})",
         (_plots(data) if len(data.front) else "") + _front(data)),
        (f"Top {top} feasible designs per objective", _top(data, top)), ("Constraints", _binding(data)),
    ]
    body = f"<p class=note>llm-dse report of <code>{esc(data.folder)}</code></p>" + \
        "".join(f"<section><h2>{esc(title)}</h2>{content}</section>" for title, content in sections)
    footer = f"Files: {files}. Units are SI as stored in the Parquet field metadata; a blank unit is dimensionless."
    return page(f"{name} — llm-dse report", name, body, footer)
