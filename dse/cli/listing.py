"""``dse list``: the registry (knobs, hardware and card fields, metrics), built-in models,
platforms, studies and samplers. Also the Markdown tables that ``docs/`` embeds
(:mod:`dse.cli.docs` writes them between markers)."""

from __future__ import annotations

import argparse

from dse.cli.common import say
from dse.spec.metrics import METRIC_TABLE
from dse.spec.registry import CARD_FIELDS, HARDWARE_FIELDS, KNOBS, Field, markdown_table

WHAT = ("knobs", "hardware", "card", "metrics", "models", "platforms", "studies", "samplers")
LIST_EXAMPLES = """\
examples:
  dse list knobs                 # design knobs: unit, default, range, kind, model stage
  dse list hardware              # preset fields (SI units) that --set and spaces may change
  dse list knobs --markdown      # the table docs/ARCHITECTURE.md embeds
  dse list platforms
"""
REGISTRY: dict[str, tuple[Field, ...]] = {"knobs": KNOBS, "hardware": HARDWARE_FIELDS, "card": CARD_FIELDS}


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=WHAT, help="what to list: " + ", ".join(WHAT))
    p.add_argument("--markdown", action="store_true",
                   help="a Markdown table (knobs, hardware, card, metrics) instead of aligned text")


def metrics_markdown() -> str:
    """A Markdown table of the metric columns (name, unit, better, meaning)."""
    rows = ["| metric | unit | better | meaning |", "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.unit} | {'higher' if m.maximise else 'lower'} | {m.doc} |" for m in METRIC_TABLE]
    return "\n".join(rows) + "\n"


def markdown(what: str) -> str:
    """The Markdown table of a registry part (``knobs``, ``hardware``, ``card``) or of ``metrics``."""
    return metrics_markdown() if what == "metrics" else markdown_table(REGISTRY[what])


def _fields_text(fields: tuple[Field, ...]) -> list[str]:
    rows = [("name", "unit", "default", "range", "kind", "stage", "meaning")]
    for f in fields:
        default = "required" if f.default is None else f"{f.default:g}"
        low = f"({f.low:g}" if f.positive else f"[{f.low:g}"
        rows.append((f.name, f.unit, default, f"{low}, {f.high:g}]", f.kind, f.stage, f.doc))
    return _aligned(rows)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]


def run_list(args: argparse.Namespace) -> int:
    what = args.what
    if args.markdown:
        if what not in (*REGISTRY, "metrics"):
            from dse.spec.errors import SpecError

            raise SpecError("--markdown", what, "only for knobs, hardware, card and metrics", what)
        say(markdown(what).rstrip("\n"))
        return 0
    if what in REGISTRY:
        lines = _fields_text(REGISTRY[what])
    elif what == "metrics":
        lines = _aligned([("metric", "unit", "better", "meaning")] +
                         [(m.name, m.unit, "higher" if m.maximise else "lower", m.doc) for m in METRIC_TABLE])
    elif what == "samplers":
        from dse.spec.study import SAMPLERS

        lines = list(SAMPLERS)
    elif what == "studies":
        from dse.spec.presets import builtin_names

        lines = builtin_names("studies")
    else:
        from dse.spec.presets import builtin_names, load_model, load_platform

        loader = load_model if what == "models" else load_platform
        lines = []
        for name in builtin_names(what):
            item = loader(name)
            cls = f"{item.platform_class:5s} " if what == "platforms" else ""
            lines.append(f"{name:24s} {cls}{item.description}")
    for line in lines:
        say(line)
    return 0
