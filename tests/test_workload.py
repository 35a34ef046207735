"""Closed forms of the workload model, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dse.model.workload import n_params, phase_ops, weight_bytes_per_param
from dse.spec.presets import load_model
from dse.spec.registry import KNOB_DEFAULTS
from tests.conftest import MODELS


def knobs(**kw):
    return {**KNOB_DEFAULTS, **kw}


def test_gemm_flops_are_2mnk(llama7b):
    m = llama7b.fields
    k = knobs(batch=4, in_len=100)
    ops = phase_ops(m, k, weight_bytes_per_param(k), 400.0, prefill=True)
    d, L = 4096, 32
    assert ops["qkv"].flop0 == pytest.approx(2 * 400 * d * (3 * d) * L)
    assert ops["o"].flop0 == pytest.approx(2 * 400 * d * d * L)
    assert ops["ffn"].flop0 == pytest.approx(2 * 400 * (3 * d * 11008) * L)
    assert ops["lm_head"].flop0 == pytest.approx(2 * 4 * d * 32000)  # last position of each sequence
    # causal attention: QK^T and PV over L(L+1)/2 pairs, 2*head_dim FLOPs each, per head
    assert ops["attn"].flop0 == pytest.approx(L * 4 * 32 * 2 * 128 * 100 * 101)


def test_llama2_7b_decode_bytes_at_16_bits(llama7b):
    """One decode step at batch 1 reads every weight once (2 bytes each) plus a little."""
    m = llama7b.fields
    k = knobs(batch=1.0)
    ops = phase_ops(m, k, weight_bytes_per_param(k), 1.0, prefill=False)
    weight_bytes = sum(float(op.bytes0) - float(op.act_bytes) for name, op in ops.items() if name != "attn")
    d, f, L, V = 4096, 11008, 32, 32000
    expected = 2 * (L * (4 * d * d + 3 * d * f) + V * d)  # embedding table not read in decode
    assert weight_bytes == pytest.approx(expected)
    assert expected == 13_214_154_752  # 6.607e9 weights read per step (all but the input embedding)
    # KV cache read per attended token: 2 (K,V) * layers * kv_heads * head_dim * 2 bytes
    assert float(ops["attn"].bytes1) == pytest.approx(2 * L * 32 * 128 * 2)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_published(name):
    card = load_model(name)
    if card.n_params is None:
        pytest.skip("card gives no published parameter count")
    # norms, biases and OPT's learned positions are not modelled: within 1.5%
    assert float(n_params(card.fields)) == pytest.approx(card.n_params, rel=0.015)


def test_quantisation_and_sparsity_bytes():
    dense16 = weight_bytes_per_param(knobs(w_bits=16.0))
    assert dense16 == 2.0
    assert weight_bytes_per_param(knobs(w_bits=4.0)) == 0.5
    # 2:4: half the values + a 2-bit index per kept value
    assert weight_bytes_per_param(knobs(w_bits=16.0, nm_sparse=1.0)) == pytest.approx(1.0 + 0.125)
    # unstructured 50%: half the values + a 1-bit bitmap per original weight
    assert weight_bytes_per_param(knobs(w_bits=16.0, w_sparsity_frac=0.5)) == pytest.approx(1.0 + 0.125)
    # sparse storage is never chosen when it is larger than dense
    assert weight_bytes_per_param(knobs(w_bits=4.0, w_sparsity_frac=0.01)) == 0.5


def test_moe_touches_fewer_experts_at_small_batch():
    m = load_model("mixtral-8x7b").fields
    k1, k64 = knobs(batch=1.0), knobs(batch=64.0)
    b1 = phase_ops(m, k1, 2.0, 1.0, prefill=False)["ffn"].bytes0
    b64 = phase_ops(m, k64, 2.0, 64.0, prefill=False)["ffn"].bytes0
    expert_bytes = 32 * 3 * 4096 * 14336 * 2
    assert float(b1) == pytest.approx(2 * expert_bytes, rel=0.01)  # top-2 of 8
    assert float(b64) == pytest.approx(8 * expert_bytes, rel=0.01)  # all experts
    assert np.isfinite(b1)


def test_speculative_decoding_tokens_per_verification_and_speed_up():
    from dse.model.workload import tokens_per_verify

    assert tokens_per_verify(knobs(spec_len=4.0, spec_accept_frac=0.8)) == pytest.approx((1 - 0.8**5) / 0.2)
    assert tokens_per_verify(knobs(spec_len=3.0, spec_accept_frac=0.0)) == 1.0  # every draft rejected
    import dse

    base = dse.evaluate({"batch": 1, "in_len": 128, "out_len": 256}, model="llama-2-7b", platform="h100-sxm")
    spec = dse.evaluate({"batch": 1, "in_len": 128, "out_len": 256, "spec_len": 4, "spec_accept_frac": 0.8,
                         "spec_draft_frac": 0.05}, model="llama-2-7b", platform="h100-sxm")
    speed_up = float(spec["decode_tokens_per_s"][0] / base["decode_tokens_per_s"][0])
    # memory-bound batch 1: close to the 3.36 accepted tokens per weight read, less the draft's cost
    assert 2.0 < speed_up < 3.36
    assert float(spec["memory_bytes"][0]) > float(base["memory_bytes"][0])  # the draft's weights


@pytest.mark.parametrize("native", [1.0, 0.0])
def test_two_four_sparsity_halves_gemm_compute_energy_only_on_native_units(native):
    """2:4 weights on native sparse units execute half of a GEMM's MACs: its time and compute
    energy halve; attention and memory energy do not change. Without native units the zeros are
    multiplied like any value: the same energy. (Memory energies zeroed: FLOP energy only.)"""
    from dse.model import power
    from dse.model.pipeline import phase_costs
    from dse.spec.presets import load_model, load_platform

    m = dict(load_model("llama-2-7b").fields)
    hw = {**load_platform("h100-sxm").fields, "nm_sparsity_native": native, "mem_energy_pj_per_bit": 0.0,
          "onchip_energy_pj_per_bit": 0.0, "sram_energy_pj_per_bit": 0.0}
    energy = {}
    for nm in (0.0, 1.0):
        k = knobs(batch=16.0, in_len=1024.0, nm_sparse=nm)
        costs = phase_costs(m, k, hw, weight_bytes_per_param(k))["prefill"]
        attn = power.phase_dynamic_j(hw, {"attn": costs["attn"]})
        gemms = power.phase_dynamic_j(hw, {n: c for n, c in costs.items() if n != "attn"})
        energy[nm] = (float(attn), float(gemms))
    assert energy[1.0][0] == pytest.approx(energy[0.0][0], rel=1e-12)
    assert energy[1.0][1] == pytest.approx(energy[0.0][1] * (0.5 if native else 1.0), rel=1e-12)
