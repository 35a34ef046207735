"""Hostile input to the Python API (issue 9.15): every malformed batch raises dse.SpecError naming
the column (or the batch), never a plain TypeError/ValueError/OverflowError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dse
from dse.api import Evaluator

ON = {"model": "llama-2-7b", "platform": "h100-sxm"}


@pytest.mark.parametrize("designs, key, rule", [
    ({"batch": ["a", "b"]}, "batch", "must be numbers"),
    ({"batch": [1, "x"]}, "batch", "must be numbers"),
    (pd.DataFrame({"in_len": ["128", "x"]}), "in_len", "must be numbers"),
    ({"w_bits": "sixteen"}, "w_bits", "must be numbers"),
    ({"mem_bw_bytes_per_s": "fast"}, "mem_bw_bytes_per_s", "must be numbers"),
    ({"batch": {"a": 1}}, "batch", "must be numbers"),
    ({"batch": 1 + 2j}, "batch", "must be numbers"),
    ({"batch": 10**400}, "batch", "must be numbers"),
    ({"in_len": [1, 10**400]}, "in_len", "must be numbers"),
    ({"batch": np.ones((2, 2))}, "batch", "must be a scalar or a 1-D array"),
    ({"batch": [[1, 2], [3, 4]]}, "batch", "must be a scalar or a 1-D array"),
    ({"batch": float("nan")}, "batch", "must be finite"),
    ({"batch": None}, "batch", "must be numbers"),
    ({"batch": True}, "batch", "must be numbers"),
    ({"batch": [1, True]}, "batch", "must be numbers"),
    ({"batch": 1e300}, "batch", "must be in [1, 1e+09]"),
    ({"pp": [1, 1.5]}, "pp", "must be a whole number"),
    ({"quant_method": 2.5}, "quant_method", "must be a whole number"),
    ({"nm_sparse": 0.5}, "nm_sparse", "must be a whole number"),
    ({"fp8_native": 0.5}, "fp8_native", "must be a whole number"),
    ({"fp8_native": 2.0}, "fp8_native", "must be <= 1"),
    ({"fp8_rate_frac": 0.0}, "fp8_rate_frac", "must be > 0"),
    ({"fp8_rate_frac": 1.5}, "fp8_rate_frac", "must be <= 1"),
    ({"decode_attn_energy_ratio": 0.0}, "decode_attn_energy_ratio", "must be > 0"),
    ({"decode_attn_energy_ratio": [1.0, "x"]}, "decode_attn_energy_ratio", "must be numbers"),
    ({"batch": [1, 2], "in_len": [1, 2, 3]}, "<columns>", "equal lengths"),
    ({"batchh": 1}, "batchh", "unknown design column; did you mean 'batch'?"),
    ([{"batch": 1}], "<designs>", "must be a DataFrame or a mapping"),
    ([[1, 2]], "<designs>", "must be a DataFrame or a mapping"),
    (np.ones((2, 2)), "<designs>", "must be a DataFrame or a mapping"),
    ("batch=1", "<designs>", "must be a DataFrame or a mapping"),
])
def test_evaluate_raises_spec_error_naming_the_column(designs, key, rule):
    with pytest.raises(dse.SpecError) as exc:
        dse.evaluate(designs, **ON)
    assert exc.value.key_path == key and rule in exc.value.rule, str(exc.value)
    assert "\n" not in str(exc.value)


def test_the_error_shows_the_offending_value_and_flags_take_booleans():
    with pytest.raises(dse.SpecError, match="got 'x'"):
        dse.evaluate({"batch": [1, "x"]}, **ON)
    assert dse.evaluate({"nm_sparse": [True, False]}, **ON)["nm_sparse"].tolist() == [True, False]


def test_keyword_columns_are_checked_too():
    with pytest.raises(dse.SpecError, match="batch: must be numbers"):
        dse.evaluate(batch=["a"], **ON)


@pytest.mark.parametrize("columns, key", [
    ([1, 2], "<designs>"),
    ({"batch": np.ones((2, 2))}, "batch"),
    ({"batch": "x"}, "batch"),
    ({"batch": 10**400}, "batch"),
])
def test_evaluator_raises_spec_error(columns, key):
    ev = Evaluator(**ON)
    with pytest.raises(dse.SpecError) as exc:
        ev(columns)
    assert exc.value.key_path == key


def test_well_formed_edge_cases_still_evaluate():
    assert len(dse.evaluate({"batch": []}, **ON)) == 0
    df = dse.evaluate({"batch": np.array([1, 8], dtype=np.int32), "w_bits": np.float32(8)}, **ON)
    assert len(df) == 2 and np.isfinite(df["decode_tokens_per_s"]).all()
