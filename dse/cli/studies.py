"""``dse run|sweep|merge|front|plot``: studies and their result folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dse.cli.common import (
    output_file,
    output_folder,
    positive_float,
    positive_int,
    say,
    storage_url,
    table_text,
)
from dse.spec.errors import SpecError, did_you_mean

STALE_AFTER_S = 60.0  # the search layer's default (dse.search.budget.STALE_AFTER_S), not imported: no Optuna here
BACKENDS = ("loky", "threading", "multiprocessing", "dask")

RUN_EXAMPLES = """\
examples:
  dse run studies/quickstart.yaml
  dse run quickstart --n-trials 500 --output results/qs-500
  dse run my-study.yaml --workers 4                       # 4 local processes, one journal
  dse run my-study.yaml --storage postgresql://user@db/dse   # run the same line on other machines to join
"""
SWEEP_EXAMPLES = """\
examples:
  dse sweep studies/quickstart.yaml                 # every design of the space: the exact front
  dse sweep big.yaml --shard 0/4 --output results/big-0   # one quarter; merge with `dse merge`
  dse sweep big.yaml --backend dask --scheduler tcp://host:8786
"""
MERGE_EXAMPLES = """\
examples:
  dse merge big.yaml results/big-0 results/big-1 results/big-2 results/big-3 --output results/big
"""
FRONT_EXAMPLES = """\
examples:
  dse front results/quickstart
  dse front results/quickstart/front.parquet --sort decode_tokens_per_j --top 5 --columns platform batch w_bits
"""
PLOT_EXAMPLES = """\
examples:
  dse plot results/quickstart                        # redraw front.png (colouring as the study drew it)
  dse plot results/quickstart --x tokens_per_j --y ttft_s --color-by w_bits --out tj.png
  dse plot --survey --batch 1 8 --out results/survey  # the survey figure
"""


def _add_run_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", help="study YAML path or built-in study name")
    p.add_argument("--output", metavar="DIR",
                   help="output folder (default: the spec's `output`, else results/<study name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_common(p)
    p.add_argument("--storage", metavar="URL|FILE",
                   help="Optuna storage: a journal file, sqlite:///FILE or an RDB URL shared by workers "
                        "(default: <output>/optuna.journal)")
    p.add_argument("--n-trials", type=positive_int, metavar="N", help="budget: distinct designs to evaluate "
                                                                     "(default: the spec's budget.n_trials)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="local worker processes sharing the study's storage; the same command on other machines "
                        "with the same --storage joins the study (default: 1)")
    p.add_argument("--stale-after", type=positive_float, default=STALE_AFTER_S, metavar="S",
                   help="seconds after which a RUNNING trial of a dead worker is failed and replaced "
                        f"(default: {STALE_AFTER_S:g} s)")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_common(p)
    p.add_argument("--n-jobs", type=int, default=-1, metavar="N",
                   help="parallel jobs (joblib: N >= 1 processes, -1 all cores, -2 all but one) (default: -1)")
    p.add_argument("--backend", choices=BACKENDS, help="joblib backend (default: loky)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask scheduler address, with --backend dask (default: a local cluster)")
    p.add_argument("--shard", metavar="I/N", help="evaluate shard I of N only (0 <= I < N); merge the shards with "
                                                  "`dse merge` (default: the whole space)")


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", help="the study the shards ran (YAML path or built-in name)")
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR", help="shard output folders")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the merged results (required)")


def add_front_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="results folder or front.parquet")
    p.add_argument("--top", type=positive_int, metavar="N", help="first N rows (default: all)")
    p.add_argument("--sort", metavar="COLUMN", help="column to sort by (default: the first objective, best first)")
    p.add_argument("--ascending", action="store_true", help="sort smallest first")
    p.add_argument("--columns", nargs="+", metavar="COLUMN",
                   help="columns to show (default: all but constraint columns)")


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    from dse.cli.validation import add_survey_arguments

    p.add_argument("path", nargs="?", metavar="DIR", help="results folder (not with --survey)")
    p.add_argument("--x", metavar="COLUMN", help="column on the x axis (default: the first objective)")
    p.add_argument("--y", metavar="COLUMN", help="column on the y axis (default: the second objective)")
    p.add_argument("--color-by", metavar="COLUMN",
                   help="colour feasible designs by this column (default: as the study's front.png: the platform, "
                        "memory technology or model when the study varies it)")
    p.add_argument("--out", metavar="FILE|DIR",
                   help="PNG path (default: front.png in the folder); with --survey, the output folder "
                        "(default: results/survey)")
    add_survey_arguments(p)


# ---- handlers -------------------------------------------------------------------------------------

def _summary(name: str, result: Any) -> None:
    verb = "interrupted after" if result.interrupted else "finished:"
    say(f"{name} {verb} {result.n_trials} designs evaluated ({result.n_new} new, "
        f"{result.n_feasible} feasible), front of {result.front_size} in {result.elapsed_s:.1f} s")
    for line in getattr(result, "notes", []) or []:
        say(f"  note: {line}")
    for kind, path in result.paths.items():
        say(f"  {kind:7s} {path}")


def _load(args: argparse.Namespace, storage: str | None = None) -> Any:
    from dse.loading import load_study

    if args.output is not None:
        output_folder(args.output)
    study = load_study(args.study, output=args.output, storage=storage)
    if args.output is None:
        output_folder(str(study.output), "output")
    return study


def run_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dse.search import run_study, run_workers

    storage = storage_url(args.storage)
    study = _load(args, storage)
    if storage is None and study.storage:
        storage_url(study.storage, f"{study.file}: storage")
    if args.n_trials is not None:
        study = replace(study, n_trials=args.n_trials)
    if args.workers > 1 and study.sampler != "exhaustive":
        result = run_workers(args.study, args.workers, output=args.output, storage=storage,
                             n_trials=args.n_trials, stale_after_s=args.stale_after, progress=not args.quiet)
    else:
        result = run_study(study, progress=not args.quiet, stale_after_s=args.stale_after)
    _summary(study.name, result)
    return 130 if result.interrupted else 0


def _shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise SpecError("--shard", "shard", "must be I/N with 0 <= I < N", text)
    return int(i), int(n)


def run_sweep(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dse.spec.errors import DseError
    from dse.sweep.study import SweepOptions, run_exhaustive

    if args.n_jobs == 0:
        raise SpecError("--n-jobs", "n_jobs", "must be >= 1, or negative (-1: all cores)", 0)
    if args.scheduler and args.backend != "dask":
        raise SpecError("--scheduler", "scheduler", "needs --backend dask", args.scheduler)
    options = SweepOptions(n_jobs=args.n_jobs, backend=args.backend, shard=_shard(args.shard))
    study = replace(_load(args), sampler="exhaustive")
    if args.backend == "dask":
        try:
            from distributed import Client
        except ImportError:
            raise DseError("the dask backend needs the 'dask' extra: pip install 'llm-dse[dask]'") from None
        with Client(args.scheduler) if args.scheduler else Client(processes=True):
            result = run_exhaustive(study, progress=not args.quiet, options=options)
    else:
        result = run_exhaustive(study, progress=not args.quiet, options=options)
    _summary(study.name, result)
    return 130 if result.interrupted else 0


def results_path(path: str, name: str) -> Path:
    """``path/name`` for a results folder, ``path`` itself for a file."""
    p = Path(path)
    return p / name if p.is_dir() else p


def run_merge(args: argparse.Namespace) -> int:
    from dse.loading import load_study
    from dse.sweep.study import merge_shard_folders

    output_folder(args.output)
    study = load_study(args.study, output=args.output)
    result = merge_shard_folders(study, args.shards)  # checks the shards are one complete set of this study
    say(f"merged {len(args.shards)} shards: front of {result.front_size}")
    for kind, path in result.paths.items():
        say(f"  {kind:7s} {path}")
    return 0


def _column(name: str, columns: Any, where: str, option: str) -> str:
    if name not in columns:
        raise SpecError(where, option, f"unknown column{did_you_mean(name, list(columns))}", name)
    return name


def run_front(args: argparse.Namespace) -> int:
    from dse.results.io import read_metadata, read_table

    path = results_path(args.path, "front.parquet")
    df = read_table(path)
    meta = read_metadata(path) if path.suffix == ".parquet" else {}
    objectives = meta.get("objectives", [])
    sort = args.sort or (objectives[0][0] if objectives else None)
    if sort:
        _column(sort, df.columns, str(path), "--sort")
        ascending = True if args.ascending else not any(m == sort and up for m, up in objectives)
        df = df.sort_values(sort, ascending=ascending)
    if args.top:
        df = df.head(args.top)
    cols = args.columns or [c for c in df.columns if not c.startswith("c_") and c != "feasible"]
    for c in cols:
        _column(c, df.columns, str(path), "--columns")
    say(table_text(df[cols]))
    return 0


def run_plot(args: argparse.Namespace) -> int:
    if args.survey:
        if args.path:
            raise SpecError("dse plot", "path", "not with --survey (use --results DIR)", args.path)
        from dse.cli.validation import run_survey

        return run_survey(args)
    if not args.path:
        raise SpecError("dse plot", "path", "a results folder is required (or --survey)", None)
    from dse.results.io import read_metadata, read_table, read_units
    from dse.results.plot import default_color_by, plot_front

    folder = Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent
    trials_path, front_path = folder / "trials.parquet", folder / "front.parquet"
    out = output_file(args.out) if args.out else output_file(str(folder / "front.png"))
    trials, front = read_table(trials_path), read_table(front_path)
    meta = read_metadata(front_path)
    objectives = [tuple(o) for o in meta.get("objectives", [])]
    numeric = [c for c in trials.columns if trials[c].dtype.kind in "iuf"]
    for i, (option, value) in enumerate((("--x", args.x), ("--y", args.y))):
        if value is None:
            continue
        _column(value, numeric, str(trials_path), option)
        while len(objectives) <= i:
            objectives.append((value, True))
        objectives[i] = (value, True)
    if len(objectives) < 2:
        raise SpecError(str(front_path), "objectives", "need two objectives to plot (or --x and --y)", objectives)
    color_by = args.color_by
    if color_by is not None:
        _column(color_by, trials.columns, str(trials_path), "--color-by")
    else:
        color_by = meta.get("color_by") or default_color_by(trials)
    units = {**read_units(trials_path), **read_units(front_path)}
    plot_front(trials, front, objectives, out, title=meta.get("study", ""), color_by=color_by, units=units)
    say(f"wrote {out}")
    return 0
