"""Scalar reference implementation of the model, one design at a time, step by step.

Written independently of the vectorised code (no shared helpers) so that tests can
check :func:`dse.model.pipeline.evaluate_arrays` against it on random batches. It loops over
decode steps explicitly instead of using the closed-form sum. Slow by design.
"""

from __future__ import annotations

import math

from dse.model import parallel_reference as par_ref
from dse.spec.registry import INTEGER_GEMM_METHODS, KNOB_BY_NAME

PJ = 1e-12


def _native(hw: dict, bits: float) -> float:
    if bits <= 4 and hw["flop4_peak_flop_per_s"] > 0:
        return 4.0
    if bits <= 8 and hw["flop8_peak_flop_per_s"] > 0:
        return 8.0
    if bits <= 16 and hw["flop16_peak_flop_per_s"] > 0:
        return 16.0
    return 32.0


def _peak(hw: dict, native: float) -> float:
    return hw[{4.0: "flop4_peak_flop_per_s", 8.0: "flop8_peak_flop_per_s",
               16.0: "flop16_peak_flop_per_s", 32.0: "flop32_peak_flop_per_s"}[native]]


def _bytes_per_weight(k: dict) -> float:
    dense = k["w_bits"] / 8
    if k["nm_sparse"] > 0:
        stored = 0.5 * dense + 0.5 * 2 / 8
    elif k["w_sparsity_frac"] > 0:
        stored = (1 - k["w_sparsity_frac"]) * dense + 1 / 8
    else:
        stored = dense
    return min(stored, dense)


def _operators(m: dict, k: dict, tokens: float, context: float, prefill: bool, queries: float = 1) -> list[dict]:
    """Operators of one pass as dicts: name, flop, bytes, act (activation bytes), bits, sparse, kernels.

    A decode step runs ``queries`` positions per sequence (``tokens = batch * queries``)."""
    L, d, h, kv, hd = m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    E, top_k = m["n_experts"], m["n_experts_active"]
    ab, kvb, wb = k["a_bits"] / 8, k["kv_bits"] / 8, _bytes_per_weight(k)
    lin_bits = max(k["w_bits"], k["a_bits"])
    sparse = 0.5 if k["nm_sparse"] > 0 else 0.0
    method = KNOB_BY_NAME["quant_method"].choices[int(k["quant_method"])]
    integer = method in INTEGER_GEMM_METHODS and k["a_bits"] < 16  # integer weight GEMMs
    fp8 = method == "fp8" and k["a_bits"] < 16  # FP8 weight GEMMs (on FP8 units: evaluate_one's W8A16 rule)
    ops = []

    def linear(name, n_layers, n_tok, weights, flop_weights, act_elems, kernels):
        act = n_layers * n_tok * act_elems * ab
        ops.append({"name": name, "flop": n_layers * 2 * n_tok * flop_weights,
                    "bytes": n_layers * weights * wb + act, "act": act, "bits": lin_bits,
                    "sparse": sparse, "integer": integer, "fp8": fp8, "kernels": n_layers * kernels})

    w_qkv = d * (h + 2 * kv) * hd
    w_o = h * hd * d
    w_expert = (2 + m["ffn_gated"]) * d * m["d_ff"]
    w_router = d * E if E > 1 else 0.0
    touched = E * (1 - (1 - top_k / E) ** tokens)
    linear("qkv", L, tokens, w_qkv, w_qkv, d + (h + 2 * kv) * hd, 3)
    linear("o", L, tokens, w_o, w_o, h * hd + 2 * d, 2)
    linear("ffn", L, tokens, w_expert * touched + w_router, w_expert * top_k + w_router,
           2 * d + (1 + m["ffn_gated"]) * m["d_ff"] * top_k, 4 + (2 if E > 1 else 0))
    b = k["batch"]
    if prefill:
        n = k["in_len"]
        act = L * b * n * hd * (2 * h + 2 * kv) * ab
        ops.append({"name": "attn", "flop": L * 2 * b * h * hd * n * (n + 1),
                    "bytes": act + L * b * n * hd * 2 * kv * kvb, "act": act,
                    "bits": max(k["a_bits"], k["kv_bits"]), "sparse": 0.0, "kernels": 2 * L})
    else:
        act = L * tokens * hd * (2 * h + 2 * kv) * ab
        kv_read = L * 2 * b * kv * hd * context * kvb
        ops.append({"name": "attn", "flop": L * 4 * tokens * h * hd * context,
                    "bytes": act + L * tokens * hd * 2 * kv * kvb + kv_read, "kv_read": kv_read,
                    "act": act, "bits": max(k["a_bits"], k["kv_bits"]), "sparse": 0.0, "kernels": 2 * L})
    head_tokens = b if prefill else tokens
    linear("lm_head", 1, head_tokens, m["vocab_size"] * d, m["vocab_size"] * d, d + m["vocab_size"], 2)
    if not prefill and k["spec_len"] > 0:  # the draft model's steps before this verification
        g, frac = k["spec_len"], k["spec_draft_frac"]
        draft_weights = frac * _n_params(m)
        act = g * b * 2 * d * ab
        ops.append({"name": "draft", "flop": 2 * g * b * draft_weights, "bytes": g * draft_weights * wb + act,
                    "act": act, "bits": lin_bits, "sparse": sparse, "integer": integer, "fp8": fp8,
                    "kernels": g * (11 * L * math.sqrt(frac) + 2)})
    return ops


def _n_params(m: dict) -> float:
    L, kv, hd, E = m["n_layers"], m["n_kv_heads"], m["head_dim"], m["n_experts"]
    params = L * (m["d_model"] * (m["n_heads"] + 2 * kv) * hd + m["n_heads"] * hd * m["d_model"]
                  + E * (2 + m["ffn_gated"]) * m["d_model"] * m["d_ff"] + (m["d_model"] * E if E > 1 else 0))
    return params + m["vocab_size"] * m["d_model"] * (2 - m["tied_embeddings"])


def _shard(op: dict, f: dict) -> dict:
    """The bottleneck device's share of a replica operator (factors of parallel_reference.factors_one):
    stored weights/written KV scale by ``store``, KV read by ``kv``, activations by ``act``."""
    kv_read = op.get("kv_read", 0.0)
    stored = op["bytes"] - op["act"] - kv_read
    return {**op, "flop": op["flop"] * f["flop"], "act": op["act"] * f["act"], "kernels": op["kernels"] * f["kernels"],
            "bytes": stored * f["store"] + op["act"] * f["act"] + kv_read * f["kv"]}


def _run_op(op: dict, m: dict, k: dict, hw: dict, decode: bool, reach: float = 1.0) -> tuple[float, float]:
    """(seconds, dynamic joules) of one operator instance.

    A decode operator mapped to PIM (the device has PIM units and a host link) runs the share
    ``reach`` of its data in PIM, read as dense 16-bit, then the rest on the host."""
    level = 1 if op["name"] == "attn" else 2
    overhead = op["kernels"] * hw["kernel_overhead_s"]
    streams = k["batch"] / (k["ep"] * k["micro_batches"]) * math.ceil(m["n_kv_heads"] / k["tp"])  # (seq, KV head)
    decode_attn = decode and op["name"] == "attn"
    host_t, host_e = _host_op(op, hw, overhead, streams if decode_attn else 0.0)
    if decode_attn:  # the decode-attention kernels' energy over the rule, in full from 4 query rows per KV head
        rows = m["n_heads"] / m["n_kv_heads"] * (k["spec_len"] + 1)
        host_e *= 1 + (hw["decode_attn_energy_ratio"] - 1) * min(rows, 4) / 4
    can_pim = hw["pim_peak_flop_per_s"] > 0 and hw["pim_bw_bytes_per_s"] > 0 and hw["host_link_bw_bytes_per_s"] > 0
    if decode and k["pim_offload"] >= level and can_pim and reach > 0:
        stored_bits = k["kv_bits"] if op["name"] == "attn" else 8 * _bytes_per_weight(k)
        inbank = (op["bytes"] - op["act"]) * (16 / stored_bits) * reach
        link_s = op["act"] / hw["host_link_bw_bytes_per_s"]
        t = max(op["flop"] * reach / hw["pim_peak_flop_per_s"], inbank / hw["pim_bw_bytes_per_s"]) + link_s
        e = (op["flop"] * reach * hw["pim_energy_pj_per_flop"] + inbank * 8 * hw["pim_energy_pj_per_bit"]
             + op["act"] * 8 * hw["host_link_energy_pj_per_bit"]) * PJ
        return t + overhead + (1 - reach) * host_t, e + (1 - reach) * host_e
    return host_t, host_e


def _pim_reach(m: dict, k: dict, hw: dict) -> float:
    """Share of the offloaded data (16-bit KV cache, plus every decode weight at pim_offload 2) that fits
    in the PIM-capable memory ``pim_capacity_bytes`` (0: all memory), on the bottleneck device."""
    cap = hw.get("pim_capacity_bytes", 0.0)
    if cap <= 0:
        return 1.0
    devices = k["tp"] * k["pp"] * k["ep"]
    draft = k["spec_draft_frac"] if k["spec_len"] > 0 else 0.0
    weights = _n_params(m) * 2 * (1 + draft) / devices
    kv = (2 * math.ceil(m["n_layers"] / k["pp"]) * math.ceil(m["n_kv_heads"] / k["tp"]) * m["head_dim"]
          * (k["batch"] / k["ep"]) * (k["in_len"] + k["out_len"]) * 2)
    need = kv + (weights if k["pim_offload"] >= 2 else 0.0)
    return min(1.0, cap / need) if need > 0 else 1.0


def _host_op(op: dict, hw: dict, overhead: float, streams: float = 0.0) -> tuple[float, float]:
    """(seconds, dynamic joules) of one operator instance on the host; ``streams`` > 0: decode
    attention over that many (sequence, KV head) pairs, each read at most at
    ``attn_stream_bw_bytes_per_s`` (0: not limited)."""
    native = _native(hw, op["bits"])
    gain = 1 / (1 - op["sparse"] * hw["nm_sparsity_native"])
    flop_rate = _peak(hw, native) * hw["compute_eff_frac"] * gain * (hw["fp8_rate_frac"] if op.get("fp8") else 1)
    byte_rate = hw["mem_bw_bytes_per_s"] * hw["mem_bw_eff_frac"]
    stream_bw = hw.get("attn_stream_bw_bytes_per_s", 0.0)
    if streams > 0 and stream_bw > 0:
        byte_rate = min(byte_rate, streams * stream_bw)
    t = max(op["flop"] / flop_rate, op["bytes"] / byte_rate)
    fixed = hw["flop_energy_fixed_frac"]
    e_flop = hw["flop16_energy_pj_per_flop"] * (fixed + (1 - fixed) * native / 16) / gain  # 2:4: half the MACs
    if op.get("integer"):
        e_flop *= hw["int_op_energy_ratio"]
    e_bit = hw["mem_energy_pj_per_bit"] + hw["onchip_energy_pj_per_bit"] + 2 * hw["sram_energy_pj_per_bit"]
    return t + overhead, (op["flop"] * e_flop + op["bytes"] * 8 * e_bit) * PJ


def _capped(seconds: float, dynamic_j: float, hw: dict) -> float:
    return max(seconds, dynamic_j / max(hw["tdp_w"] - hw["static_power_w"], 1e-9))


def _single(k: dict) -> bool:
    return k["tp"] == 1 and k["pp"] == 1 and k["ep"] == 1 and k["micro_batches"] == 1


def _phase(m: dict, k: dict, hw: dict, op_lists: list[list[dict]], decode: bool, tokens: float,
           head_tokens: float) -> tuple[float, float]:
    """(seconds, joules) of one phase of one replica: the sharded operators of every step on the
    bottleneck device, then the pipeline and the collectives (parallel_reference)."""
    factors = par_ref.factors_one(m, k)
    reach = _pim_reach(m, k, hw) if decode else 1.0
    compute_s = dyn_j = head_s = 0.0
    for ops in op_lists:
        for op in ops:
            t, e = _run_op(_shard(op, factors[op["name"]]) if not _single(k) else op, m, k, hw, decode, reach)
            compute_s, dyn_j = compute_s + t, dyn_j + e
            head_s += t if op["name"] == "lm_head" else 0.0
    if _single(k):
        s = _capped(compute_s, dyn_j, hw)
        return s, dyn_j + hw["static_power_w"] * s
    steps = len(op_lists)
    comm = par_ref.stage_comm_one(m, k, hw, tokens, head_tokens)
    s = par_ref.phase_time_one(compute_s, head_s, comm, k, prefill=not decode, steps=steps)
    device_j = par_ref.device_dynamic_j_one(dyn_j, compute_s, comm, k, steps)  # + power held in collectives
    s = _capped(s, device_j, hw)
    devices = k["tp"] * k["pp"] * k["ep"]
    return s, devices * (device_j + hw["static_power_w"] * s) + steps * comm["energy_j"]


def evaluate_one(m: dict, k: dict, hw: dict) -> dict[str, float]:
    """All metric columns for one design (plain floats in, plain floats out)."""
    method = KNOB_BY_NAME["quant_method"].choices[int(k["quant_method"])]
    if method == "fp8" and k["a_bits"] < 16 and not hw["fp8_native"]:  # no FP8 units: runs W8A16
        k = {**k, "a_bits": 16.0}
    b, n_in, n_out = k["batch"], k["in_len"], k["out_len"]
    pre_s, pre_e = _phase(m, k, hw, [_operators(m, k, b * n_in, 0.0, prefill=True)], False, b * n_in, b)
    queries = k["spec_len"] + 1
    alpha = k["spec_accept_frac"]
    per_step = (1 - alpha ** queries) / (1 - alpha) if k["spec_len"] > 0 else 1.0  # expected accepted tokens
    steps = [_operators(m, k, b * queries, n_in + per_step * step, prefill=False, queries=queries)
             for step in range(1, math.ceil(n_out / per_step) + 1)]
    dec_s, dec_e = _phase(m, k, hw, steps, True, b * queries, b * queries)
    dp = k["dp"]
    tokens = b * n_out
    mem = par_ref.memory_one(m, k, _bytes_per_weight(k))
    tpot = dec_s / n_out
    n_devices = k["tp"] * k["pp"] * k["ep"] * dp
    out = {
        "ttft_s": pre_s, "tpot_s": tpot, "decode_tokens_per_s": dp * b / tpot,
        "tokens_per_s": dp * tokens / (pre_s + dec_s), "decode_power_w": dp * dec_e / dec_s,
        "avg_power_w": dp * (pre_e + dec_e) / (pre_s + dec_s), "decode_tokens_per_j": tokens / dec_e,
        "tokens_per_j": tokens / (pre_e + dec_e), "tdp_tokens_per_j": (dp * b / tpot) / (hw["tdp_w"] * n_devices),
        "memory_bytes": mem, "g_memory_bytes": mem - hw["mem_capacity_bytes"], "n_devices": n_devices,
        "c_link": 0.0,  # the reference is only run on designs with the links they need
    }
    assert all(math.isfinite(v) for v in out.values())
    return out
