"""``dse eval`` and ``dse explain``: single designs and small grids, no study file."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from dse.cli.common import (
    add_knob_arguments,
    knob_values,
    note,
    output_file,
    overrides,
    say,
    table_text,
)
from dse.spec.errors import SpecError
from dse.spec.registry import INPUT_FIELDS, KNOB_DEFAULTS

MAX_EXPLAINED = 64  # designs `dse explain` prints in one call
ALWAYS_SHOWN = ("batch", "in_len", "out_len")  # in a design's title, with every knob off its default
FORMATS = ("table", "csv", "json", "parquet")
# Human-readable view of `dse eval --format table`: (column, header with its unit, scale)
TABLE_VIEW: tuple[tuple[str, str, float], ...] = (
    ("ttft_s", "ttft_ms", 1e3),
    ("tpot_s", "tpot_ms", 1e3),
    ("decode_tokens_per_s", "dec_tok/s", 1.0),
    ("tokens_per_s", "tok/s", 1.0),
    ("decode_power_w", "dec_W", 1.0),
    ("decode_tokens_per_j", "dec_tok/J", 1.0),
    ("tokens_per_j", "tok/J", 1.0),
    ("tdp_tokens_per_j", "tdp_tok/J", 1.0),
    ("memory_bytes", "mem_GB", 1e-9),
    ("usd_per_mtoken", "$/Mtok", 1.0),
    ("ppl_delta", "ppl_delta", 1.0),
)
# ... and where designs have a request-length workload, the serving stage's columns
SERVING_VIEW: tuple[tuple[str, str, float], ...] = (
    ("serving_tokens_per_s", "srv_tok/s", 1.0),
    ("goodput_req_per_s", "goodput_req/s", 1.0),
    ("ttft_p90_s", "ttft_p90_ms", 1e3),
    ("tpot_p90_s", "tpot_p90_ms", 1e3),
    ("kv_max_seqs", "kv_seqs", 1.0),
    ("serving_tokens_per_j", "srv_tok/J", 1.0),
    ("serving_usd_per_mtoken", "srv_$/Mtok", 1.0),
)
# `dse explain` columns: (API column, header, scale); the legend below the table spells the units out
EXPLAIN_VIEW: tuple[tuple[str, str, float], ...] = (
    ("phase", "phase", 1.0),
    ("operator", "operator", 1.0),
    ("flop", "GFLOP", 1e-9),
    ("main_memory_bytes", "main_memory_MB", 1e-6),
    ("time_s", "time_ms", 1e3),
    ("time_frac", "time_%", 100.0),
    ("bound", "bound", 1.0),
    ("energy_j", "energy_mJ", 1e3),
    ("energy_frac", "energy_%", 100.0),
)
EXPLAIN_LEGEND = ("GFLOP = 1e9 floating-point operations; main_memory_MB = main-memory traffic in 1e6 bytes; "
                  "time_ms = milliseconds (before the TDP cap); energy_mJ = millijoules (1e-3 J); "
                  "% = share of the phase")

EVAL_EXAMPLES = """\
examples:
  dse eval --platform h100-sxm --model llama-2-7b --batch 1 8 64
  dse eval --platform h100-sxm a100-sxm-80gb --model llama-3-8b --w-bits 4 8 16 --format csv --out grid.csv
  dse eval --platform h200-sxm --model llama-2-70b --set mem_bw_bytes_per_s=6e12 --format parquet --out x.parquet
  dse eval --platform hgx-h100-8 --model llama-3-70b --tp 2 --pp 1 2 --workload sharegpt-vllm-paper   # serving
  dse eval --platform l4 --model llama-3-8b --w-bits 4 --quant-method gptq awq
"""
EXPLAIN_EXAMPLES = """\
examples:
  dse explain --platform h100-sxm --model llama-2-7b --batch 8
  dse explain --platform h100-sxm --model llama-2-7b --batch 1 64 --w-bits 4   # one table per design
"""


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", nargs="+", required=True, metavar="NAME|YAML",
                   help="platform preset names (`dse list platforms`) or YAML paths (required)")
    p.add_argument("--model", nargs="+", required=True, metavar="NAME|YAML",
                   help="model card names (`dse list models`) or YAML paths (required)")
    add_knob_arguments(p)
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="output format; parquet needs --out (default: table)")
    p.add_argument("--out", metavar="FILE", help="write to FILE (its folder must exist) instead of stdout "
                                                 "(default: stdout)")


def add_explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", required=True, metavar="NAME|YAML", help="platform preset name or YAML path "
                                                                         "(required)")
    p.add_argument("--model", required=True, metavar="NAME|YAML", help="model card name or YAML path (required)")
    add_knob_arguments(p)


def blame_set(exc: SpecError, fields: dict[str, float]) -> SpecError:
    """A check's error on an overridden hardware field, pointed at ``--set`` (the checks know no file)."""
    if not exc.file and (exc.key_path in fields or exc.key_path == "tdp_w" and "static_power_w" in fields):
        return SpecError("--set", exc.key_path, exc.rule, exc.value)
    return exc


def _name(value: str, loader: Any) -> str:
    """A preset/card argument as the evaluator takes it: built-in names normalised, paths kept."""
    return loader(value).name if not Path(value).suffix else value


def design_grid(args: argparse.Namespace, platforms: list[str], models: list[str]) -> Any:
    """Every combination of the platforms, models and knob values given, one row each (int knobs as ints)."""
    import pandas as pd

    knobs = knob_values(args)
    grid = list(itertools.product(platforms, models, *knobs.values()))
    return pd.DataFrame(grid, columns=["platform", "model", *knobs])


def warn_context(designs: Any, cards: dict[str, Any]) -> None:
    """Warn on stderr where ``in_len + out_len`` exceeds the model card's ``max_seq_len`` (issue 9.16)."""
    for model, card in cards.items():
        limit = card.fields.get("max_seq_len")
        rows = designs[designs["model"].astype(str) == model]
        if limit is None or rows.empty:
            continue
        total = rows["in_len"] + rows["out_len"]
        over = total > limit
        if over.any():
            note(f"warning: {int(over.sum())} of {len(rows)} designs of {model} have in_len + out_len "
                 f"up to {int(total.max())} tokens, beyond the card's max_seq_len {int(limit)}: the model was "
                 "not trained for that context")


def run_eval(args: argparse.Namespace) -> int:
    from dse._version import __version__
    from dse.api import evaluate
    from dse.results.io import atomic_write, write_parquet
    from dse.results.tables import units_for
    from dse.spec.presets import load_model, load_platform

    if args.format == "parquet" and not args.out:
        raise SpecError("--format", "parquet", "needs --out FILE", args.format)
    out = output_file(args.out) if args.out else None
    platforms = [_name(p, load_platform) for p in args.platform]
    models = [_name(m, load_model) for m in args.model]
    designs = design_grid(args, platforms, models)
    fields = overrides(args.set)
    for key, value in fields.items():
        designs[key] = value
    try:
        df = evaluate(designs)
    except SpecError as exc:
        raise blame_set(exc, fields) from None
    df["fits"] = df["g_memory_bytes"] <= 0
    warn_context(designs, {m: load_model(m) for m in models})
    if args.format == "parquet":
        write_parquet(df, out, units=units_for(df), metadata={"version": __version__})
    else:
        text = render(df, args.format)
        if out:
            atomic_write(out, lambda tmp: Path(tmp).write_text(text))
        else:
            sys.stdout.write(text)
    if out:
        note(f"wrote {len(df)} rows to {out}")
    return 0


def render(df: Any, fmt: str) -> str:
    """``df`` of evaluated designs as CSV, JSON or the human table (inputs that vary, then metrics)."""
    from dse.spec.metrics import METRIC_UNITS

    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=1) + "\n"
    shown = [c for c in df.columns if c in ("platform", "model")
             or (c not in METRIC_UNITS and c != "fits" and df[c].nunique() > 1)]
    view = df[shown].copy()
    for col in shown:  # categorical knobs by their names, as given
        field = INPUT_FIELDS.get(col)
        if field is not None and field.choices and view[col].dtype.kind in "iuf":
            view[col] = [field.choices[int(code)] for code in view[col]]
    serving = "serving_tokens_per_s" in df and any(  # a serving knob set off its default: show the stage
        (df[c] != f.default).any() for c, f in INPUT_FIELDS.items() if f.stage == "serving" and c in df)
    for col, header, scale in TABLE_VIEW + (SERVING_VIEW if serving else ()):
        view[header] = df[col] * scale
    view["fits"] = df["fits"]
    return table_text(view) + "\n"


def run_explain(args: argparse.Namespace) -> int:
    from dse.explain import explain
    from dse.spec.presets import load_model, load_platform

    knobs = knob_values(args)
    designs = [dict(zip(knobs, values, strict=True)) for values in itertools.product(*knobs.values())]
    if len(designs) > MAX_EXPLAINED:
        raise SpecError("dse explain", "<knobs>", f"explains at most {MAX_EXPLAINED} designs at once; "
                        "give fewer values", len(designs))
    card = load_model(args.model)
    plat = load_platform(args.platform)
    fields = overrides(args.set)
    if fields:
        plat = plat.with_fields(**fields)
    try:  # every design is checked before anything is printed
        tables = [explain(card, plat, **design) for design in designs]
    except SpecError as exc:
        raise blame_set(exc, fields) from None
    import pandas as pd

    warn_context(pd.DataFrame([{**d, "model": card.name} for d in designs]), {card.name: card})
    for i, (design, df) in enumerate(zip(designs, tables, strict=True)):
        view = pd.DataFrame({header: (df[col] * scale if scale != 1.0 else df[col])
                             for col, header, scale in EXPLAIN_VIEW})
        if i:
            say()
        say(f"{card.name} on {plat.name}: " + ", ".join(f"{k}={v:g}" for k, v in design.items()
                                                         if k in ALWAYS_SHOWN or v != KNOB_DEFAULTS.get(k)))
        say(table_text(view))
    say(EXPLAIN_LEGEND)
    return 0
