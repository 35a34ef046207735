"""Physical properties of the model, checked with hypothesis over random designs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.model.pipeline import evaluate_arrays
from dse.model.workload import memory_bytes, phase_ops, weight_bytes_per_param
from dse.spec.presets import load_model, load_platform
from dse.spec.registry import KNOB_DEFAULTS
from dse.testing.conformance import assert_monotone
from tests.conftest import MODELS, PLATFORMS

designs = st.fixed_dictionaries({
    "model": st.sampled_from(MODELS),
    "platform": st.sampled_from(PLATFORMS),
    "batch": st.integers(1, 256).map(float),
    "in_len": st.integers(1, 8192).map(float),
    "out_len": st.integers(1, 2048).map(float),
    "w_bits": st.sampled_from([2.0, 3.0, 4.0, 6.0, 8.0, 16.0]),
    "a_bits": st.sampled_from([4.0, 8.0, 16.0]),
    "kv_bits": st.sampled_from([2.0, 4.0, 8.0, 16.0]),
    "w_sparsity_frac": st.floats(0.0, 0.95),
    "nm_sparse": st.sampled_from([0.0, 1.0]),
    "pim_offload": st.sampled_from([0.0, 1.0, 2.0]),
})
scale = st.floats(1.01, 10.0)


def split(design):
    m = load_model(design["model"]).fields
    hw = dict(load_platform(design["platform"]).fields)
    k = {name: design.get(name, default) for name, default in KNOB_DEFAULTS.items()}
    return m, k, hw


@settings(max_examples=150, deadline=None)
@given(designs, scale)
def test_more_bandwidth_never_slows(design, factor):
    m, k, hw = split(design)
    flat = {**m, **k, **hw}

    def vector(batch):
        return evaluate_arrays({f: batch[f] for f in m}, {f: batch[f] for f in k}, {f: batch[f] for f in hw})

    for field in ("mem_bw_bytes_per_s", "pim_bw_bytes_per_s", "host_link_bw_bytes_per_s"):
        for output in ("tpot_s", "ttft_s"):
            assert_monotone(vector, flat, field, factor, output, direction=-1)


@settings(max_examples=150, deadline=None)
@given(designs, scale)
def test_more_compute_never_slows(design, factor):
    m, k, hw = split(design)
    base = evaluate_arrays(m, k, hw)
    more = {**hw, **{f: hw[f] * factor for f in hw if f.endswith("_peak_flop_per_s")}}
    faster = evaluate_arrays(m, k, more)
    assert faster["tpot_s"] <= base["tpot_s"] * (1 + 1e-12)
    assert faster["ttft_s"] <= base["ttft_s"] * (1 + 1e-12)


@settings(max_examples=150, deadline=None)
@given(designs, st.sampled_from(["w_bits", "a_bits", "kv_bits"]))
def test_fewer_bits_never_add_bytes(design, knob):
    m, k, _hw = split(design)
    fewer = {**k, knob: k[knob] / 2.0}
    for kk, prefill in ((k, True), (k, False)):
        tokens = kk["batch"] * (kk["in_len"] if prefill else 1.0)
        base = phase_ops(m, kk, weight_bytes_per_param(kk), tokens, prefill)
        less = phase_ops(m, fewer, weight_bytes_per_param(fewer), tokens, prefill)
        for name in base:
            assert less[name].bytes0 <= base[name].bytes0 * (1 + 1e-12)
            if base[name].bytes1 is not None:
                assert less[name].bytes1 <= base[name].bytes1 * (1 + 1e-12)
    assert memory_bytes(m, fewer, weight_bytes_per_param(fewer)) <= memory_bytes(m, k, weight_bytes_per_param(k))


@settings(max_examples=150, deadline=None)
@given(designs)
def test_batch_8_never_below_batch_1(design):
    m, k, hw = split(design)
    one = evaluate_arrays(m, {**k, "batch": 1.0}, hw)
    eight = evaluate_arrays(m, {**k, "batch": 8.0}, hw)
    assert eight["decode_tokens_per_s"] >= one["decode_tokens_per_s"] * (1 - 1e-12)


@settings(max_examples=100, deadline=None)
@given(designs)
def test_metrics_finite_and_consistent(design):
    m, k, hw = split(design)
    out = evaluate_arrays(m, k, hw)
    for name, value in out.items():
        assert np.all(np.isfinite(value)), name
    assert float(out["decode_tokens_per_s"]) == pytest.approx(k["batch"] / float(out["tpot_s"]), rel=1e-12)
    assert out["decode_power_w"] <= hw["tdp_w"] * (1 + 1e-9)
    assert out["decode_power_w"] >= hw["static_power_w"] * (1 - 1e-9)
