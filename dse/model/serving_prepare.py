"""Serving stage: the per-design quantities of the fluid model that do not move with the batch
(:func:`prepare`, for :mod:`dse.model.serving_fluid` and :mod:`dse.model.serving_queue`), the
request's shape and the KV capacity.

Pure numpy over arrays (``(n,)`` designs). Inputs: the iteration coefficients ``c``
(:mod:`dse.model.serving_iteration`), the length moments ``w``
(:func:`dse.model.serving_lengths.length_moments`) and the scheduler knobs ``s``
(:data:`dse.model.serving.SCHED_DEFAULTS`). Everything that does not depend on the batch ``N``
(sums over GEMM rows, the prompt's own GEMM and attention terms, the constant parts of the energy)
is computed here once per design; the flags ``moe``, ``spec``, ``comm``, ``pipe`` and ``stream``
let the fluid model skip terms that are exactly zero for the whole batch
(``docs/serving.md`` section 6 gives the cost).
"""

from __future__ import annotations

import numpy as np

from dse.model.serving_iteration import FFN_ROW
from dse.model.serving_stoploss import _stoploss, layout, stoploss_of


def request_shape(c: dict, w: dict) -> tuple:
    """(decode iterations per request, mean attended context of a decode step), tokens.

    Step ``j`` attends ``P + tpv j``; averaged over the steps of all requests:
    ``E[P O] / E[O] + (E[O^2] / E[O] + tpv) / 2`` (exact for tpv = 1)."""
    tpv = c["dec_tokens_per_iter"]
    n_dec = w["out_mean"] / tpv + 0.5 * (1.0 - 1.0 / tpv)
    ctx = w["in_out_mean"] / w["out_mean"] + 0.5 * (w["out_sq_mean"] / w["out_mean"] + tpv)
    return n_dec, ctx


def kv_footprint_tokens(c: dict, w: dict, s: dict):
    """KV tokens held per decoding sequence: its mean context, half a block of fragmentation,
    and its share of the prompts reserved by sequences in prefill (``n_ch`` iterations each)."""
    k = s["token_budget"] / s["engines"] if "engines" in s else s["token_budget"]  # a prompt's chunks: its engine's
    return _footprint(request_shape(c, w), w, s, stoploss_of(w, k) / k)


def _footprint(shape: tuple, w: dict, s: dict, beyond):
    """:func:`kv_footprint_tokens` from the request's shape (:func:`request_shape`) and a prompt's
    chunks beyond the first, ``E[(P - k)+] / k``."""
    n_dec, ctx = shape
    frag = 0.5 * (s["kv_block_tokens"] - 1.0)
    n_ch = 1.0 + beyond
    return ctx + frag + n_ch * (w["in_mean"] + frag) / n_dec


def kv_max_seqs(c: dict, w: dict, s: dict):
    """Sequences the KV cache holds at the mean footprint (``kv_capacity_bytes`` less the watermark)."""
    tokens = c["kv_capacity_bytes"] / c["kv_bytes_per_token"] * (1.0 - s["kv_watermark_frac"])
    return np.maximum(np.floor(tokens / kv_footprint_tokens(c, w, s)), 0.0)


def _nonzero(*values) -> bool:
    return any(bool(np.any(np.asarray(v) != 0.0)) for v in values)


def prepare(c: dict, w: dict, s: dict) -> dict:
    """N-independent per-design quantities. The GEMM rows driven by the token count other than
    the ffn (qkv, o; lm_head in decode) are merged into one roofline for the fluid model: their
    compute/memory crossovers coincide up to the activation term, since every row reads
    ``w_bytes`` per ``2`` FLOPs per token. The ffn row stays apart (MoE reads its experts in
    proportion to those touched, which moves its crossover); the same formulas serve dense rows
    (one expert, always touched), so a design's result never depends on the rest of the batch.

    Flags for the batch (exact shortcuts, never a different formula): ``moe`` (any design with
    experts), ``spec`` (any verifying more than one token), ``comm`` (any collective term)."""
    cf, cm = np.asarray(c["lin_flop_s_per_tok"], dtype=float), np.asarray(c["lin_act_s_per_tok"], dtype=float)
    cw = np.asarray(c["lin_w_s"], dtype=float)
    d = {"q": c["dec_queries"], "tpv": c["dec_tokens_per_iter"], "mP": w["in_mean"],
         "moe": not np.all(np.asarray(c["moe_n_experts"]) == 1.0),
         "spec": bool(np.any(np.asarray(c["dec_queries"]) != 1.0)),
         "comm": _nonzero(c["fixed_s"], c["fixed_s_per_tok"], c["fixed_s_per_head"], c["fixed_j"],
                          c["fixed_j_per_tok"], c["fixed_j_per_head"])}
    # pipelines: pp virtual engines (round_limits' "engines"); a micro-batch carries its engine's chunks
    d["pipe"] = "engines" in s and _nonzero(np.asarray(s["engines"]) - 1.0)
    d["E"] = s["engines"] if d["pipe"] else 1.0
    d["point"] = w.get("in_point")  # every design a point mass: no tables
    # else the tables' (intercepts, slopes), flat, and each design's offset (None: one shared table)
    d["tab"], d["tab_at"] = (None, None) if d["point"] is not None else layout(w["in_stoploss"],
                                                                              w.get("in_stoploss_rows"))
    mP = d["mP"]
    d["n_dec"], d["ctx"] = request_shape(c, w)
    d["neg_inv_n_dec"] = -1.0 / d["n_dec"]
    d["kv_tok"] = np.maximum(c["kv_capacity_bytes"] / c["kv_bytes_per_token"], 0.0)  # < 0: the weights do not fit
    d["cf_d"], d["cm_d"], d["cw_d"] = cf[0] + cf[1] + cf[3], cm[0] + cm[1] + cm[3], cw[0] + cw[1] + cw[3]
    d["cf_p"], d["cm_p"] = cf[0] + cf[1], cm[0] + cm[1]  # prefill marginal: qkv, o (lm_head: one row)
    d["slope_p"] = np.maximum(d["cf_p"] - d["cm_p"], 0.0)
    d["cf_f"], d["cm_f"], d["cw_f"] = cf[FFN_ROW], cm[FFN_ROW], cw[FFN_ROW]  # router; experts added per tokens
    d["slope_f"] = np.maximum(d["cf_f"] - d["cm_f"], 0.0)
    # the ffn row's weight read at the decode batch: dense, the one "expert" always touched
    d["cw_f_dec"] = d["cw_f"] if d["moe"] else d["cw_f"] + c["moe_expert_w_s"]
    with np.errstate(divide="ignore", invalid="ignore"):
        d["cross_p"] = np.where(d["slope_p"] > 0.0, (cw[0] + cw[1]) / d["slope_p"], np.inf)
        all_experts = d["cw_f"] + c["moe_expert_w_s"] * c["moe_n_experts"]
        d["cross_f"] = np.where(d["slope_f"] > 0.0, all_experts / d["slope_f"], np.inf)
        d["cross_h"] = np.where(cf[3] > cm[3], cw[3] / (cf[3] - cm[3]), np.inf)
    d["cf_h"], d["cm_h"] = cf[3], cm[3]
    if d["pipe"]:
        E = d["E"]
        d["inv_E"] = 1.0 / E
        # a micro-batch's view: its crossover room is 1 / pp of the round's
        d["cross_p"], d["cross_f"] = d["cross_p"] * d["inv_E"], d["cross_f"] * d["inv_E"]
        # the stall's gap (pp - 1) D at x decode tokens: D = what the last stage runs per pass beyond the
        # others, the LM head (+ its gather per head row) and the draft launches,
        # max(x cf_h, cw_h + x cm_h) + la_h + x fixed_s_per_head, as one roofline times (pp - 1) / pp
        launch = np.asarray(c["lin_launch_s"], dtype=float)
        frac, la_h = (E - 1.0) * d["inv_E"], launch[3] + launch[4]
        d["gap_cf"] = (cf[3] + c["fixed_s_per_head"]) * frac
        d["gap_la"] = la_h * frac
        d["gap_cm"] = (cm[3] + c["fixed_s_per_head"]) * frac
        d["gap_w"] = (cw[3] + la_h) * frac
        # binomial K of pp micro-batches carrying chunks (serving_prefill.stall_row): pmf(0) = e^(-pp lam),
        # K = 1 .. max(pp) - 1
        d["neg_E"] = -E
        d["stall_terms"] = int(np.max(E)) - 1
    d["cf_x"], d["cm_x"], d["cw_x"] = cf[4], cm[4], cw[4]  # draft model, driven by decode sequences
    launch = np.asarray(c["lin_launch_s"], dtype=float)
    d["fixed"] = launch[:4].sum(axis=0) + c["attn_launch_s"] + c["fixed_s"] + launch[4]
    d["fx_dec"] = c["fixed_s_per_tok"] + c["fixed_s_per_head"]  # collectives per decode token (one head row each)
    fa, ma, ka = c["attn_flop_s_per_pair"], c["attn_act_s_per_tok"], c["attn_kv_s_per_tok"]
    d["att_seq"] = np.maximum(d["q"] * d["ctx"] * fa, d["q"] * ma + d["ctx"] * ka)  # decode attention per sequence
    d["att_fx"] = d["att_seq"] + d["fx_dec"] * d["q"]  # per decode sequence: attention + collectives
    # decode attention's stream limit: below attn_stream_seqs sequences its bytes take as long as
    # attn_stream_seqs sequences' would, max(N att_seq, att_floor) (affine in N only above)
    d["stream"] = _nonzero(c["attn_stream_seqs"])
    if d["stream"]:
        d["att_floor"] = c["attn_stream_seqs"] * (d["q"] * ma + d["ctx"] * ka)
        d["fx_seq"] = d["fx_dec"] * d["q"]
    k = s["token_budget"] / d["E"] if d["pipe"] else s["token_budget"]
    pi_b = _stoploss(d, k)  # (k >= 1)
    d["foot"] = _footprint((d["n_dec"], d["ctx"]), w, s, pi_b / k)  # kv_footprint_tokens
    kv_read = np.where(pi_b > 0.0, np.maximum(0.5 * w["in_sq_mean"] / k - 0.5 * mP, 0.0), 0.0)
    d["pairs"] = 0.5 * (w["in_sq_mean"] + mP)
    d["attn_pf"] = np.maximum(d["pairs"] * fa, mP * ma + kv_read * ka)  # causal prefill attention
    # a request's prefill marginal, the parts that do not move with N: activations of qkv/o and
    # ffn, causal attention, its first chunk's attention launch, its tokens' collectives
    d["act_p"], d["act_f"] = d["cm_p"] * mP, d["cm_f"] * mP
    d["la_pf"] = c["attn_launch_s"] / d["E"] if d["pipe"] else c["attn_launch_s"]  # a chunk's (pipelines: per pass)
    d["mp_fixed"] = d["attn_pf"] + d["la_pf"] + c["fixed_s_per_tok"] * mP
    d["inv_mP"] = 1.0 / mP
    # preemption's recomputed tokens, grow exp(-(max(kv_free - N foot, 0) + slack0) / grow)
    # (fluid_state): the exponent's slope in N, its constant and ln(grow) folded in
    grow = d["n_dec"] * d["tpv"]  # KV tokens a request adds while decoding
    wm = s["kv_watermark_frac"] * d["kv_tok"]
    d["foot_per_grow"] = d["foot"] / grow
    d["neg_free_per_grow"] = (wm - d["kv_tok"]) / grow
    d["slack_expo"] = np.log(grow) - (wm + 0.5 * mP) / grow
    # energy: the terms of one iteration that do not move with N (iteration_energy_j)
    ew = np.asarray(c["lin_w_j"], dtype=float)
    per_tok = np.asarray(c["lin_flop_j_per_tok"], dtype=float) + np.asarray(c["lin_act_j_per_tok"], dtype=float)
    fj, mj, kj = c["attn_flop_j_per_pair"], c["attn_act_j_per_tok"], c["attn_kv_j_per_tok"]
    d["e_w"] = ew[:4].sum(axis=0) + ew[4] + (0.0 if d["moe"] else c["moe_expert_w_j"])
    e_tok = per_tok[:4].sum(axis=0)  # per decode token
    # per decode sequence: its attention, its draft row, its q tokens
    d["e_dec"] = ((d["q"] * d["ctx"] * fj + (d["q"] * mj + d["ctx"] * kj)) * c["attn_dec_energy_ratio"]
                  + per_tok[4] + d["q"] * e_tok)
    d["e_pf_tok"] = per_tok[:3].sum(axis=0)  # per prompt token (incl. recomputed)
    # per request: its prompt's tokens, LM-head row, attention (recomputed tokens added per point)
    d["e_req"] = d["e_pf_tok"] * mP + per_tok[3] + d["pairs"] * fj + mP * mj
    d["headroom"] = np.maximum(c["headroom_w"], 1e-9)
    return d
