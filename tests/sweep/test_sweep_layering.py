"""Layering of the sweep package: it never imports the search package or Optuna."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SWEEP = Path(__file__).resolve().parents[2] / "dse" / "sweep"


def test_importing_the_sweep_loads_no_optuna():
    code = ("import sys, dse.sweep.engine, dse.sweep.study, dse.runtime\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'optuna' or m.startswith('dse.search')]\n"
            "assert not bad, bad\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_no_sweep_module_imports_search_even_lazily():
    for path in SWEEP.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith(("dse.search", "optuna"))], (path.name, names)
