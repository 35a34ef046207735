"""Aggregate trials/s of one study run by 1, 2 and 4 worker processes on shared storages.

Runs `dse run STUDY --workers N --storage URL` (NSGA-II, the quickstart space) as a
subprocess for each storage and worker count, each in a fresh study, and prints wall
time, trials/s and the trial states found afterwards. PostgreSQL needs a server:
`bash .ci/start-postgres.sh` prints a URL for --postgres.

    python benchmarks/workers.py --trials 400 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/dse
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(storage: str, workers: int, trials: int, batch: int, tmp: Path) -> tuple[float, Counter]:
    name = f"bench{uuid.uuid4().hex[:8]}"
    spec = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    spec.update(name=name, budget={"n_trials": trials}, batch_size=batch,
                space=str(ROOT / "spaces" / "quickstart.yaml"))
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dse", "run", str(path), "--storage", storage, "--workers", str(workers),
                    "--output", str(tmp / name), "--quiet"], check=True, cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - start
    states = Counter(t.state.name for t in optuna.load_study(study_name=name, storage=storage).get_trials())
    return wall, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8, help="trials in flight per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--postgres", help="PostgreSQL URL (skipped when absent)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        storages = [] if args.no_sqlite else [("sqlite", f"sqlite:///{tmp / 'bench.db'}")]
        if args.postgres:
            storages.append(("postgresql", args.postgres))
        print(f"{args.trials} trials of the quickstart study (NSGA-II), {args.batch} in flight per worker")
        print(f"{'storage':<11} {'workers':>7} {'wall_s':>8} {'trials/s':>9}  states")
        for label, url in storages:
            for n in args.workers:
                wall, states = run(url, n, args.trials, args.batch, tmp)
                print(f"{label:<11} {n:>7} {wall:>8.1f} {args.trials / wall:>9.1f}  {dict(states)}", flush=True)


if __name__ == "__main__":
    main()
