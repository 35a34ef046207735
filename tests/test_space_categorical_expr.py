"""A named categorical (quant_method, workload, ...) compared with a choice name in a space's
expressions: derived values and ``when`` conditions read it alike, whatever the order of the
space's choices, for a knob or a fixed value; a name that is no choice is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest

from dse.loading import load_space
from dse.spec.errors import SpecError
from dse.spec.registry import KNOB_BY_NAME

# the space lists its choices in another order than the registry's codes (gptq 1, awq 3, smoothquant 5)
QUANT = ["smoothquant", "gptq", "awq"]


def space(derived: dict | None = None, knobs: dict | None = None, fixed: dict | None = None, **kwargs):
    spec = {"platform": "h100-sxm", "model": "llama-2-7b",
            "knobs": {"quant_method": {"choices": QUANT}, **(knobs or {})},
            "derived": derived or {}, "fixed": fixed or {}}
    return load_space(spec, **kwargs)


def all_columns(s):
    """Every design's columns, each an array of one value per design (a fixed value's a scalar)."""
    return {k: np.broadcast_to(v, (s.size,)) for k, v in s.columns_at(np.arange(s.size)).items()}


def test_derived_compares_a_knob_with_its_choice_names():
    s = space({"w_group_size": 'where(quant_method == "smoothquant", 0, 128)',
               "kv_bits": '4 if "awq" == quant_method else 16',
               "a_bits": 'where(quant_method != "gptq", 8, 16)'})
    cols = all_columns(s)
    assert cols["w_group_size"].tolist() == [0, 128, 128]  # before the fix: [128, 128, 128], silently
    assert cols["kv_bits"].tolist() == [16, 16, 4]
    assert cols["a_bits"].tolist() == [8, 16, 8]
    codes = KNOB_BY_NAME["quant_method"].choices
    assert [codes[int(c)] for c in cols["quant_method"]] == QUANT  # the evaluator still gets registry codes
    assert s.decode(cols)["quant_method"].tolist() == QUANT


def test_when_and_derived_read_the_same_comparison():
    cond = 'quant_method == "awq" or quant_method == "smoothquant"'
    s = space({"a_bits": f"where({cond}, 8, 16)"}, knobs={"kv_bits": {"choices": [4, 8], "when": cond, "default": 16}})
    cols = all_columns(s)
    on = np.isin(s.decode(cols)["quant_method"], ["awq", "smoothquant"])
    assert on.tolist() == [True, True, False, False, True, True]
    assert np.array_equal(cols["a_bits"] == 8, on)
    assert np.array_equal(cols["kv_bits"] != 16, on)  # the `when` kept the knob exactly where derived says 8
    assert s.distinct_at(np.arange(s.size)).tolist() == [True, True, True, False, True, True]


def test_fixed_named_categorical_compared_by_name():
    derived = {"w_group_size": 'where(quant_method == "smoothquant", 0, 128)'}
    for fixed, expected in (("smoothquant", 0), ("awq", 128)):
        s = load_space({"platform": "h100-sxm", "model": "llama-2-7b", "fixed": {"quant_method": fixed},
                        "knobs": {"w_bits": {"choices": [4, 8], "when": f'quant_method == "{fixed}"', "default": 16}},
                        "derived": derived})
        cols = all_columns(s)
        assert cols["w_group_size"].tolist() == [expected] * 2
        assert cols["w_bits"].tolist() == [4, 8]


def test_a_study_may_fix_or_narrow_the_knob_an_expression_compares():
    """A study's workload replaces the space's knob: a registry name the study left out is a
    valid comparison that reads false, not an error."""
    derived = {"w_group_size": 'where(quant_method == "smoothquant", 0, 128)'}
    fixed = space(derived, extra_fixed={"quant_method": "awq"})
    assert all_columns(fixed)["w_group_size"].tolist() == [128]
    narrowed = space(derived, extra_knobs={"quant_method": {"choices": ["gptq", "awq"]}})
    assert all_columns(narrowed)["w_group_size"].tolist() == [128, 128]


@pytest.mark.parametrize("where", ["derived", "when"])
def test_a_name_that_is_no_choice_is_a_one_line_error(where):
    text = 'quant_method == "smoothqaunt"'
    if where == "derived":
        kwargs, key = {"derived": {"w_group_size": f"where({text}, 0, 128)"}}, "derived.w_group_size"
    else:
        kwargs, key = {"knobs": {"kv_bits": {"choices": [4, 8], "when": text, "default": 16}}}, "knobs.kv_bits.when"
    with pytest.raises(SpecError) as err:
        space(**kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"<space>: {key}: 'smoothqaunt' is not one of quant_method's names ['rtn', 'gptq',")
    assert "did you mean 'smoothquant'?" in message


def test_a_string_compared_with_a_number_knob_is_an_error():
    with pytest.raises(SpecError, match=r"<space>: derived.w_group_size: strings are only allowed"):
        space({"w_group_size": 'where(batch == "smoothquant", 0, 128)'}, knobs={"batch": {"choices": [1, 8]}})


def test_memory_technology_still_compares_by_the_space_position():
    s = load_space({"platform": "h100-sxm", "model": "llama-2-7b",
                    "knobs": {"mem_technology": {"choices": ["hbm3", "hbm2-pim"]}, "n_mem_units": {"choices": [4]},
                              "pim_offload": {"choices": [2], "when": 'mem_technology == "hbm2-pim"', "default": 0}},
                    "derived": {"host_link_energy_pj_per_bit": 'where(mem_technology == "hbm2-pim", 3.42, 0)'}})
    cols = all_columns(s)
    assert cols["host_link_energy_pj_per_bit"].tolist() == [0, 3.42]
    assert cols["pim_offload"].tolist() == [0, 2]


def test_shipped_serving_space_reads_the_same_with_a_derived_where():
    """spaces/datacenter-serving.yaml sets SmoothQuant and FP8 per-channel with a `when` (the derived
    form used to never match); the derived form now gives the same columns."""
    from dse.spec.presets import read_yaml, resolve

    path = resolve("spaces", "datacenter-serving")
    raw = read_yaml(path)
    with_when = load_space(raw, file=str(path), model="llama-3-70b")
    raw["knobs"].pop("w_group_size")
    raw["derived"]["w_group_size"] = 'where(quant_method == "smoothquant" or quant_method == "fp8", 0, 128)'
    with_derived = load_space(raw, file=str(path), model="llama-3-70b")
    assert with_derived.size == with_when.size  # the when-knob has one choice: no extra designs
    index = np.arange(0, with_when.size, 101)
    a, b = with_when.columns_at(index), with_derived.columns_at(index)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(np.broadcast_to(a[name], index.shape), np.broadcast_to(b[name], index.shape)), name
    assert set(b["w_group_size"]) == {0.0, 128.0}
