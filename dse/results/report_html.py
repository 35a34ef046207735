"""HTML building blocks of ``dse report``: escaping, number formatting, sortable tables, the page's
CSS and its sort-on-click script. No knowledge of studies here.

>>> fmt(1234567.0), fmt(7), fmt(True), fmt(float("inf")), fmt(None)
('1.235e+06', '7', 'yes', 'inf', '–')
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from dse.results.io import display_unit as unit  # the unit shown for a column


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell's text: 4 significant digits, integers whole, booleans yes/no, missing a dash."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def table(df: pd.DataFrame, columns: list[str], units: dict[str, str], *, strong: tuple[str, ...] = (),
          cls: str = "data") -> str:
    """An HTML table: headers with units, numbers right-aligned with their exact value in ``data-v``."""
    head = "".join(f'<th{" class=obj" if c in strong else ""}>{esc(c)}'
                   f'{"<br><small>" + esc(unit(c, units)) + "</small>" if unit(c, units) else ""}</th>'
                   for c in columns)
    body = []
    for row in df[columns].itertuples(index=False, name=None):
        cells = []
        for c, v in zip(columns, row, strict=True):
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            attrs = f' class="num{" obj" if c in strong else ""}" data-v="{float(v)!r}"' if num else ""
            cells.append(f"<td{attrs}>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class=scroll><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}' \
           "</tbody></table></div>"


def pairs(rows: list[tuple[str, str]]) -> str:
    """A two-column key/value table; the values are HTML already."""
    return "<table class=kv>" + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def page(title: str, heading: str, body: str, footer: str) -> str:
    """The whole document: ``body`` and ``footer`` are HTML, ``title`` and ``heading`` text."""
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(heading)}</h1>{body}<footer>{footer}</footer><script>{JS}</script></body></html>\n")


CSS = """
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
JS = """
document.querySelectorAll("table.data th, table.plain th").forEach(function(th){th.onclick=function(){
var t=th.closest("table"),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),
d=th.dataset.d==="1"?-1:1;th.dataset.d=d===1?"1":"0";
var k=function(r){var c=r.children[i];return c.dataset.v!==undefined?parseFloat(c.dataset.v):c.textContent;};
Array.from(b.rows).sort(function(x,y){var a=k(x),c=k(y);return (a<c?-1:a>c?1:0)*d;})
.forEach(function(r){b.appendChild(r);});};});
"""
