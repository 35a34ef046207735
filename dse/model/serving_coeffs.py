"""Serving stage, part 0: per-design iteration coefficients from the per-operator model.

Pure numpy. Turns the operators of :func:`dse.model.workload.phase_ops` into the coefficients
of :mod:`dse.model.serving_iteration` (its docstring defines every key). Each operator of the
static model is ``max(flop * s_per_flop, bytes * s_per_byte) + kernels * kernel_overhead_s``
with ``flop`` and ``bytes`` affine in the tokens of the pass; the coefficients are those
affine terms, so one mixed iteration is priced by the same rooflines as the static model's
prefill pass and decode steps (exactness: ``tests/model/test_serving.py``).

Not represented: PIM offload (decode operators are costed on the host here), parallel
mapping (the mapping stage adds its collectives through ``fixed_s``/``fixed_s_per_tok`` and
divides the per-device terms; see ``docs/serving.md``).
"""

from __future__ import annotations

import numpy as np

from dse.model import perf, power
from dse.model.serving_iteration import LIN_ROWS
from dse.model.workload import layer_params, n_params, stored_weight_bytes, tokens_per_verify, weight_bytes_per_param


def serving_coeffs(m: dict, k: dict, hw: dict, token_budget=2048.0, max_seqs=256.0) -> dict[str, np.ndarray]:
    """Coefficients of one iteration for each design (``m`` card, ``k`` knobs, ``hw`` platform).

    ``token_budget`` (tokens per iteration) and ``max_seqs`` size the activation and logits
    workspace that is subtracted from memory with the weights to give ``kv_capacity_bytes``.
    """
    wb = weight_bytes_per_param(k)
    a_b, kv_b = k["a_bits"] / 8.0, k["kv_bits"] / 8.0
    nl, d, h, kv, hd = m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    v, e, top_k = m["vocab_size"], m["n_experts"], m["n_experts_active"]
    p = layer_params(m)

    (lin_spf, lin_jpf), (attn_spf, attn_jpf) = power.op_rates(hw, k)  # the static model's rates and prices
    spb = perf.mem_s_per_byte(hw)
    j_per_byte = power.j_per_dram_byte(hw)
    koh = hw["kernel_overhead_s"]

    g = np.where(k["spec_len"] > 0, k["spec_len"], 0.0)
    draft_params = k["spec_draft_frac"] * n_params(m)
    moe = e > 1
    # per row: (flop per driver token, weight bytes per pass, activation bytes per driver token, kernels)
    flop = (2.0 * nl * p["qkv"], 2.0 * nl * p["o"], 2.0 * nl * (p["ffn_expert"] * top_k + p["router"]),
            2.0 * v * d, 2.0 * g * draft_params)
    wbytes = (nl * p["qkv"] * wb, nl * p["o"] * wb, nl * p["router"] * wb, v * d * wb, g * draft_params * wb)
    act = (nl * (d + (h + 2.0 * kv) * hd) * a_b, nl * (h * hd + 2.0 * d) * a_b,
           nl * (2.0 * d + (1.0 + m["ffn_gated"]) * m["d_ff"] * top_k) * a_b, (d + v) * a_b, g * 2.0 * d * a_b)
    kernels = (3.0 * nl, 2.0 * nl, nl * (4.0 + np.where(moe, 2.0, 0.0)), 2.0,
               g * (11.0 * nl * np.sqrt(k["spec_draft_frac"]) + 2.0))

    def rows(values) -> np.ndarray:  # (rows, n) or (rows, 1): never mistaken for the design axis
        return np.stack(np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in values))).reshape(len(values), -1)

    flop, wbytes, act, kernels = rows(flop), rows(wbytes), rows(act), rows(kernels)  # each scaled below

    expert_bytes = nl * p["ffn_expert"] * wb
    pairs_flop = 4.0 * nl * h * hd
    tok_bytes = nl * hd * (2.0 * h + 2.0 * kv) * a_b + nl * hd * 2.0 * kv * kv_b
    kv_token_bytes = 2.0 * nl * kv * hd * kv_b
    spec = k["spec_len"] > 0
    dec_queries = k["spec_len"] + 1.0  # 1 without speculation
    weights = stored_weight_bytes(m, k, wb)
    widest = np.maximum((h + 2.0 * kv) * hd, (1.0 + m["ffn_gated"]) * m["d_ff"] * top_k)
    workspace = token_budget * (d + widest) * a_b + max_seqs * v * 4.0
    zero = 0.0 * wb
    # decode attention's stream limit (perf.attn_s_per_byte): one sequence's streams (its KV heads)
    # alone read at attn_s_per_byte(hw, 0, kv) s/B; n sequences at 1/n of it, so the limit binds
    # below stream_seqs = that / spb sequences (0: not limited)
    stream_seqs = perf.attn_s_per_byte(hw, 0.0, kv) / spb
    c = {
        "lin_flop_s_per_tok": flop * lin_spf, "lin_w_s": wbytes * spb,
        "lin_act_s_per_tok": act * spb, "lin_launch_s": kernels * koh,
        "moe_expert_w_s": expert_bytes * spb,
        "attn_flop_s_per_pair": pairs_flop * attn_spf, "attn_act_s_per_tok": tok_bytes * spb,
        "attn_kv_s_per_tok": kv_token_bytes * spb, "attn_launch_s": 2.0 * nl * koh,
        "fixed_s": zero, "fixed_s_per_tok": zero, "fixed_s_per_head": zero,
        "lin_flop_j_per_tok": flop * lin_jpf, "lin_w_j": wbytes * j_per_byte,
        "lin_act_j_per_tok": act * j_per_byte, "moe_expert_w_j": expert_bytes * j_per_byte,
        "attn_flop_j_per_pair": pairs_flop * attn_jpf, "attn_act_j_per_tok": tok_bytes * j_per_byte,
        "attn_kv_j_per_tok": kv_token_bytes * j_per_byte, "fixed_j": zero, "fixed_j_per_tok": zero,
        "fixed_j_per_head": zero,
        "moe_n_experts": e + zero, "moe_top_k": top_k + zero,
        "dec_queries": dec_queries + zero,
        "attn_dec_energy_ratio": power.decode_attn_energy_ratio(hw, m, dec_queries) + zero,
        "dec_tokens_per_iter": np.where(spec, tokens_per_verify(k), 1.0) + zero,
        "static_power_w": hw["static_power_w"] + zero, "headroom_w": hw["tdp_w"] - hw["static_power_w"] + zero,
        "kv_bytes_per_token": kv_token_bytes + zero,
        "kv_capacity_bytes": hw["mem_capacity_bytes"] - weights - workspace + zero,
        "attn_stream_seqs": stream_seqs + zero,
    }
    assert len(LIN_ROWS) == c["lin_w_s"].shape[0]
    return c
