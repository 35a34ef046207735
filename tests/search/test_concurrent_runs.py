"""One run at a time per output folder: a second `dse run` is refused with one line; a killed
run's stale lock and temporary files are removed by the next."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from dse.sweep.lock import output_lock

ROOT = Path(__file__).resolve().parents[2]


def study_file(tmp_path: Path, sampler: object, n_trials: int = 400) -> Path:
    spec = yaml.safe_load((ROOT / "studies" / "datacenter-70b.yaml").read_text())
    spec.update(name="concurrent", space=str(ROOT / "spaces" / "datacenter.yaml"), sampler=sampler,
                budget={"n_trials": n_trials})
    path = tmp_path / "concurrent.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def dse(*args: str) -> list[str]:
    return [sys.executable, "-m", "dse", *args]


def test_a_second_run_into_a_held_output_is_refused_with_one_line(tmp_path):
    out = tmp_path / "out"
    path = study_file(tmp_path, {"name": "nsga2", "options": {"population_size": 50}})
    for command in ("run", "sweep"):
        with output_lock(out):  # another run holds the folder
            run = subprocess.run(dse(command, str(path), "--output", str(out), "--quiet"), cwd=ROOT,
                                 capture_output=True, text=True, timeout=300)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "in use by another dse run" in lines[0]
        assert f"(pid {os.getpid()})" in lines[0]
        assert not (out / "trials.parquet").exists()


def test_two_concurrent_runs_of_one_study_leave_one_budget(tmp_path):
    out = tmp_path / "out"
    path = study_file(tmp_path, {"name": "nsga2", "options": {"population_size": 50}}, n_trials=1500)
    args = dse("run", str(path), "--output", str(out), "--quiet")
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert len(refused.strip().splitlines()) == 1 and "in use by another dse run" in refused
    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials["trial"]) == list(range(1500))  # one budget of distinct designs, none twice


def test_stale_lock_and_temporary_files_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".trials.parquet.x1y2.tmp", out / ".front.png.abc.tmp", out / "optuna.journal.lock3f.rename"]
    for p in stale:
        p.write_bytes(b"half")
    (out / "optuna.journal.lock").symlink_to(out / "optuna.journal")  # Optuna's journal lock, left held
    keep = out / "notes.txt"
    keep.write_text("mine")
    path = study_file(tmp_path, {"name": "random"}, n_trials=50)
    run = subprocess.run(dse("run", str(path), "--output", str(out), "--quiet"), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert not [p for p in stale if p.exists()] and not (out / "optuna.journal.lock").is_symlink()
    assert keep.read_text() == "mine"
    assert "removed stale files of a killed run" in run.stdout and ".trials.parquet.x1y2.tmp" in run.stdout
    assert len(pd.read_parquet(out / "trials.parquet")) == 50
