"""Search throughput: trials/s end to end through ``dse.search.loop.run_study``, per sampler and storage.

    python benchmarks/search_throughput.py                     # the grid below + the headline
    python benchmarks/search_throughput.py --trials 5000 --sqlite-trials 1000 --tpe-trials 2000
    python benchmarks/search_throughput.py --skip-grid --repeat 5          # the headline only

Space: ``spaces/reference.yaml`` (llama-2-7b); objectives decode_tokens_per_s and
decode_tokens_per_j (max, max); the memory-fit constraint only. Grid: sampler (nsga2, tpe
multivariate, random, qmc) x storage x batch_size (100: batched ask/tell, one generation of
NSGA-II per batch; 1: one trial at a time). Storages:

* ``default``: no ``storage`` key: the library's default (in-memory sampling, each batch
  checkpointed with ``add_trials`` to ``optuna.journal`` in the output folder);
* ``journal``: a journal file named explicitly, ``--storage /abs/path/x.journal``;
* ``sqlite``: ``--storage sqlite:////abs/path/x.db``.

(Passed as ``load_study(..., storage=URL)``, i.e. as the CLI's ``--storage``: a spec file's own
``storage`` key must name a file inside ``results/``.)

Each cell is one fresh study in a temporary folder, timed around ``run_study`` (so it includes
opening the storage, sampling, evaluation, telling, checkpoints, and writing trials.parquet,
front.parquet and front.png). Slow cells run fewer trials (``--sqlite-trials``,
``--tpe-trials``); the table says how many. A last row times a re-run of a finished default
study (0 new trials: replay of the journal + export) to show the fixed cost per run.

Headline: ``dse run <study> --quiet`` as a subprocess (Python start-up and imports included)
for a 5,000-trial NSGA-II study (population 100 = batch_size) on the reference space with the
default storage; target < 30 s on a 2-core machine. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

SAMPLERS = ("nsga2", "tpe", "random", "qmc")
STORAGES = ("default", "journal", "sqlite")
HEADLINE_TRIALS = 5000
TARGET_S = 30.0
# NSGA-II population in every cell: = batch_size 100 (one generation per batch, optuna.md); with
# batch_size 1 it stays 100 (the library's default, population_size = batch_size, raises for 1).
POPULATION = 100


def spec(sampler: str, n_trials: int, batch_size: int, seed: int = 0) -> dict:
    raw = {"name": f"tp-{sampler}", "space": "reference",
           "objectives": [{"metric": "decode_tokens_per_s", "direction": "maximize"},
                          {"metric": "decode_tokens_per_j", "direction": "maximize"}],
           "sampler": {"name": sampler, "options": {"population_size": POPULATION} if sampler == "nsga2" else {}},
           "budget": {"n_trials": n_trials}, "batch_size": batch_size, "seed": seed}
    return raw


def storage_url(kind: str, folder: Path) -> str | None:
    if kind == "default":
        return None
    if kind == "journal":
        return str((folder / "x.journal").resolve())
    if kind == "sqlite":
        return f"sqlite:///{(folder / 'x.db').resolve()}"
    raise ValueError(kind)


def time_cell(sampler: str, storage: str, batch_size: int, n_trials: int) -> tuple[float, int]:
    from dse.loading import load_study
    from dse.search import run_study

    with tempfile.TemporaryDirectory(prefix="dse-tp-") as tmp:
        folder = Path(tmp)
        study = load_study(spec(sampler, n_trials, batch_size), output=folder / "out",
                           storage=storage_url(storage, folder))  # as --storage: a spec may only name results/
        t0 = time.perf_counter()
        result = run_study(study, progress=False)
        return time.perf_counter() - t0, result.n_trials


def time_rerun(n_trials: int) -> tuple[float, float]:
    """(first run s, re-run s) of a default-storage NSGA-II study; the re-run adds no trial."""
    from dse.loading import load_study
    from dse.search import run_study

    with tempfile.TemporaryDirectory(prefix="dse-tp-") as tmp:
        raw = spec("nsga2", n_trials, 100)
        t0 = time.perf_counter()
        run_study(load_study(raw, output=Path(tmp) / "out"), progress=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_study(load_study(raw, output=Path(tmp) / "out"), progress=False)
        return first, time.perf_counter() - t0


def dse_command() -> list[str]:
    exe = Path(sys.executable).parent / "dse"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dse")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from dse.cli.main import main; sys.exit(main())"]


def headline(repeat: int, n_trials: int) -> None:
    import yaml

    cmd = dse_command()
    startup = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd + ["--version"], check=True, capture_output=True)
        startup.append(time.perf_counter() - t0)
    walls, last = [], ""
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="dse-head-") as tmp:
            path = Path(tmp) / "headline.yaml"
            raw = spec("nsga2", n_trials, 100)
            raw["name"] = "headline"
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            t0 = time.perf_counter()
            proc = subprocess.run(cmd + ["run", str(path), "--quiet", "--output", str(Path(tmp) / "out")],
                                  capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            last = (proc.stdout.strip().splitlines() or [""])[0] if proc.returncode == 0 else \
                f"FAILED rc={proc.returncode}: {proc.stderr.strip()[-500:]}"
    print(f"\nHeadline: `dse run` ({n_trials:,}-trial NSGA-II, population 100 = batch_size, reference space, "
          f"default storage) as a subprocess, {repeat} runs on {os.cpu_count()} cores")
    print("  wall s: " + ", ".join(f"{w:.1f}" for w in walls) + f"  -> median {statistics.median(walls):.1f} s, "
          f"min {min(walls):.1f} s (target < {TARGET_S:.0f} s); {n_trials / statistics.median(walls):,.0f} trials/s")
    print(f"  of which Python start-up + CLI import (`dse --version`): median {statistics.median(startup):.2f} s")
    print(f"  dse said: {last}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000, help="trials per cell")
    ap.add_argument("--sqlite-trials", type=int, default=100,
                    help="trials per SQLite cell (50-200 ms a trial; NSGA-II with 100 is its random first generation)")
    ap.add_argument("--tpe-trials", type=int, default=1000, help="trials per TPE cell (its cost grows with trials)")
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    ap.add_argument("--storages", nargs="+", default=list(STORAGES), choices=STORAGES)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1])
    ap.add_argument("--headline-trials", type=int, default=HEADLINE_TRIALS)
    ap.add_argument("--repeat", type=int, default=3, help="headline runs")
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument("--skip-headline", action="store_true")
    args = ap.parse_args()
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # QMCSampler is experimental
    t_start = time.perf_counter()

    if not args.skip_grid:
        time_cell("random", "default", 100, 100)  # warm imports and caches outside the timed cells
        rows = []
        for storage in args.storages:
            for sampler in args.samplers:
                for batch in args.batch_sizes:
                    n = args.trials
                    if storage == "sqlite":
                        n = min(n, args.sqlite_trials)
                    if sampler == "tpe":
                        n = min(n, args.tpe_trials)
                    wall, done = time_cell(sampler, storage, batch, n)
                    rows.append((storage, sampler, batch, done, wall))
                    print(f"  {storage:8s} {sampler:7s} batch {batch:4d}: {done:6,} trials {wall:7.2f} s",
                          file=sys.stderr, flush=True)
        print(f"\nSearch throughput through run_study (reference space; each cell a fresh study; "
              f"{os.cpu_count()} cores)")
        print(f"{'storage':8s} {'sampler':16s} {'batch':>5s} {'trials':>7s} {'wall s':>8s} {'trials/s':>9s} "
              f"{'ms/trial':>9s}")
        for storage, sampler, batch, done, wall in rows:
            name = {"tpe": "tpe (multivar.)", "nsga2": f"nsga2 (pop {POPULATION})"}.get(sampler, sampler)
            print(f"{storage:8s} {name:16s} {batch:5d} {done:7,} {wall:8.2f} {done / wall:9,.0f} "
                  f"{1e3 * wall / done:9.2f}")
        first, rerun = time_rerun(args.trials)
        print(f"Fixed cost: a default-storage NSGA-II study of {args.trials:,} trials took {first:.2f} s; running it "
              f"again (0 new trials: journal replay + parquet/png export) {rerun:.2f} s")

    if not args.skip_headline:
        headline(args.repeat, args.headline_trials)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
