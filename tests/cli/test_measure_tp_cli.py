"""``dse measure --tp``: flags reach the TP measurement; bad combinations are one-line errors (no GPU needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _dse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dse", *args], capture_output=True, text=True)


@pytest.mark.parametrize(("argv", "expect"), [
    (["--tp", "2", "--device", "cpu"], "--tp needs CUDA GPUs"),
    (["--allreduce-out", "a.csv"], "needs --tp"),
    (["--tp", "0"], "must be"),
])
def test_bad_tp_flags_are_one_line_errors(tmp_path, argv, expect):
    proc = _dse("measure", "--model", "llama-3-8b", "--out", str(tmp_path / "m.csv"), *argv)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert not (tmp_path / "m.csv").exists()


def test_help_documents_tp():
    out = _dse("measure", "--help").stdout
    assert "--tp N [N ...]" in out and "NCCL" in out and "--allreduce-out" in out
