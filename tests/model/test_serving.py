"""Serving stage: exact static-batch recovery, iteration pricing against its scalar reference,
length-moment and scheduler closed forms by hand, properties, and the analytic model against
the discrete-event reference (``tests/serving_des.py``) on random cases.

The error distribution of the analytic model is printed by the DES comparison (``pytest -s``)
and recorded in ``docs/serving.md``; the assertions hold the bulk within stated tolerances.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import dse
from dse.model import serving
from dse.model.pipeline import evaluate_arrays
from dse.model.serving_coeffs import serving_coeffs
from dse.model.serving_iteration import (
    COEFF_KEYS,
    FEATURES,
    decode_features,
    iteration_energy_j,
    iteration_time_s,
    ops_time_s,
    static_batch_times,
)
from dse.model.serving_lengths import (
    STOPLOSS_GRID,
    avg_var_factor,
    length_moments,
    sample,
    sample_moments,
    stoploss,
)
from dse.model.serving_mapping import point_moments
from dse.model.workload import executed_knobs
from dse.spec.presets import load_model, load_platform
from dse.spec.registry import CARD_FIELD_NAMES, HARDWARE_FIELD_NAMES, KNOB_DEFAULTS
from dse.spec.workloads import load_workloads
from tests.conftest import MODELS, PLATFORMS
from tests.serving_des import iteration_energy_one, iteration_time_one, simulate, steady_stats
from tests.test_reference import random_batch


def _design_batch(rng, n, platform):
    k = random_batch(rng, n)
    k["pim_offload"] = np.zeros(n)  # PIM offload is not represented by the iteration coefficients
    for key in ("tp", "pp", "ep", "dp", "micro_batches"):  # one device: the mapping stage adds the rest
        k[key] = np.ones(n)
    models = [load_model(m) for m in MODELS]
    codes = rng.integers(0, len(models), n)
    m = {f: np.array([models[c].fields[f] for c in codes]) for f in CARD_FIELD_NAMES}
    hw = {f: np.full(n, load_platform(platform).fields[f]) for f in HARDWARE_FIELD_NAMES}
    hw["mem_bw_bytes_per_s"] = hw["mem_bw_bytes_per_s"] * rng.uniform(0.3, 3.0, n)
    hw["flop16_peak_flop_per_s"] = hw["flop16_peak_flop_per_s"] * rng.uniform(0.3, 3.0, n)
    return m, k, hw


@pytest.mark.parametrize("platform", PLATFORMS)
def test_static_batch_recovered_exactly(platform):
    """Point-mass lengths, all arrivals at t = 0, no chunking: the iteration model rebuilds the
    static model's ttft_s and tpot_s (power cap, MoE, sparsity and speculation included)."""
    rng = np.random.default_rng(abs(hash(platform)) % 2**32)
    m, k, hw = _design_batch(rng, 40, platform)
    k = executed_knobs(k, hw)  # the knobs the serving stage receives (FP8 without FP8 units: W8A16)
    ref = evaluate_arrays(m, k, hw)
    got = static_batch_times(serving_coeffs(m, k, hw), k["batch"], k["in_len"], k["out_len"])
    np.testing.assert_allclose(got["ttft_s"], ref["ttft_s"], rtol=1e-12)
    np.testing.assert_allclose(got["tpot_s"], ref["tpot_s"], rtol=1e-12)
    n_out = k["batch"] * k["out_len"]
    np.testing.assert_allclose(n_out / (got["prefill_j"] + got["decode_j"]), ref["tokens_per_j"], rtol=1e-12)


def _scalar_coeffs(c, i):
    return {key: (np.asarray(v)[:, i] if np.ndim(v) == 2 else float(np.broadcast_to(v, (np.shape(v) or (1,)))[i]
                  if np.ndim(v) else float(v))) for key, v in c.items()}


def test_iteration_time_matches_scalar_reference():
    rng = np.random.default_rng(1)
    m, k, hw = _design_batch(rng, 60, "h100-sxm")
    c = serving_coeffs(m, k, hw)
    assert set(COEFF_KEYS) <= set(c)
    n = 60
    for key, scale in (("fixed_s", 1e-3), ("fixed_s_per_tok", 3e-6), ("fixed_s_per_head", 1e-6), ("fixed_j", 1e-2),
                       ("fixed_j_per_tok", 1e-5), ("fixed_j_per_head", 1e-5)):  # a replica's collectives, half the rows
        c[key] = np.where(rng.random(n) < 0.5, scale * rng.uniform(0.1, 10.0, n), 0.0)
    f = {key: rng.choice([0.0, 1.0, 7.0, 300.0, 5000.0], n) * rng.uniform(0.5, 2.0, n) for key in FEATURES}
    f["n_tok"] = f["pf_tok"] + f["dec_tok"]
    t, e = iteration_time_s(c, f), iteration_energy_j(c, f)
    for i in range(n):
        ci = _scalar_coeffs(c, i)
        fi = {key: float(v[i]) for key, v in f.items()}
        assert t[i] == pytest.approx(iteration_time_one(ci, fi), rel=1e-12)
        assert e[i] == pytest.approx(iteration_energy_one(ci, fi), rel=1e-12)


def test_decode_attention_stream_limit():
    """Decode attention's (sequence, KV head) streams (perf.attn_s_per_byte): below attn_stream_seqs
    = achievable bytes/s / (stream rate x KV heads) decoding sequences its bytes take as long as at
    attn_stream_seqs, above it the limit is gone; the fluid model's decode iteration carries the
    same term (max(N a, floor): constant, slope 0, below the crossover); the static model is rebuilt
    exactly across it (replicas, where tp divides the KV heads: test_replica_recovers_the_static_model_exactly)."""
    hw = load_platform("h200-sxm").fields
    model = load_model("llama-3-8b").fields
    c = _one_design(platform="h200-sxm")
    s_seqs = hw["mem_bw_bytes_per_s"] * hw["mem_bw_eff_frac"] / (hw["attn_stream_bw_bytes_per_s"] * model["n_kv_heads"])
    assert float(c["attn_stream_seqs"]) == pytest.approx(s_seqs, rel=1e-12) and 10.0 < s_seqs < 15.0
    off = {**c, "attn_stream_seqs": 0.0 * c["attn_stream_seqs"]}
    batch, ctx = np.array([1.0, 4.0, 8.0, 12.0, 13.0, 32.0, 256.0]), 2000.0  # memory-bound attention
    f = decode_features(c, batch, ctx)
    bytes_s = f["dec_tok"] * c["attn_act_s_per_tok"] + f["dec_kv"] * c["attn_kv_s_per_tok"]
    extra = ops_time_s(c, f) - ops_time_s(off, f)
    np.testing.assert_allclose(extra, bytes_s * np.maximum(s_seqs / batch - 1.0, 0.0), rtol=1e-9, atol=1e-15)
    assert np.all(extra[batch < s_seqs] > 0.0) and np.all(extra[batch > s_seqs] == 0.0)
    # the fluid decode iteration: the same extra time at the mean context, its slope 0 where bound
    w = point_moments(np.array(2000.0), np.array(1.0))
    s = serving.SCHED_DEFAULTS
    d_on, d_off = serving.prepare(c, w, s), serving.prepare(off, w, s)
    n = np.stack([batch, batch])  # a leading grid axis, as the load curve has
    st_on, st_off = serving.fluid_state(c, d_on, s, n), serving.fluid_state(off, d_off, s, n)
    f_ctx = decode_features(c, batch, d_on["ctx"])
    want = ops_time_s(c, f_ctx) - ops_time_s(off, f_ctx)
    np.testing.assert_allclose(st_on["t_d"] - st_off["t_d"], np.stack([want, want]), rtol=1e-9, atol=1e-15)
    d_slope = (st_on["slope_d"] - st_off["slope_d"])[0]
    np.testing.assert_allclose(d_slope[batch < s_seqs], -d_on["att_seq"], rtol=1e-12)
    assert np.all(d_slope[batch > s_seqs] == 0.0)
    # the static model across the crossover
    k = {key: np.full(len(batch), v) for key, v in KNOB_DEFAULTS.items()}
    k.update(batch=batch, in_len=np.full(len(batch), 700.0), out_len=np.full(len(batch), 40.0))
    m = {key: np.full(len(batch), v) for key, v in model.items() if key in CARD_FIELD_NAMES}
    h = {key: np.full(len(batch), hw[key]) for key in HARDWARE_FIELD_NAMES}
    ref = evaluate_arrays(m, k, h)
    got = static_batch_times(serving_coeffs(m, k, h), batch, 700.0, 40.0)
    np.testing.assert_allclose(got["tpot_s"], ref["tpot_s"], rtol=1e-12)
    unlimited = evaluate_arrays(m, k, {**h, "attn_stream_bw_bytes_per_s": np.zeros(len(batch))})
    slower = ref["tpot_s"] / unlimited["tpot_s"]
    assert np.all(slower[batch < s_seqs] > 1.0) and np.all(slower[batch > s_seqs] == 1.0)


# ---- request lengths ---------------------------------------------------------------------

def test_length_moments_closed_forms():
    fixed = length_moments({"in": {"kind": "fixed", "value": 300}, "out": {"kind": "fixed", "value": 40}})
    assert (fixed["in_mean"], fixed["in_sq_mean"], fixed["in_p90"]) == (300.0, 90000.0, 300.0)
    assert fixed["out_inv_mean"] == pytest.approx(1 / 40) and fixed["in_out_mean"] == 12000.0
    np.testing.assert_allclose(fixed["in_stoploss"], np.maximum(300.0 - STOPLOSS_GRID, 0.0))
    a, b = 10, 90  # discrete uniform: mean (a+b)/2, variance ((b-a+1)^2 - 1)/12
    uni = length_moments({"in": {"kind": "uniform", "low": a, "high": b}, "out": {"kind": "fixed", "value": 1}})
    assert uni["in_mean"] == pytest.approx(50.0)
    assert uni["in_sq_mean"] - 2500.0 == pytest.approx(((b - a + 1) ** 2 - 1) / 12.0)
    # exponential above min 1 (discretised on unit bins): E[(P - z)+] ~ (mean - 1) exp(-(z - 1) / (mean - 1))
    mean = 400.0
    ex = length_moments({"in": {"kind": "exponential", "mean": mean}, "out": {"kind": "fixed", "value": 1}})
    assert ex["in_mean"] == pytest.approx(mean, rel=0.01)
    z = STOPLOSS_GRID[20:40]
    np.testing.assert_allclose(ex["in_stoploss"][20:40], (mean - 1) * np.exp(-(z - 1) / (mean - 1)), rtol=0.02)
    ln = length_moments({"in": {"kind": "lognormal", "median": 200, "sigma": 0.5},
                         "out": {"kind": "fixed", "value": 1}})
    assert ln["in_mean"] == pytest.approx(200 * math.exp(0.125), rel=0.01)
    assert ln["in_p50"] == pytest.approx(200, abs=1)


def test_sample_moments_match_histogram_of_same_data_and_stoploss_interpolation():
    rng = np.random.default_rng(2)
    p, o = rng.integers(1, 3000, 5000).astype(float), rng.integers(1, 500, 5000).astype(float)
    s = sample_moments(p, o)
    assert s["in_mean"] == pytest.approx(p.mean()) and s["in_out_mean"] == pytest.approx(np.mean(p * o))
    np.testing.assert_allclose(s["in_stoploss"], stoploss(p, np.full(len(p), 1 / len(p))), rtol=1e-9)
    # the stage's interpolation is exact on the grid and mean - z below zero
    np.testing.assert_allclose(serving.stoploss_at(s["in_stoploss"], s["in_mean"], STOPLOSS_GRID), s["in_stoploss"])
    assert serving.stoploss_at(s["in_stoploss"], s["in_mean"], np.array(-5.0)) == pytest.approx(s["in_mean"] + 5.0)
    assert avg_var_factor(np.array([1e-6]))[0] == pytest.approx(1.0, abs=1e-5)
    assert avg_var_factor(np.array([1e4]))[0] == pytest.approx(2e-4, rel=1e-3)


def test_shipped_workloads_load_and_match_their_trace_statistics():
    for name, wl in load_workloads().items():
        mom = length_moments(wl)
        assert mom["in_mean"] > 0 and mom["out_mean"] > 0, name
        stats = wl.get("trace_stats")
        if stats:  # histograms reproduce the trace they were binned from
            assert mom["in_mean"] == pytest.approx(stats["in_mean"], rel=0.02), name
            assert mom["out_mean"] == pytest.approx(stats["out_mean"], rel=0.02), name
            assert mom["in_p90"] == pytest.approx(stats["in_p90"], rel=0.05), name


# ---- scheduler closed forms --------------------------------------------------------------

def _toy(f_s=1e-5, w_s=2e-3, kv_tokens=1e7):
    """One GEMM row: f_s per token compute, w_s weight read; nothing else costs time."""
    z5 = np.zeros(5)
    c = {key: 0.0 for key in COEFF_KEYS}
    c.update({"lin_flop_s_per_tok": z5 + np.array([f_s, 0, 0, 0, 0]), "lin_w_s": z5 + np.array([w_s, 0, 0, 0, 0]),
              "lin_act_s_per_tok": z5, "lin_launch_s": z5, "lin_flop_j_per_tok": z5, "lin_w_j": z5,
              "lin_act_j_per_tok": z5, "moe_n_experts": 1.0, "moe_top_k": 1.0, "dec_queries": 1.0,
              "dec_tokens_per_iter": 1.0, "headroom_w": 1e9, "kv_bytes_per_token": 1.0,
              "kv_capacity_bytes": kv_tokens})
    return c


def _fixed(p, o):
    return length_moments({"in": {"kind": "fixed", "value": p}, "out": {"kind": "fixed", "value": o}})


def test_request_shape_and_kv_capacity_by_hand():
    c, w = _toy(kv_tokens=1e6), _fixed(1000, 200)
    n_dec, ctx = serving.request_shape(c, w)
    assert n_dec == 200.0 and ctx == pytest.approx(1000 + (200 + 1) / 2)
    s = {**serving.SCHED_DEFAULTS, "token_budget": 512.0, "kv_block_tokens": 16.0, "kv_watermark_frac": 0.01}
    n_ch = 1.0 + (1000 - 512) / 512  # chunks per prompt: 1 + E[(P - K)+] / K
    foot = ctx + 7.5 + n_ch * (1000 + 7.5) / 200
    assert serving.kv_max_seqs(c, w, s) == math.floor(0.99e6 / foot)


def test_rate_root():
    n, a, b, cc = 7.0, 2.0, 0.3, 0.05
    lam = serving._rate(np.array(n), a, b, cc)
    assert lam * (a + lam * b / (1 - lam * cc)) == pytest.approx(n)
    assert serving._rate(np.array(n), a, 0.0, cc) == pytest.approx(n / a)


def test_compute_bound_capacity_by_hand():
    """Every token costs f_s once the batch is past the crossover: capacity = 1 / (f_s (P + O)) requests/s."""
    f_s, p, o = 1e-5, 300.0, 100.0
    c = _toy(f_s=f_s, w_s=1e-4)  # crossover 10 tokens, far below the batch
    s = {"token_budget": 1e6, "max_seqs": 64.0, "arrival_rate_req_per_s": 1.0}
    out = serving.serving_metrics(c, _fixed(p, o), s)
    assert out["serving_capacity_req_per_s"] == pytest.approx(1.0 / (f_s * (p + o)), rel=1e-9)
    assert out["kv_max_seqs"] > 64


def test_light_load_tpot_is_the_weight_read():
    c = _toy(f_s=1e-6, w_s=5e-3)  # memory-bound below 5000 tokens
    out = serving.serving_metrics(c, _fixed(100, 500), {"arrival_rate_req_per_s": 1e-3})
    assert out["tpot_mean_s"] == pytest.approx(5e-3, rel=0.01)
    assert out["serving_tokens_per_s"] == pytest.approx(1e-3 * 500)


def test_power_cap_stretches_time_uniformly():
    rng = np.random.default_rng(3)
    m, k, hw = _design_batch(rng, 1, "h100-sxm")
    k.update(spec_len=np.zeros(1), nm_sparse=np.zeros(1), w_sparsity_frac=np.zeros(1))
    c = serving_coeffs(m, k, hw)
    w = length_moments(load_workloads()["splitwise-conv"])
    free = serving.serving_metrics({**c, "headroom_w": np.full(1, 1e9)}, w, {})
    low = serving.serving_metrics({**c, "headroom_w": np.full(1, 20.0)}, w, {})
    lower = serving.serving_metrics({**c, "headroom_w": np.full(1, 10.0)}, w, {})
    assert low["serving_capacity_req_per_s"] < free["serving_capacity_req_per_s"]
    assert low["serving_capacity_req_per_s"] / lower["serving_capacity_req_per_s"] == pytest.approx(2.0)


def test_power_cap_stretch_follows_the_load():
    """A cap that binds at capacity (half the dynamic power there) slows light load less: the
    stretch is that of the operating point's mean iteration, the capacity's the largest."""
    c = _one_design()
    w = length_moments(load_workloads()["sharegpt-vllm-paper"])
    free_c = {**c, "headroom_w": 1e9}
    cap_rate = float(serving.serving_metrics(free_c, w, {})["serving_capacity_req_per_s"])
    full = serving.serving_metrics(free_c, w, {"arrival_rate_req_per_s": 0.999 * cap_rate})
    capped = {**c, "headroom_w": 0.5 * (full["serving_power_w"] - c["static_power_w"])}
    s_cap = cap_rate / float(serving.serving_metrics(capped, w, {})["serving_capacity_req_per_s"])
    light = {"arrival_rate_req_per_s": 0.05 * cap_rate}
    s_light = float(serving.serving_metrics(capped, w, light)["tpot_p90_s"]
                    / serving.serving_metrics(free_c, w, light)["tpot_p90_s"])
    assert s_cap == pytest.approx(2.0, rel=0.05)
    assert s_light == pytest.approx(1.0, rel=1e-3)  # at 5% of capacity the mean power stays under the cap


# ---- properties --------------------------------------------------------------------------

def _one_design(model="llama-3-8b", platform="h100-sxm", **knobs):
    k = {**KNOB_DEFAULTS, **knobs}
    return serving_coeffs(dict(load_model(model).fields), k, dict(load_platform(platform).fields))


def test_latency_grows_with_load_and_goodput_meets_the_slos():
    c = _one_design()
    w = length_moments(load_workloads()["splitwise-conv"])
    s = {"ttft_slo_s": 0.5, "tpot_slo_s": 0.03}
    base = serving.serving_metrics(c, w, s)
    cap, good = float(base["serving_capacity_req_per_s"]), float(base["goodput_req_per_s"])
    assert 0.0 < good < cap
    at_good = serving.serving_metrics(c, w, {**s, "arrival_rate_req_per_s": good})
    assert at_good["ttft_p90_s"] <= 0.5 * 1.1 and at_good["tpot_p90_s"] <= 0.03 * 1.1
    rates = np.linspace(0.05, 0.95, 10) * cap
    out = serving.serving_metrics(c, w, {**s, "arrival_rate_req_per_s": rates})
    assert np.all(np.diff(out["ttft_p90_s"]) > 0) and np.all(np.diff(out["tpot_p90_s"]) > 0)
    assert np.all(np.diff(out["serving_batch"]) > 0)
    np.testing.assert_allclose(out["serving_tokens_per_s"], rates * w["out_mean"])
    looser = serving.serving_metrics(c, w, {"ttft_slo_s": 1.0, "tpot_slo_s": 0.06})
    assert looser["goodput_req_per_s"] >= good
    over = serving.serving_metrics(c, w, {**s, "arrival_rate_req_per_s": 2 * cap})
    assert np.isinf(over["ttft_p90_s"]) and over["serving_tokens_per_s"] == pytest.approx(cap * w["out_mean"])


def test_goodput_search_matches_a_dense_load_curve(monkeypatch):
    """The coarse grid + regula falsi goodput search and the batch solve of the operating point
    against the same model on a dense load grid (311 points): 3000 random designs (6 models,
    4 platforms, every verified workload, SLOs 0.2-10 s / 20-200 ms, offered rates 5-95% of
    capacity). Seed 5, |error| median / p90: goodput 0.0012 / 0.015, batch at an offered rate
    0.0000 / 0.0035, TTFT p90 p90 0.0002, TPOT p90 p90 0.0007 (since 57deaba; before it goodput
    0.0012 / 0.017, batch 0.0002 / 0.026, TTFT 0.007, TPOT 0.012; the former 10-point grid against its own dense
    curve: goodput 0.015 / 0.062 and 1% of designs with goodput 0 meeting the SLOs, batch
    0.006 / 0.065, TTFT p90 0.0007 / 0.009). At the goodput rate the SLO ratio is <= 1 for 90%
    of designs (median 0.98); above it only where the model's p90s jump with the load (the
    slot queue's onset, a change in the number of chunks)."""
    rng = np.random.default_rng(5)
    n = 3000
    m, k, hw = _design_batch(rng, n, "h100-sxm")
    for name in ("a100-sxm-80gb", "h200-sxm", "mi300x"):
        pick = rng.random(n) < 0.25
        for f in HARDWARE_FIELD_NAMES:
            hw[f] = np.where(pick, load_platform(name).fields[f], hw[f])
    s = {"token_budget": rng.choice([256.0, 512.0, 2048.0, 8192.0], n), "max_seqs": rng.choice([16.0, 64.0, 256.0], n),
         "ttft_slo_s": rng.choice([0.2, 0.5, 1.0, 3.0, 10.0], n), "tpot_slo_s": rng.choice([0.02, 0.05, 0.1, 0.2], n)}
    c = serving_coeffs(m, k, hw, s["token_budget"], s["max_seqs"])
    from dse.model.serving_lengths import stack_moments
    wls = [length_moments(wl) for wl in load_workloads().values() if wl.get("verified", True)]
    w = stack_moments(wls, rng.integers(0, len(wls), n))
    got = serving.serving_metrics(c, w, s)
    rates = {**s, "arrival_rate_req_per_s": got["serving_capacity_req_per_s"] * rng.uniform(0.05, 0.95, n)}
    got_rate = serving.serving_metrics(c, w, rates)
    monkeypatch.setattr(serving, "_GRID_BATCH_FRAC", tuple(np.r_[np.linspace(0.002, 0.998, 250), 1.0]))
    monkeypatch.setattr(serving, "_GRID_QUEUE_FRAC", tuple(np.linspace(0.01, 0.99, 60)))
    ref, ref_rate = serving.serving_metrics(c, w, s), serving.serving_metrics(c, w, rates)
    np.testing.assert_allclose(got["serving_capacity_req_per_s"], ref["serving_capacity_req_per_s"], rtol=1e-12)
    met = ref["goodput_req_per_s"] > 0
    assert np.array_equal(met, got["goodput_req_per_s"] > 0)
    ratio = np.maximum(got["ttft_p90_s"] / s["ttft_slo_s"], got["tpot_p90_s"] / s["tpot_slo_s"])[met]
    assert np.median(ratio) < 1.0 and np.quantile(ratio, 0.9) < 1.001
    e = np.abs(got["goodput_req_per_s"][met] / ref["goodput_req_per_s"][met] - 1.0)
    assert np.median(e) < 0.003 and np.quantile(e, 0.9) < 0.05
    e = np.abs(got_rate["serving_batch"] / ref_rate["serving_batch"] - 1.0)
    assert np.median(e) < 0.002 and np.quantile(e, 0.9) < 0.03
    for key in ("ttft_p90_s", "tpot_p90_s", "serving_power_w"):
        e = np.abs(got_rate[key] / ref_rate[key] - 1.0)
        assert np.quantile(e[np.isfinite(e)], 0.9) < 0.02, key


def test_batch_equals_row_by_row():
    rng = np.random.default_rng(4)
    m, k, hw = _design_batch(rng, 16, "a100-sxm-80gb")
    c = serving_coeffs(m, k, hw)
    w = length_moments(load_workloads()["arxiv-summarization"])
    s = {"token_budget": rng.choice([512.0, 2048.0, 8192.0], 16), "max_seqs": 128.0,
         "arrival_rate_req_per_s": rng.uniform(0.0, 3.0, 16)}
    batch = serving.serving_metrics(c, w, s)
    for i in range(16):
        ci = {key: (np.asarray(v)[:, i:i + 1] if np.ndim(v) == 2 else np.asarray(v)[i:i + 1] if np.ndim(v) else v)
              for key, v in c.items()}
        si = {key: (v[i:i + 1] if np.ndim(v) else v) for key, v in s.items()}
        row = serving.serving_metrics(ci, w, si)
        for key in serving.SERVING_METRICS:
            np.testing.assert_allclose(row[key][0], batch[key][i], rtol=1e-12, err_msg=key)


# ---- against the discrete-event reference ------------------------------------------------

_DES_MODELS = ("llama-3.2-1b", "llama-2-7b", "llama-3-8b", "mistral-7b", "llama-2-13b", "mixtral-8x7b")
_DES_PLATFORMS = ("h100-sxm", "a100-sxm-80gb", "h200-sxm", "mi300x")


def _random_case(rng, workloads):
    model = _DES_MODELS[rng.integers(len(_DES_MODELS))]
    knobs = {**KNOB_DEFAULTS, "w_bits": float(rng.choice([8.0, 4.0] if model == "mixtral-8x7b" else [16.0, 8.0, 4.0])),
             "kv_bits": float(rng.choice([16.0, 8.0]))}
    if rng.random() < 0.15:
        knobs.update(spec_len=3.0, spec_accept_frac=0.7)
    names = list(workloads)
    wl = workloads[names[rng.integers(len(names))]]
    sched = {"token_budget": float(rng.choice([256, 512, 1024, 2048, 4096, 8192])),
             "max_seqs": float(rng.choice([16, 32, 64, 128, 256])),
             "kv_block_tokens": float(rng.choice([16, 32])), "kv_watermark_frac": 0.01}
    c = serving_coeffs(dict(load_model(model).fields), knobs,
                       dict(load_platform(_DES_PLATFORMS[rng.integers(len(_DES_PLATFORMS))]).fields),
                       token_budget=sched["token_budget"], max_seqs=sched["max_seqs"])
    c["kv_capacity_bytes"] = c["kv_capacity_bytes"] * float(rng.choice([1.0, 1.0, 0.3, 0.1]))
    c["headroom_w"] = 1e9  # the queueing comparison runs without the power cap
    return c, wl, sched


def _des(c, wl, sched, rng, n, rate_frac):
    """One DES run on the analytic model's inputs; returns (analytic, DES) or None when the KV
    cache cannot hold the longest request. Analytic moments are those of the drawn sample."""
    prompt, output = sample(wl, n, rng)
    prompt, output = np.minimum(prompt, 16384.0), np.minimum(output, 4096.0)
    cs = {key: (np.asarray(v, dtype=float) if np.ndim(v) else float(v)) for key, v in c.items()}
    blk = int(sched["kv_block_tokens"])
    kv_tokens = cs["kv_capacity_bytes"] / cs["kv_bytes_per_token"]
    if kv_tokens < 1.2 * (prompt.max() + output.max() + 2 * blk):
        return None
    w = sample_moments(prompt, output)
    cap = float(serving.serving_metrics(c, w, sched)["serving_capacity_req_per_s"])
    kv_blocks = int(kv_tokens // blk)
    kw = {"token_budget": sched["token_budget"], "max_seqs": int(sched["max_seqs"]), "kv_blocks": kv_blocks,
          "block_tokens": blk, "watermark_blocks": int(0.01 * kv_blocks)}
    tpv = float(cs["dec_tokens_per_iter"])
    if rate_frac is None:  # saturation: everything arrives at t = 0
        res = simulate(cs, prompt, output, np.zeros(n), **kw)
        return cap * w["out_mean"], steady_stats(res, np.zeros(n), tpv, saturated=True)["tokens_per_s"]
    lam = rate_frac * cap
    arrival = np.cumsum(rng.exponential(1.0 / lam, n))
    ana = serving.serving_metrics(c, w, {**sched, "arrival_rate_req_per_s": lam})
    return ana, steady_stats(simulate(cs, prompt, output, arrival, **kw), arrival, tpv)


@pytest.mark.slow
def test_analytic_against_discrete_event_reference():
    """>= 50 random cases at 10-85% of the analytic capacity: relative error of TTFT p90, TPOT p90
    and throughput; >= 20 saturated cases for capacity. Printed, and the bulk held to tolerances."""
    rng = np.random.default_rng(20261129)
    workloads = {name: wl for name, wl in load_workloads().items() if wl.get("verified", True)}
    errs = {"ttft_p90": [], "tpot_p90": [], "throughput": [], "capacity": []}
    while len(errs["ttft_p90"]) < 50:
        c, wl, sched = _random_case(rng, workloads)
        got = _des(c, wl, sched, rng, 500, float(rng.uniform(0.1, 0.85)))
        if got is None:
            continue
        ana, des = got
        errs["ttft_p90"].append(float(ana["ttft_p90_s"]) / des["ttft_p90_s"] - 1.0)
        errs["tpot_p90"].append(float(ana["tpot_p90_s"]) / des["tpot_p90_s"] - 1.0)
        errs["throughput"].append(float(ana["serving_tokens_per_s"]) / des["tokens_per_s"] - 1.0)
    while len(errs["capacity"]) < 20:
        c, wl, sched = _random_case(rng, workloads)
        got = _des(c, wl, sched, rng, 500, None)
        if got is not None:
            errs["capacity"].append(got[0] / got[1] - 1.0)
    print()
    for key, e in errs.items():
        e = np.array(e)
        print(f"{key:11s} n={len(e)} median {np.median(e):+.3f}  p10 {np.quantile(e, 0.1):+.3f}  "
              f"p90 {np.quantile(e, 0.9):+.3f}  |e| median {np.median(abs(e)):.3f}  |e| p90 "
              f"{np.quantile(abs(e), 0.9):.3f}  max {abs(e).max():.3f}")
    e = {key: np.abs(np.array(v)) for key, v in errs.items()}
    assert np.median(e["ttft_p90"]) < 0.15 and np.mean(e["ttft_p90"] < 0.40) >= 0.75
    assert np.median(e["tpot_p90"]) < 0.08 and np.mean(e["tpot_p90"] < 0.25) >= 0.80
    assert np.mean(e["throughput"] < 0.10) >= 0.90
    assert np.median(e["capacity"]) < 0.08 and np.mean(e["capacity"] < 0.15) >= 0.80


def test_per_design_workloads_equal_shared_ones():
    """Workloads stacked per design (one stop-loss table per workload, a row per design) give what
    each shared one gives."""
    from dse.model.serving_lengths import stack_moments
    wls = load_workloads()
    moms = [length_moments(wls[name]) for name in ("splitwise-conv", "arxiv-summarization", "fixed-2048-512")]
    codes = np.array([0, 1, 2, 1, 0])
    c = _one_design()
    stacked = stack_moments(moms, codes)
    batch = serving.serving_metrics(c, stacked, {"token_budget": np.full(5, 1024.0)})
    # the same tables copied per design, (grid, n) (the form point masses take)
    per_design = {key: v for key, v in stacked.items() if key != "in_stoploss_rows"}
    per_design["in_stoploss"] = stacked["in_stoploss"][codes].T
    copied = serving.serving_metrics(c, per_design, {"token_budget": np.full(5, 1024.0)})
    for i, code in enumerate(codes):
        one = serving.serving_metrics(c, moms[code], {"token_budget": 1024.0})
        for key in serving.SERVING_METRICS:
            np.testing.assert_allclose(batch[key][i], one[key], rtol=1e-12, err_msg=key)
            np.testing.assert_allclose(copied[key][i], one[key], rtol=1e-12, err_msg=key)


# ---- the wired path (dse.evaluate with a workload) ------------------------------------------

def _wired(monkeypatch, design, model, platform):
    """``dse.evaluate`` of ``design`` with the inputs the serving stage handed to
    ``serving_metrics`` (coefficients of the whole replica, length moments, scheduler knobs)."""
    from dse.model import serving_stage
    got = {}
    real = serving_stage.serving_metrics

    def spy(c, w, s):
        got.update(c=c, w=w, s=s)
        return real(c, w, s)

    monkeypatch.setattr(serving_stage, "serving_metrics", spy)
    df = dse.evaluate(design, model=model, platform=platform)
    monkeypatch.setattr(serving_stage, "serving_metrics", real)
    return df, got


@pytest.mark.parametrize(("model", "platform", "design"), [
    ("llama-3-8b", "hgx-h100-8", {"tp": [2.0, 2.0, 2.0]}),
    ("mixtral-8x7b", "hgx-h100-8", {"tp": [2.0, 2.0, 1.0], "ep": [2.0, 1.0, 4.0], "w_bits": 8.0}),
    ("llama-3-70b", "hgx-h200-8", {"tp": [4.0, 4.0, 2.0], "spec_len": 3.0, "w_bits": 8.0}),
    ("llama-3-70b", "mi300x-8", {"tp": [8.0, 4.0, 2.0], "kv_bits": 8.0}),
    ("llama-3-70b", "hgx-a100-8", {"tp": [4.0, 4.0, 4.0], "dp": 2.0}),
])
def test_replica_recovers_the_static_model_exactly(monkeypatch, model, platform, design):
    """The coefficients the wired stage builds for a tp/ep replica (bottleneck-device terms,
    collectives per token and per head row, waiting power, replica energy and power cap) rebuild
    the static pipeline's ttft_s, tpot_s and tokens/J (point mass, all arrivals at t = 0)."""
    batch = np.array([1.0, 8.0, 64.0])
    df, got = _wired(monkeypatch, {**design, "workload": ["none"] * 3, "batch": batch, "in_len": 700.0,
                                   "out_len": 50.0}, model, platform)
    st = static_batch_times(got["c"], batch, 700.0, 50.0)
    np.testing.assert_allclose(st["ttft_s"], df["ttft_s"], rtol=1e-9)
    np.testing.assert_allclose(st["tpot_s"], df["tpot_s"], rtol=1e-9)
    np.testing.assert_allclose(batch * 50.0 / (st["prefill_j"] + st["decode_j"]), df["tokens_per_j"], rtol=1e-9)


def _des_power_capped(c1, prompt, output, arrival, kw) -> dict:
    """Steady-state DES statistics under a power cap averaged over the run (as a GPU holds its
    TDP over many iterations): the uniform stretch at which the steady window's mean dynamic
    power (links included, a small share) meets ``headroom_w``, by fixed-point iteration."""
    tpv, stretch = float(c1["dec_tokens_per_iter"]), 1.0
    for _ in range(4):
        res = simulate(c1, prompt, output, arrival, stretch=stretch, **kw)
        lo, hi = arrival[int(0.2 * len(arrival))], arrival[int(0.9 * len(arrival)) - 1]
        it = (res["iter_end_s"] >= lo) & (res["iter_end_s"] <= hi)
        power_w = res["iter_j"][it].sum() / res["iter_s"][it].sum()
        new = max(1.0, stretch * power_w / float(c1["headroom_w"]))
        if abs(new - stretch) < 0.003 * stretch:
            break
        stretch = new
    return steady_stats(res, arrival, tpv)


def _wired_case(rng, workloads):
    names = [*workloads, "none"]
    return {"model": str(rng.choice(["llama-3.2-1b", "llama-2-7b", "llama-3-8b", "mistral-7b"])),
            "platform": str(rng.choice(["h100-sxm", "a100-sxm-80gb", "h200-sxm", "hgx-h100-8"])),
            "knobs": {"w_bits": float(rng.choice([16.0, 8.0])), "kv_bits": float(rng.choice([16.0, 8.0])),
                      "workload": str(rng.choice(names)), "token_budget": float(rng.choice([512.0, 2048.0, 8192.0])),
                      "max_seqs": float(rng.choice([32.0, 128.0, 256.0])), "dp": float(rng.choice([1.0, 2.0]))},
            "load_frac": float(rng.uniform(0.2, 0.7))}


@pytest.mark.slow
def test_wired_path_against_discrete_event_reference(monkeypatch):
    """``dse.evaluate`` with a workload and an offered rate against the DES run on the replica
    coefficients the stage built (power cap: the DES finds the uniform stretch of its own steady
    mean power, the analytic model stretches at its operating point's mean iteration): a tp=2 Llama-3-70B FP8 replica
    on hgx-h100-8 plus 4 random single-device designs (dp 1-2, workloads with independent lengths
    or the design's own point mass), 1500 requests each, the analytic side on the workload's own
    moments (sampling noise included). Tolerances per case: TTFT p90 30%, TPOT p90 15%,
    throughput 10% (seed 7: |error| at most 0.09, 0.09 and 0.05)."""
    rng = np.random.default_rng(7)
    workloads = {name: wl for name, wl in load_workloads().items() if "in_out_mean" not in wl}  # DES draws P, O apart
    cases = [{"model": "llama-3-70b", "platform": "hgx-h100-8", "load_frac": 0.6,
              "knobs": {"tp": 2.0, "w_bits": 8.0, "a_bits": 8.0, "kv_bits": 8.0, "workload": "sharegpt-vllm-paper",
                        "token_budget": 2048.0, "max_seqs": 256.0}}]
    cases += [_wired_case(rng, workloads) for _ in range(4)]
    cases[1]["knobs"]["workload"] = "none"  # one point mass of the design's own lengths
    for case in cases:
        design = {key: [v, v] for key, v in case["knobs"].items()}  # two equal rows: arrays, not scalars
        design.update(in_len=600.0, out_len=150.0)
        first = dse.evaluate(design, model=case["model"], platform=case["platform"]).iloc[0]
        design["arrival_rate_req_per_s"] = case["load_frac"] * first["serving_capacity_req_per_s"]
        df, got = _wired(monkeypatch, design, case["model"], case["platform"])
        row, c, s = df.iloc[0], got["c"], got["s"]
        c1 = {key: (np.asarray(v, dtype=float)[..., 0] if np.ndim(v) else float(v)) for key, v in c.items()}
        c1 = {key: (v if np.ndim(v) else float(v)) for key, v in c1.items()}
        lam = float(np.atleast_1d(s["arrival_rate_req_per_s"])[0])  # per replica
        n = 1500
        if case["knobs"]["workload"] == "none":
            prompt, output = np.full(n, 600.0), np.full(n, 150.0)
        else:
            prompt, output = sample(workloads[case["knobs"]["workload"]], n, rng)
        arrival = np.cumsum(rng.exponential(1.0 / lam, n))
        kv_blocks = int(c1["kv_capacity_bytes"] / c1["kv_bytes_per_token"] // 16)
        kw = {"token_budget": float(np.atleast_1d(s["token_budget"])[0]), "kv_blocks": kv_blocks,
              "max_seqs": int(np.atleast_1d(s["max_seqs"])[0]), "block_tokens": 16,
              "watermark_blocks": int(0.01 * kv_blocks)}
        des = _des_power_capped(c1, prompt, output, arrival, kw)
        dp = case["knobs"].get("dp", 1.0)
        err = {"ttft": row["ttft_p90_s"] / des["ttft_p90_s"] - 1.0, "tpot": row["tpot_p90_s"] / des["tpot_p90_s"] - 1.0,
               "throughput": row["serving_tokens_per_s"] / dp / des["tokens_per_s"] - 1.0}
        print(case["model"], case["platform"], case["knobs"], {key: round(v, 3) for key, v in err.items()})
        assert abs(err["ttft"]) < 0.30 and abs(err["tpot"]) < 0.15 and abs(err["throughput"]) < 0.10, (case, err)
