"""A damaged journal: repaired with a note naming what was dropped, never more rows than
distinct designs, no traceback; a torn last line (a killed writer) repaired silently."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dse.loading import load_study
from dse.search import run_study
from dse.search.journal import repair_journal

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"name": "j", "platform": "h100-sxm", "model": "llama-2-7b",
        "space": {"knobs": {"batch": {"low": 1, "high": 256, "log": True}, "w_bits": {"choices": [4, 8, 16]},
                            "kv_bits": {"choices": [8, 16]}}},
        "sampler": {"name": "nsga2", "options": {"population_size": 20}}, "budget": {"n_trials": 80},
        "batch_size": 20, "seed": 0}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("journal") / "out"
    run_study(load_study(SPEC, output=out), progress=False)
    return out


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def zero_block(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + b"\0" * 4096 + data[mid + 4096:]


def random_bytes(data: bytes) -> bytes:
    rng = random.Random(1)
    mid = len(data) // 3
    return data[:mid] + bytes(rng.randrange(256) for _ in range(300)) + data[mid:]


def edit_trial(key: str, value: object):
    def edit(data: bytes) -> bytes:
        ls = lines(data)
        i = next(i for i, line in enumerate(ls) if b'"op_code":4' in line)  # the first trial
        log = json.loads(ls[i])
        if key == "values":
            log["values"] = value
        else:
            log["params"][key] = value
        ls[i] = json.dumps(log).encode()
        return b"\n".join(ls)
    return edit


def duplicate_line(data: bytes) -> bytes:
    ls = lines(data)
    ls.insert(20, ls[19])
    return b"\n".join(ls)


def garbage_line(data: bytes) -> bytes:
    ls = lines(data)
    ls.insert(30, b"this is not json")
    return b"\n".join(ls)


@pytest.mark.parametrize("damage, named", [
    (zero_block, "unreadable line"), (random_bytes, "unreadable line"), (garbage_line, "unreadable line"),
    (duplicate_line, "1 duplicated line(s) (line 21)"),  # inserted after line 20
    (edit_trial("batch", 999.0), "parameter outside the space or a NaN value, kept as failed"),
    (edit_trial("values", [float("nan"), 1.0]), "NaN value, kept as failed"),
])
def test_a_damaged_journal_is_repaired_with_a_note(finished, tmp_path, damage, named):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    journal = out / "optuna.journal"
    journal.write_bytes(damage(journal.read_bytes()))
    res = run_study(load_study(SPEC, output=out), progress=False)
    note = next(n for n in res.notes if "optuna.journal was damaged" in n)
    assert named in note and "kept as optuna.journal.damaged" in note
    assert (out / "optuna.journal.damaged").exists()
    trials = pd.read_parquet(out / "trials.parquet")
    assert res.n_trials == len(trials) == 80 and trials["trial"].is_unique  # the budget, each design once
    assert not trials[["batch", "w_bits", "kv_bits"]].duplicated().any()
    assert repair_journal(journal) == []  # the repaired file is sound


def test_a_damaged_journal_gives_no_traceback_on_the_command_line(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    (out / "optuna.journal").write_bytes(zero_block((out / "optuna.journal").read_bytes()))
    study = tmp_path / "j.yaml"
    study.write_text(yaml.safe_dump(SPEC))
    run = subprocess.run([sys.executable, "-m", "dse", "run", str(study), "--output", str(out), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "optuna.journal was damaged: dropped" in run.stdout


def test_a_torn_last_line_is_dropped_silently(tmp_path):
    path = tmp_path / "x.journal"
    path.write_bytes(b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[2]}\n{"op_code":4,"wor')
    assert repair_journal(path) == []
    assert path.read_bytes().endswith(b"[2]}\n") and not (tmp_path / "x.journal.damaged").exists()
