"""Pipelines under continuous batching: the analytic round (``pp`` virtual engines priced as ``pp``
passes of the last stage plus one micro-batch's sends, ``dse.model.serving_mapping``) against the
discrete-event reference's pipeline mode (``tests/serving_des.py``: ``pp`` engines with their own
limits, micro-batches of unequal content moving through the stages, the LM head on the last stage).

The error distribution is printed (``pytest -s``) and recorded in ``docs/serving.md`` (Pipelines).
"""

from __future__ import annotations

import numpy as np
import pytest

import dse
from dse.model import serving, serving_stage
from dse.model.serving_lengths import sample, sample_moments
from dse.spec.workloads import load_workloads
from tests.serving_des import iteration_time_one, pipeline_stage_coeffs, simulate_pipeline, steady_stats

_WORKLOADS = ("sharegpt-vllm-paper", "chat-lognormal", "uniform-chat", "splitwise-conv", "fixed-128-128")
_PROMPT_HEAVY = ("chat-lognormal", "splitwise-conv")
_DESIGNS = (  # (model, platform, knobs): 8-bit 70B so that a stage of 2 still holds a KV cache
    ("llama-3-8b", "hgx-h100-8", {}),
    ("llama-3-70b", "hgx-h100-8", {"w_bits": 8.0, "a_bits": 8.0, "kv_bits": 8.0}),
    ("llama-3-8b", "rtxpro6000-pcie-8", {"w_bits": 8.0, "a_bits": 8.0}),
    ("llama-3-70b", "rtxpro6000-pcie-8", {"w_bits": 8.0, "a_bits": 8.0, "kv_bits": 8.0}),
)


def _captured(monkeypatch, model, platform, design):
    """The round coefficients, scheduler limits and ``replica_coeffs``' inputs of one design (first row
    of two equal ones: arrays, as the evaluator builds them)."""
    got = {}
    real_c, real_m = serving_stage.replica_coeffs, serving_stage.serving_metrics

    def spy_c(c, m, k, hw, *rest):
        got.update(m=m, k=k, hw=hw)
        return real_c(c, m, k, hw, *rest)

    def spy_m(c, w, s):
        got.update(c=c, s=s)
        return real_m(c, w, s)

    monkeypatch.setattr(serving_stage, "replica_coeffs", spy_c)
    monkeypatch.setattr(serving_stage, "serving_metrics", spy_m)
    dse.evaluate({key: [v, v] for key, v in design.items()}, model=model, platform=platform)
    monkeypatch.setattr(serving_stage, "replica_coeffs", real_c)
    monkeypatch.setattr(serving_stage, "serving_metrics", real_m)
    c1 = {key: (np.asarray(v, dtype=float)[..., 0] if np.ndim(v) else float(v)) for key, v in got["c"].items()}
    c1 = {key: (v if np.ndim(v) else float(v)) for key, v in c1.items()}
    return got, c1


def _round_check(c1, stages):
    """pp equal micro-batches through pp last-stage passes and pp - 1 sends are the round (dense model)."""
    pp = stages["pp"]
    f = {"n_tok": 900.0, "n_head": 40.0, "n_draft": 0.0, "pf_pairs": 3.0e5, "pf_tok": 860.0, "pf_kv": 200.0,
         "dec_pairs": 40.0 * 900.0, "dec_tok": 40.0, "dec_kv": 40.0 * 900.0}
    passes = pp * iteration_time_one(stages["last"], f) + (pp - 1) * (stages["hop_s"] + stages["hop_s_per_tok"] * 900.0)
    assert passes == pytest.approx(iteration_time_one(c1, {key: v * pp for key, v in f.items()}), rel=1e-9)


def _case(rng, monkeypatch, workloads, n):
    model, platform, knobs = _DESIGNS[rng.integers(len(_DESIGNS))]
    design = {**knobs, "pp": float(rng.choice([2.0, 4.0])), "tp": float(rng.choice([1.0, 2.0])),
              "token_budget": float(rng.choice([512.0, 1024.0, 2048.0])),
              "max_seqs": float(rng.choice([16.0, 32.0, 64.0, 128.0])), "workload": "none"}
    got, c1 = _captured(monkeypatch, model, platform, design)
    c1["headroom_w"] = 1e9  # queueing, not the power cap
    c = {**got["c"], "headroom_w": np.full(2, 1e9)}
    stages = pipeline_stage_coeffs(c1, got["m"], got["k"], got["hw"])
    _round_check(c1, stages)
    name = _WORKLOADS[rng.integers(len(_WORKLOADS))]
    prompt, output = sample(workloads[name], n, rng)
    w = sample_moments(prompt, output)
    s = got["s"]
    pp = stages["pp"]
    blk = int(np.ravel(s["kv_block_tokens"])[0])
    kv_blocks = int(c1["kv_capacity_bytes"] / c1["kv_bytes_per_token"] // blk)
    if kv_blocks // pp * blk < 1.2 * (prompt.max() + output.max() + 2 * blk):
        return None
    kw = {"token_budget": design["token_budget"], "max_seqs": int(design["max_seqs"]), "kv_blocks": kv_blocks,
          "block_tokens": blk, "watermark_blocks": int(0.01 * kv_blocks / pp)}
    at_cap = serving.serving_metrics(c, w, s)
    cap = float(at_cap["serving_capacity_req_per_s"][0])
    frac = float(rng.uniform(0.2, 0.8))
    arrival = np.cumsum(rng.exponential(1.0 / (frac * cap), n))
    ana = serving.serving_metrics(c, w, {**s, "arrival_rate_req_per_s": np.full(2, frac * cap)})
    des = steady_stats(simulate_pipeline(stages, prompt, output, arrival, **kw), arrival)
    # saturation: three times the capacity batch queued at t = 0 (the first half of the run is measured)
    n_sat = max(n, int(3.0 * min(pp * design["max_seqs"], float(at_cap["kv_max_seqs"][0]))))
    p_sat, o_sat = sample(workloads[name], n_sat, rng)
    sat = steady_stats(simulate_pipeline(stages, p_sat, o_sat, np.zeros(n_sat), **kw), np.zeros(n_sat), saturated=True)
    w_sat = sample_moments(p_sat, o_sat)
    cap_tok = float(serving.serving_metrics(c, w_sat, s)["serving_capacity_req_per_s"][0]) * float(w_sat["out_mean"])
    label = f"{model} {platform} pp{pp} tp{int(design['tp'])} {name} B{int(design['token_budget'])} " \
            f"S{int(design['max_seqs'])} load {frac:.2f}"
    return label, {"capacity": cap_tok / sat["tokens_per_s"] - 1.0,
                   "ttft_p90": float(ana["ttft_p90_s"][0]) / des["ttft_p90_s"] - 1.0,
                   "tpot_p90": float(ana["tpot_p90_s"][0]) / des["tpot_p90_s"] - 1.0}


@pytest.mark.slow
def test_pipeline_rounds_against_discrete_event_pipeline(monkeypatch):
    """>= 20 random pipelines (pp 2/4, tp 1/2, hgx-h100-8 and rtxpro6000-pcie-8, Llama-3 8B/70B, five
    workloads, 16-128 sequences and 512-2048 tokens per micro-batch, 20-80% of the analytic capacity):
    relative error analytic/DES - 1 of the output-token throughput at capacity (a saturated run),
    TTFT p90 and TPOT p90 at the offered rate. Printed; tolerances in the assertions."""
    rng = np.random.default_rng(20260611)
    workloads = load_workloads()
    errs: dict[str, list[float]] = {"capacity": [], "ttft_p90": [], "tpot_p90": []}
    heavy = []  # prompt-heavy workloads (mean prompt > 2.5 x mean output): prefill chunks dominate micro-batches
    print()
    while len(errs["capacity"]) < 20:
        got = _case(rng, monkeypatch, workloads, 400)
        if got is None:
            continue
        label, e = got
        print(f"  {label:75s} " + "  ".join(f"{key} {v:+.3f}" for key, v in e.items()))
        heavy.append(any(name in label for name in _PROMPT_HEAVY))
        for key, v in e.items():
            errs[key].append(v)
    heavy = np.array(heavy)
    for key, e in errs.items():
        e = np.array(e)
        print(f"{key:9s} n={len(e)} median {np.median(e):+.3f}  p90 {np.quantile(e, 0.9):+.3f}  "
              f"|e| median {np.median(abs(e)):.3f}  |e| p90 {np.quantile(abs(e), 0.9):.3f}  max {abs(e).max():.3f}  "
              f"median prompt-heavy {np.median(e[heavy]):+.3f} (n={heavy.sum()}), others {np.median(e[~heavy]):+.3f}")
    a = {key: np.abs(np.array(v)) for key, v in errs.items()}
    # seed 20260611, rounds with the carrying micro-batch's stall, per-engine chunks and per-pass
    # launches: capacity |e| median 0.033, p90 0.075, max 0.10; TPOT 0.010 / 0.039 / 0.041; TTFT 0.14 /
    # 0.51 / 2.6 (short prompts at light load still too high). Before (one pooled round): capacity
    # 0.084 / 0.19 / 0.61, TPOT 0.064 / 0.18 / 0.24, TTFT 0.42 / 0.66 / 1.8 (docs/serving.md, Pipelines)
    assert a["capacity"].max() < 0.15 and np.median(a["capacity"]) < 0.06
    assert a["tpot_p90"].max() < 0.08 and np.median(a["tpot_p90"]) < 0.03
    assert np.median(a["ttft_p90"]) < 0.25 and np.mean(a["ttft_p90"] < 0.60) >= 0.85
