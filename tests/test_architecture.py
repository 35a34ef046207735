"""The layer contract of DESIGN.md section 2, checked on the source (every import, lazy ones included).

Layers, from the top: the ``dse`` facade (``dse/__init__.py``, which nothing inside imports) -> cli ->
validation -> search -> sweep -> results -> api -> model -> spec.
A module may import its own layer and the layers below it; no import cycle exists among
modules (imports inside functions count, ``if TYPE_CHECKING:`` blocks do not); Optuna only
in ``dse.search``, pyarrow only in ``dse.results``, torch only in the measurement modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dse"
LAYERS = ("spec", "model", "api", "results", "sweep", "search", "validation", "cli", "facade")
# top-level modules and the layer they belong to
TOP_LEVEL = {"dse._version": "spec", "dse.api": "api", "dse.loading": "api", "dse.explain": "api",
             "dse.quality_table": "api", "dse.model_data": "api", "dse.runtime": "api",
             "dse": "facade", "dse.__main__": "cli", "dse.testing": "api"}
ONLY_IN = {"optuna": ("dse.search",), "pyarrow": ("dse.results",),
           "numba": ("dse.model",), "llvmlite": ("dse.model",),
           "torch": ("dse.validation.measure", "dse.validation.measure_decoder", "dse.validation.measure_gpu",
                     "dse.validation.measure_graphs", "dse.validation.tp_decoder", "dse.validation.measure_tp")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) > 1 and parts[1] == "testing":
        return "api"
    raise AssertionError(f"{module} is in no layer: add it to a layer package")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str) -> set[str]:
    """Every module this file imports (absolute names), skipping ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                   else []))
            found.add(base)
            for alias in node.names:  # `from dse.model import perf` imports the module dse.model.perf
                found.add(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


GRAPH = _graph()
EXTERNAL = {name: _imports(path, name) for name, path in ((_module_name(p), p) for p in ROOT.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module: str) -> None:
    mine = LAYERS.index(_layer(module))
    for target in GRAPH[module]:
        assert LAYERS.index(_layer(target)) <= mine, f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"


def test_no_import_cycles() -> None:
    """Tarjan-free check: depth-first search for a back edge over the module graph."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            dfs(node)


@pytest.mark.parametrize("package", sorted(ONLY_IN))
def test_heavy_dependencies_stay_in_their_layer(package: str) -> None:
    users = sorted(m for m, imports in EXTERNAL.items() if any(i == package or i.startswith(package + ".")
                                                                for i in imports))
    allowed = ONLY_IN[package]
    stray = [m for m in users if not any(m == a or m.startswith(a + ".") for a in allowed)]
    assert not stray, f"{package} imported outside {allowed}: {stray}"


def test_import_dse_loads_no_heavy_package() -> None:
    # scipy's top-level package comes with numba (the model's kernels, ~12 ms); its heavy parts must not
    code = ("import sys, dse, dse.cli.main, dse.sweep.engine; "
            "print(sorted(m for m in ('optuna', 'scipy.optimize', 'scipy.stats', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_contract_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: a model module importing the API is reported."""
    bad = tmp_path / "x.py"
    bad.write_text("from dse.api import evaluate\n\ndef f():\n    import dse.search.run\n")
    found = _imports(bad, "dse.model.x")
    assert {"dse.api", "dse.search.run"} <= found
    assert LAYERS.index(_layer("dse.api")) > LAYERS.index(_layer("dse.model.x"))
