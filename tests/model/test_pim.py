"""PIM mapping: reachable capacity, 16-bit formats, no free host link, host and PIM in series."""

from __future__ import annotations

import numpy as np
import pytest

import dse
from dse.model import perf, pim, power
from dse.model.workload import Op, n_params
from dse.spec.presets import load_model, load_platform
from dse.testing.conformance import assert_matches_reference

GIB = 2.0**30
LLAMA7 = dict(load_model("llama-2-7b").fields)
HBM_PIM = dict(load_platform("hbm-pim").fields)
AIM = dict(load_platform("gddr6-aim").fields)
BASE = {"batch": 1.0, "in_len": 128.0, "out_len": 128.0, "w_bits": 16.0, "a_bits": 16.0, "kv_bits": 16.0,
        "w_sparsity_frac": 0.0, "nm_sparse": 0.0, "spec_len": 0.0, "spec_draft_frac": 0.05, "tp": 1.0, "pp": 1.0,
        "ep": 1.0, "micro_batches": 1.0}


def _decode_tps(platform: str, **knobs) -> float:
    return float(dse.evaluate({"batch": 1, "in_len": 128, "out_len": 128, **knobs}, model="llama-2-7b",
                              platform=platform)["decode_tokens_per_s"].iloc[0])


def test_hbm_pim_reaches_8_of_24_gib():
    assert HBM_PIM["pim_capacity_bytes"] == 8 * GIB
    assert HBM_PIM["mem_capacity_bytes"] == 24 * GIB


def test_reach_fraction_by_hand():
    """Llama-2-7B at 16 bits on hbm-pim: 8 GiB / (2 x 6.74e9 weights + the 256-token KV cache)."""
    k = {**BASE, "pim_offload": 2.0}
    kv = 2 * 32 * 32 * 128 * 1 * 256 * 2.0
    expected = 8 * GIB / (2.0 * n_params(LLAMA7) + kv)
    assert float(pim.pim_reach_frac(LLAMA7, k, HBM_PIM)) == pytest.approx(expected, rel=1e-12)
    assert 0.55 < expected < 0.65
    # attention only: the KV cache (134 MB) fits, all of it runs in PIM
    assert float(pim.pim_reach_frac(LLAMA7, {**k, "pim_offload": 1.0}, HBM_PIM)) == 1.0
    # 0 = all of memory is PIM-capable
    assert float(pim.pim_reach_frac(LLAMA7, k, {**HBM_PIM, "pim_capacity_bytes": 0.0})) == 1.0


def _reach_scalar(row: dict) -> dict:
    weights = 2.0 * n_params(LLAMA7) * (1.0 + (row["spec_draft_frac"] if row["spec_len"] > 0 else 0.0))
    kv = 2.0 * 32 * 32 * 128 * row["batch"] * (row["in_len"] + row["out_len"]) * 2.0
    need = kv + (weights if row["pim_offload"] >= 2 else 0.0)
    cap = row["pim_capacity_bytes"]
    return {"reach": 1.0 if cap <= 0 else min(1.0, cap / need)}


def test_reach_matches_scalar_reference():
    rng = np.random.default_rng(3)
    n = 200
    batch = {**{k: np.full(n, v) for k, v in BASE.items()}, "batch": rng.integers(1, 64, n).astype(float),
             "in_len": rng.integers(1, 4000, n).astype(float), "out_len": rng.integers(1, 512, n).astype(float),
             "spec_len": rng.choice([0.0, 4.0], n), "pim_offload": rng.choice([1.0, 2.0], n),
             "pim_capacity_bytes": rng.choice([0.0, 1 * GIB, 8 * GIB, 64 * GIB], n)}

    def vector(b: dict) -> dict:
        return {"reach": pim.pim_reach_frac(LLAMA7, b, {"pim_capacity_bytes": b["pim_capacity_bytes"]})}

    assert_matches_reference(vector, _reach_scalar, batch, rtol=1e-12)


def _gemv(weight_bytes: float = 1e9, act: float = 1e4) -> Op:
    return Op(flop0=weight_bytes, flop1=None, bytes0=weight_bytes + act, bytes1=None, act_bytes=act, kernels=1.0)


def _host(hw: dict, op: Op, steps: float) -> dict:
    rate = (perf.compute_s_per_flop(hw, 16.0)[0], power.j_per_flop(hw, 16.0))
    cost = perf.op_cost(hw, op, 1.0, steps, steps, rate, perf.mem_s_per_byte(hw), steps * (steps + 1) / 2)
    return perf.op_totals(cost)


def test_pim_and_host_parts_run_in_series():
    """With half the data reachable: time = PIM part (half the bytes in-bank) + link + launches + half the host time."""
    steps, op = 10.0, _gemv()
    k = {**BASE, "pim_offload": 2.0}
    host = _host(AIM, op, steps)
    out = pim.with_pim(AIM, k, "ffn", op, 1.0, steps, steps * (steps + 1) / 2, host, reach_frac=0.5)
    inbank = (op.bytes0 - op.act_bytes) * 0.5
    pim_step = max(op.flop0 * 0.5 / AIM["pim_peak_flop_per_s"], inbank / AIM["pim_bw_bytes_per_s"])
    expected = steps * (pim_step + op.act_bytes / AIM["host_link_bw_bytes_per_s"] + host["launch_s"]) \
        + 0.5 * host["time_s"]
    assert float(out["time_s"]) == pytest.approx(expected, rel=1e-12)
    assert bool(out["on_pim"])


def test_pim_reads_16_bit_dense_whatever_the_format():
    """4-bit weights are stored 16-bit for PIM: 4x the in-bank bytes of the 4-bit host copy; 2:4 gives nothing."""
    steps, op16 = 10.0, _gemv(2e9)
    k16 = {**BASE, "pim_offload": 2.0}
    k4 = {**k16, "w_bits": 4.0}
    op4 = op16._replace(bytes0=0.5e9 + op16.act_bytes)  # the same matrix stored at 4 bits on the host
    c = steps * (steps + 1) / 2
    t16 = pim.with_pim(AIM, k16, "ffn", op16, 1.0, steps, c, _host(AIM, op16, steps))["time_s"]
    t4 = pim.with_pim(AIM, k4, "ffn", op4, 1.0, steps, c, _host(AIM, op4, steps))["time_s"]
    assert float(t4) == pytest.approx(float(t16), rel=1e-12)
    assert _decode_tps("gddr6-aim", pim_offload=2, w_bits=4, a_bits=16) == pytest.approx(
        _decode_tps("gddr6-aim", pim_offload=2, w_bits=16, a_bits=16), rel=0.02)
    assert _decode_tps("gddr6-aim", pim_offload=2, nm_sparse=1) == pytest.approx(
        _decode_tps("gddr6-aim", pim_offload=2), rel=0.02)


def test_no_host_link_means_no_offload():
    """host_link_bw 0: PIM cannot be fed, every operator stays on the host (no free link)."""
    hw = {**AIM, "host_link_bw_bytes_per_s": 0.0}
    assert not bool(pim.can_offload(hw))
    assert not pim.pim_possible(hw, {"pim_offload": np.array([2.0])})
    steps, op = 10.0, _gemv()
    host = _host(hw, op, steps)
    out = pim.with_pim(hw, {**BASE, "pim_offload": 2.0}, "ffn", op, 1.0, steps, steps * (steps + 1) / 2, host)
    assert float(out["time_s"]) == float(host["time_s"]) and not bool(out["on_pim"])
    on = dse.Evaluator("llama-2-7b", "gddr6-aim")({"pim_offload": 2.0, "host_link_bw_bytes_per_s": 0.0})
    off = dse.Evaluator("llama-2-7b", "gddr6-aim")({"pim_offload": 0.0, "host_link_bw_bytes_per_s": 0.0})
    assert float(on["decode_tokens_per_s"][0]) == pytest.approx(float(off["decode_tokens_per_s"][0]), rel=1e-12)


def test_aimx_runs_near_its_published_rate_with_pim():
    """The survey's AiMX point (330 tokens/s, Llama-2-7B, batch 1) with every decode GEMV on GDDR6-AiM."""
    assert _decode_tps("gddr6-aim", pim_offload=2) == pytest.approx(330.0, rel=0.25)
    assert _decode_tps("gddr6-aim", pim_offload=0) < 0.15 * 330.0
