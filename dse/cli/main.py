"""Command line: ``dse eval|explain|list`` (and the study commands as they land).

Bad input prints one line ``error: FILE: KEY: RULE (got VALUE)`` and exits 2.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dse._version import __version__
from dse.api import evaluate
from dse.explain import explain
from dse.results.io import atomic_write, write_parquet
from dse.spec.errors import DseError, SpecError
from dse.spec.metrics import METRIC_UNITS
from dse.spec.presets import builtin_names, load_model, load_platform
from dse.sweep.runtime import tune_malloc

EXIT_BAD_INPUT = 2

# Human-readable view: (column, header, scale)
_TABLE_VIEW: tuple[tuple[str, str, float], ...] = (
    ("ttft_s", "ttft_ms", 1e3),
    ("tpot_s", "tpot_ms", 1e3),
    ("decode_tokens_per_s", "dec_tok/s", 1.0),
    ("tokens_per_s", "tok/s", 1.0),
    ("decode_power_w", "dec_W", 1.0),
    ("decode_tokens_per_j", "dec_tok/J", 1.0),
    ("tokens_per_j", "tok/J", 1.0),
    ("tdp_tokens_per_j", "tdp_tok/J", 1.0),
    ("memory_bytes", "mem_GB", 1e-9),
)


def _knob_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=float, nargs="+", default=[1.0])
    p.add_argument("--in-len", type=float, nargs="+", default=[128.0])
    p.add_argument("--out-len", type=float, nargs="+", default=[128.0])
    p.add_argument("--w-bits", type=float, nargs="+", default=[16.0])
    p.add_argument("--a-bits", type=float, nargs="+", default=[16.0])
    p.add_argument("--kv-bits", type=float, nargs="+", default=[16.0])
    p.add_argument("--w-sparsity-frac", type=float, nargs="+", default=[0.0])
    p.add_argument("--nm-sparse", type=float, nargs="+", default=[0.0])
    p.add_argument("--pim-offload", type=float, nargs="+", default=[0.0])
    p.add_argument("--spec-len", type=float, nargs="+", default=[0.0], help="speculative draft tokens per step")
    p.add_argument("--spec-accept-frac", type=float, nargs="+", default=[0.7])
    p.add_argument("--spec-draft-frac", type=float, nargs="+", default=[0.05], help="draft size / target size")
    p.add_argument("--set", metavar="FIELD=VALUE", nargs="+", default=[],
                   help="override a hardware field (SI units), e.g. mem_bw_bytes_per_s=4e12")


_KNOBS = ("batch", "in_len", "out_len", "w_bits", "a_bits", "kv_bits", "w_sparsity_frac", "nm_sparse", "pim_offload",
          "spec_len", "spec_accept_frac", "spec_draft_frac")


def _overrides(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError("--set", item, "must be FIELD=VALUE", item)
        try:
            out[key] = float(value)
        except ValueError:
            raise SpecError("--set", key, "must be a number", value) from None
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    platforms = [load_platform(p).name if not Path(p).suffix else p for p in args.platform]
    models = [load_model(m).name if not Path(m).suffix else m for m in args.model]
    grid = list(itertools.product(platforms, models, *(getattr(args, k) for k in _KNOBS)))
    designs = pd.DataFrame(grid, columns=["platform", "model", *_KNOBS])
    for key, value in _overrides(args.set).items():
        designs[key] = value
    df = evaluate(designs)
    fmt = args.format
    if fmt == "parquet" and not args.out:
        raise SpecError("--format", "parquet", "needs --out FILE", fmt)
    if fmt == "parquet":
        write_parquet(df, args.out, units=METRIC_UNITS, metadata={"version": __version__})
    else:
        text = _render(df, fmt)
        if args.out:
            atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
        else:
            sys.stdout.write(text)
    if args.out:
        print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    return 0


def _render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=1) + "\n"
    view = df[[c for c in df.columns if c not in METRIC_UNITS and df[c].nunique() > 1 or c in ("platform", "model")]]
    view = view.copy()
    for col, header, scale in _TABLE_VIEW:
        view[header] = df[col] * scale
    view["fits"] = df["g_memory_bytes"] <= 0
    return view.to_string(index=False, float_format=lambda x: f"{x:.4g}") + "\n"


def _cmd_explain(args: argparse.Namespace) -> int:
    knobs = {k: getattr(args, k)[0] for k in _KNOBS}
    plat = load_platform(args.platform)
    overrides = _overrides(args.set)
    if overrides:
        plat = plat.with_fields(**overrides)
    df = explain(args.model, plat, **knobs)
    view = df.copy()
    view["gflop"] = view.pop("flop") * 1e-9
    view["mb"] = view.pop("bytes") * 1e-6
    view["time_ms"] = view.pop("time_s") * 1e3
    view["energy_mj"] = view.pop("energy_j") * 1e3
    cols = ["phase", "operator", "gflop", "mb", "time_ms", "time_frac", "bound", "energy_mj", "energy_frac"]
    print(f"{args.model} on {plat.name}: " + ", ".join(f"{k}={v:g}" for k, v in knobs.items()))
    print(view[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    kind = "models" if args.what == "models" else "platforms"
    loader = load_model if kind == "models" else load_platform
    for name in builtin_names(kind):
        item = loader(name)
        cls = f"{item.platform_class:5s} " if kind == "platforms" else ""
        print(f"{name:24s} {cls}{item.description}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dse.loading import load_study
    from dse.search import run_study, run_workers

    study = load_study(args.study, output=args.output, storage=args.storage)
    if args.n_trials is not None:
        study = replace(study, n_trials=args.n_trials)
    if args.command == "sweep":
        study = replace(study, sampler="exhaustive")
    if args.command == "sweep":
        result = _sweep(study, args)
    elif args.workers > 1 and study.sampler != "exhaustive":
        result = run_workers(args.study, args.workers, output=args.output, storage=args.storage,
                             n_trials=args.n_trials, stale_after_s=args.stale_after, progress=not args.quiet)
    else:
        result = run_study(study, progress=not args.quiet, stale_after_s=args.stale_after)
    verb = "interrupted after" if result.interrupted else "finished:"
    print(f"{study.name} {verb} {result.n_trials} designs evaluated ({result.n_new} new, "
          f"{result.n_feasible} feasible), front of {result.front_size} in {result.elapsed_s:.1f} s")
    for kind, path in result.paths.items():
        print(f"  {kind:7s} {path}")
    return 130 if result.interrupted else 0


def _sweep(study, args: argparse.Namespace):
    from dse.sweep.study import SweepOptions, run_exhaustive

    shard = None
    if args.shard:
        i, sep, n = args.shard.partition("/")
        if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
            raise SpecError("--shard", "shard", "must be I/N with 0 <= I < N", args.shard)
        shard = (int(i), int(n))
    options = SweepOptions(n_jobs=args.n_jobs, backend=args.backend, shard=shard)
    if args.backend == "dask":
        try:
            from distributed import Client
        except ImportError:
            raise DseError("the dask backend needs the 'dask' extra: pip install 'llm-dse[dask]'") from None
        with Client(args.scheduler) if args.scheduler else Client(processes=True):
            return run_exhaustive(study, progress=not args.quiet, options=options)
    return run_exhaustive(study, progress=not args.quiet, options=options)


def _cmd_merge(args: argparse.Namespace) -> int:
    from dse.loading import load_study
    from dse.results.io import read_table
    from dse.results.tables import write_results
    from dse.sweep.study import merge_shards

    study = load_study(args.study, output=args.output)
    fronts = [read_table(_results_path(d, "front.parquet")) for d in args.shards]
    trials = [read_table(_results_path(d, "trials.parquet")) for d in args.shards]
    front = merge_shards(fronts, study)
    all_trials = pd.concat(trials, ignore_index=True).drop_duplicates(subset=["design_index"])
    paths = write_results(study, all_trials, front, {"sampler": "exhaustive", "merged_shards": list(args.shards)})
    print(f"merged {len(args.shards)} shards: front of {len(front)}")
    for kind, path in paths.items():
        print(f"  {kind:7s} {path}")
    return 0


def _results_path(path: str, name: str) -> Path:
    p = Path(path)
    return p / name if p.is_dir() else p


def _cmd_front(args: argparse.Namespace) -> int:
    from dse.results.io import read_metadata, read_table

    path = _results_path(args.path, "front.parquet")
    df = read_table(path)
    meta = read_metadata(path) if path.suffix == ".parquet" else {}
    objectives = meta.get("objectives", [])
    sort = args.sort or (objectives[0][0] if objectives else None)
    if sort:
        if sort not in df.columns:
            raise SpecError(str(path), "--sort", "unknown column", sort)
        ascending = not any(m == sort and up for m, up in objectives) if not args.ascending else True
        df = df.sort_values(sort, ascending=ascending)
    if args.top:
        df = df.head(args.top)
    cols = args.columns or [c for c in df.columns if not c.startswith("c_") and c != "feasible"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SpecError(str(path), "--columns", "unknown column", missing[0])
    print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from dse.results.io import read_metadata, read_table
    from dse.results.plot import plot_front
    from dse.validation import survey

    if args.survey:
        return survey.run(args)
    if not args.path:
        raise SpecError("", "path", "a results folder is required (or --survey)", None)
    folder = Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent
    trials_path, front_path = folder / "trials.parquet", folder / "front.parquet"
    trials, front = read_table(trials_path), read_table(front_path)
    meta = read_metadata(front_path)
    objectives = [tuple(o) for o in meta.get("objectives", [])]
    if args.x and args.y:
        objectives = [(args.x, True), (args.y, True)]
    if len(objectives) < 2:
        raise SpecError(str(front_path), "objectives", "need two objectives to plot (or --x and --y)", objectives)
    out = Path(args.out) if args.out else folder / "front.png"
    plot_front(trials, front, objectives, out, title=meta.get("study", ""), color_by=args.color_by)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dse", description="Design-space exploration of LLM inference hardware.")
    parser.add_argument("--version", action="version", version=f"llm-dse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate the cartesian product of presets, models and knobs")
    p.add_argument("--platform", nargs="+", required=True, help="preset names or YAML paths")
    p.add_argument("--model", nargs="+", required=True, help="model card names or YAML paths")
    _knob_args(p)
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    p.add_argument("--out", help="write to FILE instead of stdout")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("explain", help="per-operator breakdown of one design")
    p.add_argument("--platform", required=True)
    p.add_argument("--model", required=True)
    _knob_args(p)
    p.set_defaults(func=_cmd_explain)

    for name, text in (("run", "run or resume a study (Optuna search or exhaustive sweep)"),
                       ("sweep", "sweep a study's finite space exhaustively for the exact front")):
        p = sub.add_parser(name, help=text)
        p.add_argument("study", help="study YAML path or built-in study name")
        p.add_argument("--output", help="output folder (default: the spec's, else results/<name>)")
        p.add_argument("--storage", help="Optuna storage URL (default: a journal file in the output folder)")
        p.add_argument("--n-trials", type=int, help="override the budget's n_trials")
        p.add_argument("--workers", type=int, default=1,
                       help="local worker processes sharing the study's storage (the same command on other "
                            "machines with the same --storage joins the study)")
        p.add_argument("--stale-after", type=float, default=60.0,
                       help="seconds after which a RUNNING trial of a dead worker is failed and replaced")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "sweep":
            p.add_argument("--n-jobs", type=int, default=-1, help="parallel jobs (joblib; -1 = all cores)")
            p.add_argument("--backend", help="joblib backend, e.g. loky (default) or dask")
            p.add_argument("--scheduler", help="dask scheduler address (default: a local cluster)")
            p.add_argument("--shard", help="evaluate shard I/N only (merge shards with `dse merge`)")
        p.set_defaults(func=_cmd_run)

    p = sub.add_parser("merge", help="merge the outputs of sweep shards into the exact front")
    p.add_argument("study", help="the study the shards ran")
    p.add_argument("shards", nargs="+", help="shard output folders")
    p.add_argument("--output", required=True, help="folder for the merged results")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("front", help="print a Pareto front table")
    p.add_argument("path", help="results folder or front.parquet")
    p.add_argument("--top", type=int, help="first N rows")
    p.add_argument("--sort", help="column to sort by (default: first objective, best first)")
    p.add_argument("--ascending", action="store_true")
    p.add_argument("--columns", nargs="+", help="columns to show")
    p.set_defaults(func=_cmd_front)

    p = sub.add_parser("plot", help="redraw the front plot of a results folder, or the survey figure (--survey)")
    p.add_argument("path", nargs="?", help="results folder")
    p.add_argument("--x", help="metric on the x axis")
    p.add_argument("--y", help="metric on the y axis")
    p.add_argument("--color-by", help="colour feasible designs by this column (e.g. platform)")
    p.add_argument("--out", help="PNG path (default: front.png in the folder); with --survey, the output folder")
    from dse.validation import survey

    survey.add_arguments(p)
    p.set_defaults(func=_cmd_plot)

    from dse.validation import calibration, measure, validate

    for name, module, text in (("validate", validate, "compare predictions with measurements shipped in validation/"),
                               ("calibrate", calibration, "fit a preset's efficiencies and power terms to data"),
                               ("measure", measure, "measure TTFT, time per token and energy on a local NVIDIA GPU")):
        p = sub.add_parser(name, help=text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)

    p = sub.add_parser("list", help="list built-in models or platforms")
    p.add_argument("what", choices=("models", "platforms"))
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_malloc()
    try:
        return int(args.func(args) or 0)
    except DseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
