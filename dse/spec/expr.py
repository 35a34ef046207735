"""A small, safe arithmetic expression language for derived knobs and conditions.

Expressions such as ``n_stacks * stack_bw_bytes_per_s`` or ``where(batch > 8, 0.7, 0.8)``
are parsed with :mod:`ast` and evaluated on numpy arrays by walking a whitelist of
node types. Nothing reaches Python: no ``eval``, no attributes, subscripts, strings
(except a categorical knob compared to one of its choices), lambdas or
comprehensions; constants are floats, so ``10**10**10`` is ``inf`` (then rejected as
non-finite by the caller), never a giant integer, and ``1/0`` is ``inf``, never an
exception; comparisons and ``and``/``or``/``not`` give 1.0 or 0.0.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from dse.spec.errors import SpecError, did_you_mean

MAX_CHARS = 500
MAX_NODES = 200

_BINOPS: dict[type, Callable] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: np.true_divide,
    ast.FloorDiv: np.floor_divide, ast.Mod: np.mod, ast.Pow: np.power,
}
_CMPOPS: dict[type, Callable] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
FUNCTIONS: dict[str, tuple[Callable, int, int]] = {  # name -> (function, min args, max args)
    "min": (np.minimum, 2, 2), "max": (np.maximum, 2, 2), "where": (np.where, 3, 3),
    "clip": (np.clip, 3, 3), "abs": (np.abs, 1, 1), "sqrt": (np.sqrt, 1, 1), "exp": (np.exp, 1, 1),
    "log": (np.log, 1, 1), "log2": (np.log2, 1, 1), "log10": (np.log10, 1, 1),
    "ceil": (np.ceil, 1, 1), "floor": (np.floor, 1, 1), "round": (np.round, 1, 1),
}


@dataclass(frozen=True)
class Expr:
    """A parsed expression: its text, the names it reads, the checked AST, and the file and
    key it came from (named by evaluation errors)."""

    text: str
    names: frozenset[str]
    tree: ast.Expression
    file: str = ""
    key: str = ""

    def __call__(self, env: Mapping[str, object], categories: Mapping[str, list] | None = None) -> np.ndarray:
        """Evaluate on ``env`` (name -> array or scalar); ``categories`` maps a categorical
        name to the names its codes in ``env`` index, so ``mem_technology == "hbm3"`` compares
        codes, and a name not in the list is an error, never a silent false."""
        try:
            with np.errstate(all="ignore"):
                return _Eval(env, categories or {}).visit(self.tree.body)
        except SpecError as exc:
            raise SpecError(self.file, self.key, exc.rule, exc.value) from None


def parse(text: str, *, file: str = "", key: str = "") -> Expr:
    """Parse and check ``text``; SpecError (file, key, rule, text) on anything not allowed."""
    if not isinstance(text, (str, int, float)) or isinstance(text, bool):
        raise SpecError(file, key, "expression must be a string or a number", text)
    text = str(text)
    if len(text) > MAX_CHARS:
        raise SpecError(file, key, f"expression longer than {MAX_CHARS} characters", text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise SpecError(file, key, f"invalid expression: {getattr(exc, 'msg', exc)}", text) from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise SpecError(file, key, f"expression has more than {MAX_NODES} nodes", text)
    bad = next((node for node in nodes if not isinstance(node, _ALLOWED)), None)
    if bad is not None:  # first, so that `f.__class__()` says Attribute, not "unknown function"
        raise SpecError(file, key, f"expression may not use {type(bad).__name__}", text)
    names = set()
    for node in nodes:
        _check_node(node, file, key, text)
        if isinstance(node, ast.Name) and not _is_call_target(node, tree):
            names.add(node.id)
    return Expr(text, frozenset(names), tree, file, key)


def _is_call_target(name: ast.Name, tree: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(tree))


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp, ast.Call,
            ast.Name, ast.Constant, ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd,
            *_BINOPS, *_CMPOPS)


def _check_node(node: ast.AST, file: str, key: str, text: str) -> None:
    if isinstance(node, ast.Name) and node.id.startswith("_"):
        raise SpecError(file, key, "names may not start with '_'", text)
    if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or
                                           not isinstance(node.value, (int, float, str))):
        raise SpecError(file, key, f"constant {node.value!r} not allowed", text)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not _finite(node.value):
        raise SpecError(file, key, "number out of the float range", text)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            fname = getattr(node.func, "id", type(node.func).__name__)
            raise SpecError(file, key, f"unknown function {fname!r} (allowed: {', '.join(sorted(FUNCTIONS))})", text)
        _fn, lo, hi = FUNCTIONS[node.func.id]
        if node.keywords or not lo <= len(node.args) <= hi:
            raise SpecError(file, key, f"{node.func.id}() takes {lo} argument(s)", text)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _truth(value: object) -> object:
    """A truth value as 1.0/0.0, so that arithmetic on it works (numpy refuses ``-`` on booleans)."""
    return np.multiply(value, 1.0)


class _Eval(ast.NodeVisitor):
    def __init__(self, env: Mapping[str, object], categories: Mapping[str, list]) -> None:
        self.env = env
        self.categories = categories

    def generic_visit(self, node: ast.AST) -> np.ndarray:  # pragma: no cover - parse() rejects these
        raise SpecError("", "", f"expression may not use {type(node).__name__}", type(node).__name__)

    def visit_Constant(self, node: ast.Constant) -> object:
        if isinstance(node.value, str):
            raise SpecError("", "", "strings are only allowed compared with a categorical knob", node.value)
        return float(node.value)

    def visit_Name(self, node: ast.Name) -> object:
        try:
            return self.env[node.id]
        except KeyError:
            raise SpecError("", "", f"unknown name in expression{did_you_mean(node.id, self.env)}",
                            node.id) from None

    def visit_BinOp(self, node: ast.BinOp) -> object:
        return _BINOPS[type(node.op)](self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> object:
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return _truth(np.logical_not(value))
        return -value if isinstance(node.op, ast.USub) else value

    def visit_BoolOp(self, node: ast.BoolOp) -> object:
        fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        values = [self.visit(v) for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = fn(out, v)
        return _truth(out)

    def visit_IfExp(self, node: ast.IfExp) -> object:
        return np.where(self.visit(node.test), self.visit(node.body), self.visit(node.orelse))

    def visit_Call(self, node: ast.Call) -> object:
        fn = FUNCTIONS[node.func.id][0]  # type: ignore[attr-defined]
        return fn(*(self.visit(a) for a in node.args))

    def visit_Compare(self, node: ast.Compare) -> object:
        out = None
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            left, right = self._operand(left_node, right_node), self._operand(right_node, left_node)
            part = _CMPOPS[type(op)](left, right)
            out = part if out is None else np.logical_and(out, part)
            left_node = right_node
        return _truth(out)

    def _operand(self, node: ast.AST, other: ast.AST) -> object:
        """A string constant compared with a categorical name becomes that choice's code."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if isinstance(other, ast.Name) and other.id in self.categories:
                choices = self.categories[other.id]
                if node.value not in choices:
                    hint = did_you_mean(node.value, choices)
                    raise SpecError("", other.id, f"{node.value!r} is not one of {other.id}'s names {choices}{hint}",
                                    node.value)
                return float(choices.index(node.value))
            raise SpecError("", "", "strings are only allowed compared with a categorical knob", node.value)
        return self.visit(node)


def order_derived(exprs: Mapping[str, Expr], known: set[str], *, file: str = "") -> list[str]:
    """Names of ``exprs`` in dependency order; SpecError on a cycle or an unknown name."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise SpecError(file, f"derived.{name}", "circular definition", cycle)
        state[name] = 1
        for dep in sorted(exprs[name].names):
            if dep in exprs:
                visit(dep, path + [name])
            elif dep not in known:
                hint = did_you_mean(dep, sorted(known | set(exprs)))
                raise SpecError(file, f"derived.{name}", f"unknown name {dep!r}{hint}", exprs[name].text)
        state[name] = 2
        order.append(name)

    for name in exprs:
        visit(name, [])
    return order
