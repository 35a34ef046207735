"""Many workers, one study: PostgreSQL with 4 processes, SIGKILL of a worker, journal resume.

The PostgreSQL tests need a server: `.ci/run` starts one and sets DSE_TEST_POSTGRES_URL.
Without it they are skipped locally, and fail in CI (CI=true) rather than pass silently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from dse.results.pareto import pareto_mask

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("DSE_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(not PG_URL and os.environ.get("CI") != "true",
                              reason="no PostgreSQL (set DSE_TEST_POSTGRES_URL; .ci/run starts one)")


NSGA2 = {"name": "nsga2", "options": {"population_size": 100}}


LARGE = {  # 165,888 designs, fixed here (the shipped spaces evolve): room for 3,000 distinct ones
    "name": "large", "model": "llama-3-70b",
    "knobs": {"platform": {"choices": ["a100-sxm-80gb", "h100-sxm", "h200-sxm", "mi300x", "gaudi2", "tpu-v5e"]},
              "w_bits": {"choices": [4, 8, 16]}, "a_bits": {"choices": [8, 16]}, "kv_bits": {"choices": [4, 8, 16]},
              "nm_sparse": {"choices": [0, 1]}, "batch": {"low": 1, "high": 256, "log": True},
              "in_len": {"choices": [512, 2048, 8192]}},
    "fixed": {"out_len": 512},
}


def study_file(tmp_path: Path, n_trials: int, batch_size: int = 20, large: bool = False) -> tuple[Path, str]:
    """The quickstart study searched with NSGA-II (its default sampler would sweep), or the
    same objectives over :data:`LARGE` with latency limits."""
    name = f"w{uuid.uuid4().hex[:10]}"
    spec = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    spec.update(name=name, budget={"n_trials": n_trials}, batch_size=batch_size, sampler=NSGA2,
                space=str(ROOT / "spaces" / "quickstart.yaml"),
                objectives=[{"metric": "decode_tokens_per_s"}, {"metric": "decode_tokens_per_j"}])
    if large:
        spec.update(space=LARGE, model="llama-3-70b", constraints=[{"metric": "tpot_s", "max": 0.1},
                                                                   {"metric": "ttft_s", "max": 10.0}])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, name


def distinct_complete(name: str, storage) -> int:
    """Distinct designs among a stored study's complete trials (the budget counts these)."""
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return len({tuple(sorted(t.params.items())) for t in trials})


def dse_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dse", *args]


def states(name: str, storage) -> Counter:
    return Counter(t.state.name for t in optuna.load_study(study_name=name, storage=storage).get_trials())


def assert_front_is_brute_force(out: Path) -> None:
    trials = pd.read_parquet(out / "trials.parquet")
    front = pd.read_parquet(out / "front.parquet")
    feasible = trials[trials["feasible"]]
    values = feasible[["decode_tokens_per_s", "decode_tokens_per_j"]].to_numpy()
    brute = {tuple(v) for i, v in enumerate(values) if not any(
        np.all(o >= v) and np.any(o > v) for o in values)}
    assert {tuple(v) for v in front[["decode_tokens_per_s", "decode_tokens_per_j"]].to_numpy()} == brute
    assert pareto_mask(values, [True, True]).sum() >= len(front)


@needs_pg
@pytest.mark.slow
def test_four_workers_on_postgres(tmp_path):
    path, name = study_file(tmp_path, n_trials=160, batch_size=8)
    out = tmp_path / "out"
    run = subprocess.run(dse_cmd("run", str(path), "--storage", PG_URL, "--workers", "4", "--output", str(out),
                                 "--quiet"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name=name, storage=PG_URL)
    trials = study.get_trials(deepcopy=False)
    complete = sorted(t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert distinct_complete(name, PG_URL) == 160  # the budget: 160 distinct designs, none lost
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    exported = pd.read_parquet(out / "trials.parquet")
    assert len(exported) == 160 and set(exported["trial"]) <= set(complete)  # one row per distinct design
    assert_front_is_brute_force(out)
    assert "secret" not in run.stdout + run.stderr


@needs_pg
@pytest.mark.slow
def test_sigkill_of_a_worker_loses_nothing(tmp_path):
    path, name = study_file(tmp_path, n_trials=200, batch_size=8)
    out = tmp_path / "out"
    args = dse_cmd("run", str(path), "--storage", PG_URL, "--output", str(out), "--quiet", "--stale-after", "3")
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    deadline = time.time() + 120
    while time.time() < deadline:  # kill one worker once the study is under way
        try:
            if states(name, PG_URL)["COMPLETE"] >= 40:
                break
        except KeyError:
            pass
        time.sleep(0.2)
    procs[0].send_signal(signal.SIGKILL)
    for p in procs[1:]:
        p.wait(timeout=600)
        assert p.returncode == 0, p.stderr.read().decode()
    counts = states(name, PG_URL)
    assert distinct_complete(name, PG_URL) == 200 <= counts["COMPLETE"]
    assert counts.get("RUNNING", 0) == 0
    assert len(pd.read_parquet(out / "trials.parquet")) == 200


@pytest.mark.slow
def test_default_storage_resumes_after_sigkill(tmp_path):
    path, name = study_file(tmp_path, n_trials=3000, batch_size=100, large=True)
    out = tmp_path / "out"
    args = dse_cmd("run", str(path), "--output", str(out), "--quiet")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = out / "optuna.journal"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or journal.stat().st_size < 200_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    saved = states(name, storage)["COMPLETE"]
    assert 0 < saved < 3000
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"({3000 - saved} new" in again.stdout, again.stdout  # resumed, not restarted
    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials["trial"]) == list(range(3000))  # 3000 distinct designs, numbered as the journal does


@pytest.mark.slow
def test_ctrl_c_saves_what_finished_and_the_rerun_resumes(tmp_path):
    path, name = study_file(tmp_path, n_trials=3000, batch_size=100, large=True)
    out = tmp_path / "out"
    args = dse_cmd("run", str(path), "--output", str(out), "--quiet")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "optuna.journal"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or journal.stat().st_size < 200_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted after" in stdout
    saved = pd.read_parquet(out / "trials.parquet")
    assert 0 < len(saved) < 3000
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert sorted(pd.read_parquet(out / "trials.parquet")["trial"]) == list(range(3000))
