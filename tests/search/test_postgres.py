"""PostgreSQL workers that race and ride out trouble: processes starting together on a fresh
database, two workers failing one stale trial, a server restart mid-run; and the retry rule.

The server tests need DSE_TEST_POSTGRES_URL (`.ci/run` starts a server and sets it); the
restart test also needs the server's data folder (DSE_TEST_POSTGRES_DATA, default the one
`.ci/start-postgres.sh` uses) and permission to run its pg_ctl. Without a server they are
skipped locally and fail in CI (CI=true).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from dse.search.budget import tell_quietly
from dse.search.retry import with_retry
from dse.spec.errors import DseError

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("DSE_TEST_POSTGRES_URL")
PG_DATA = os.environ.get("DSE_TEST_POSTGRES_DATA", "/tmp/dse-pg-data")
needs_pg = pytest.mark.skipif(not PG_URL and os.environ.get("CI") != "true",
                              reason="no PostgreSQL (set DSE_TEST_POSTGRES_URL; .ci/run starts one)")


class FakeOperationalError(Exception):
    """Stands for the driver's error: transient by its module and name, as psycopg's is."""


FakeOperationalError.__module__ = "psycopg"
FakeOperationalError.__name__ = "OperationalError"


def test_a_transient_error_is_retried_until_it_clears():
    calls = []

    def step() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise FakeOperationalError("server closed the connection unexpectedly")
        return "done"

    delays: list[float] = []
    assert with_retry(step, what="a batch", url="postgresql://u:pw@h/db", sleep=delays.append) == "done"
    assert delays == [0.2, 0.4, 0.8]  # exponential back-off


def test_a_lasting_error_gives_one_line_without_the_password():
    def step() -> None:
        raise FakeOperationalError("connection refused\nmore detail")

    with pytest.raises(DseError) as err:
        with_retry(step, what="a batch", url="postgresql://u:s3cret@h/db", retry_for_s=0.0, sleep=lambda s: None)
    text = str(err.value)
    assert "\n" not in text and "s3cret" not in text and "a batch kept failing" in text
    assert "OperationalError: connection refused" in text and "run the same command again" in text
    with pytest.raises(ValueError):  # not a database error: not retried
        with_retry(lambda: int("x"), what="a batch", url="", sleep=lambda s: None)


def fresh_database() -> str:
    """A new, empty database on the test server; its URL."""
    import psycopg

    name = f"dse_{uuid.uuid4().hex[:12]}"
    base = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return PG_URL.rsplit("/", 1)[0] + f"/{name}"


def study_file(tmp_path: Path, n_trials: int, sampler: object = "random") -> tuple[Path, str]:
    name = f"pg{uuid.uuid4().hex[:10]}"
    spec = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    spec.update(name=name, budget={"n_trials": n_trials}, batch_size=8, space=str(ROOT / "spaces" / "quickstart.yaml"),
                sampler=sampler)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, name


def counts(name: str, url: str) -> tuple[Counter, int]:
    """(trial states, distinct designs among the complete trials)."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    designs = {tuple(sorted(t.params.items())) for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    return Counter(t.state.name for t in trials), len(designs)


def dse_run(path: Path, url: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dse", "run", str(path), "--storage", url, "--output", str(out),
                             "--quiet", *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@needs_pg
@pytest.mark.slow
def test_processes_started_together_on_a_fresh_database_all_join(tmp_path):
    url = fresh_database()
    path, name = study_file(tmp_path, n_trials=60)
    procs = [dse_run(path, url, tmp_path / f"out{i}") for i in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "Traceback" not in err, err
    states, distinct = counts(name, url)
    assert distinct == 60 and states.get("RUNNING", 0) == 0


@needs_pg
def test_two_workers_failing_one_stale_trial_both_carry_on():
    name = f"race{uuid.uuid4().hex[:10]}"
    a = optuna.create_study(study_name=name, storage=PG_URL, directions=["maximize"])
    b = optuna.load_study(study_name=name, storage=PG_URL)
    trial = a.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert tell_quietly(b, trial.number, state=optuna.trial.TrialState.FAIL)  # b judged it stale first
    assert not tell_quietly(a, trial, values=[0.5], constraints=[0.0])  # its owner loses, without an exception
    tell_quietly(a, trial.number, state=optuna.trial.TrialState.FAIL)  # already finished: skipped, no exception


def pg_ctl(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("pg_ctl") or (sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [""])[-1]
    command = [binary, "-D", PG_DATA, *args]
    if os.geteuid() == 0:  # the server runs as postgres (.ci/start-postgres.sh)
        command = ["su", "postgres", "-c", " ".join(command)]
    # the server pg_ctl starts must not inherit our pipes (it would hold them open): no capture
    return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=120)


@needs_pg
@pytest.mark.slow
def test_workers_ride_out_a_server_restart(tmp_path):
    if not Path(PG_DATA, "PG_VERSION").exists() or pg_ctl("status").returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot control the test server (DSE_TEST_POSTGRES_DATA={PG_DATA})")
        pytest.skip(f"the test server's data folder is not {PG_DATA} (set DSE_TEST_POSTGRES_DATA)")
    url = PG_URL
    path, name = study_file(tmp_path, n_trials=200)
    procs = [dse_run(path, url, tmp_path / "out", "--stale-after", "10") for _ in range(3)]
    deadline = time.time() + 300
    while time.time() < deadline:  # restart the server once the study is under way
        try:
            if counts(name, url)[0]["COMPLETE"] >= 40:
                break
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.2)
    restart = pg_ctl("restart", "-m", "immediate", "-w", "-l", f"{PG_DATA}/server.log")  # as a crash: no checkpoint
    assert restart.returncode == 0
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "Traceback" not in err, err
        assert "finished:" in out
    states, distinct = counts(name, url)
    assert distinct == 200 and states.get("RUNNING", 0) == 0  # none left RUNNING by the restart
