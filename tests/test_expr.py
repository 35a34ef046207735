"""The safe expression language: arithmetic on arrays, and nothing that reaches Python."""

from __future__ import annotations

import numpy as np
import pytest

from dse.spec.errors import SpecError
from dse.spec.expr import order_derived, parse


def test_arithmetic_functions_and_conditions_on_arrays():
    env = {"n": np.array([1.0, 4.0]), "bw": 2.0, "batch": np.array([1.0, 16.0])}
    assert parse("n * bw + 1")(env).tolist() == [3.0, 9.0]
    assert parse("where(batch > 8, 0.7, 0.8)")(env).tolist() == [0.8, 0.7]
    assert parse("max(n, 2) ** 2")(env).tolist() == [4.0, 16.0]
    assert parse("0.5 if n < 2 else 1.5")(env).tolist() == [0.5, 1.5]
    assert parse("n >= 1 and n < 3")(env).tolist() == [True, False]
    assert parse("sqrt(16) + log2(8) + floor(2.7) + ceil(2.1) + abs(-1) + clip(5, 0, 2)")({}) == 15.0


def test_categorical_compared_with_its_choice_names():
    cats = {"mem_technology": ["gddr6", "hbm3"]}
    env = {"mem_technology": np.array([0.0, 1.0, 1.0])}
    assert parse('mem_technology == "hbm3"')(env, cats).tolist() == [False, True, True]
    with pytest.raises(SpecError, match="not one of"):
        parse('mem_technology == "hbm9"')(env, cats)
    with pytest.raises(SpecError) as err:  # one line: file, key, the name, the choices, a hint
        parse('"hbm33" != mem_technology', file="s.yaml", key="derived.x")(env, cats)
    assert str(err.value) == ("s.yaml: derived.x: 'hbm33' is not one of mem_technology's names ['gddr6', 'hbm3']; "
                              "did you mean 'hbm3'? (got 'hbm33')")


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "x.__class__", "(1).real", "[1, 2]", "{'a': 1}", "lambda: 1",
    "a[0]", "open('/etc/passwd')", "getattr(x, 'y')", "eval('1')", "f(x)", "x if True else y",
    "[c for c in x]", "__builtins__", "_x + 1", "'abc'", "b'abc'", "x := 1", "exp(x, y)", "max(x)",
    "1" * 600, "+".join(["x"] * 150),
])
def test_rejected_at_parse_or_evaluation(text):
    with pytest.raises(SpecError):
        parse(text, file="s.yaml", key="derived.k")({"x": 1.0, "y": 2.0, "a": np.ones(2), "c": 1.0}, {})


def test_huge_powers_are_floats_not_giant_integers():
    assert parse("10 ** 10 ** 10")({}) == np.inf  # the space layer rejects non-finite derived values


def test_error_names_file_key_and_text():
    with pytest.raises(SpecError) as err:
        parse("x.__class__", file="space.yaml", key="derived.bw")
    assert str(err.value).startswith("space.yaml: derived.bw: expression may not use Attribute")


def test_derived_order_and_cycles():
    exprs = {"a": parse("b + 1"), "b": parse("c * 2"), "d": parse("a + b")}
    order = order_derived(exprs, {"c"})
    assert order.index("b") < order.index("a") < order.index("d")
    with pytest.raises(SpecError, match="circular definition"):
        order_derived({"a": parse("b"), "b": parse("a")}, set())
    with pytest.raises(SpecError, match="did you mean 'batch'"):
        order_derived({"a": parse("bach * 2")}, {"batch"})
