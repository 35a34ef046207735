"""Serving stage: the fluid operating point of the continuous-batching scheduler (for
:func:`dse.model.serving.serving_metrics`).

Pure numpy over arrays (``(n,)`` designs, an optional leading load-grid axis). Inputs: the
iteration coefficients ``c`` (:mod:`dse.model.serving_iteration`), the length moments ``w``
(:func:`dse.model.serving_lengths.length_moments`) and the scheduler knobs ``s``
(:data:`dse.model.serving.SCHED_DEFAULTS`). ``docs/serving.md`` section 2 gives the derivation.

**Fluid operating point.** With ``N`` sequences decoding and ``u = N / n_dec`` admissions per
iteration (``n_dec`` decode iterations per request), the mean iteration is
``tau(N) = t_d(N) + u * m_p(N)``: the pure-decode iteration at batch ``N`` (exact roofline of
the coefficients at the mean context ``c_bar``) plus the *marginal* cost of one request's
prefill on top of it. ``m_p`` prices each GEMM row as ``act * P + (flop - act) * E[(P - z)+]``
where ``z`` is the row's compute/memory crossover minus the decode tokens already in the
iteration (the piggy-backed prompt tokens below the crossover ride on the weight reads:
Sarathi-Serve's argument), with ``E[(P - z)+]`` from the distribution's stop-loss table,
chunks of ``K = token_budget - q N`` beyond the first priced at the full-chunk rate, the
crossover shared by the chunks that meet in one iteration (Poisson), causal attention over
``E[P (P+1) / 2]`` pairs, and recomputed tokens after preemptions. Little's law closes the
loop: ``N = lam * n_dec * tau_req(N)`` with the request-weighted iteration time
``tau_req = tau + tau' var(N) / N`` and ``var(N) = N / (1 - eps)``, ``eps = N tau' / tau``
(linear-noise batch fluctuation with the feedback of a slower iteration on lifetimes).

**Capacity.** ``N_cap = min(max_seqs, kv_max_seqs, token_budget / (q + E[P] / n_dec))``
(slots, KV cache at the mean footprint, or the token budget);
``serving_capacity_req_per_s = N_cap / (n_dec * tau(N_cap))``.
"""

from __future__ import annotations

import numpy as np

from dse.model.serving_iteration import FFN_ROW, waiting_j
from dse.model.serving_lengths import STOPLOSS_GRID, STOPLOSS_STEPS_PER_OCTAVE
from dse.model.serving_queue import crossover_room


def design_major(table) -> tuple[np.ndarray, np.ndarray]:
    """A stop-loss table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)`` per design) and
    its slopes between grid points, laid out for :func:`stoploss_at`'s gathers: per design
    ``(n, G)`` and ``(n, G - 1)``, C-contiguous (a design's table in one cache-friendly run)."""
    dg = np.diff(STOPLOSS_GRID)
    if np.ndim(table) == 1:
        return table, np.diff(table) / dg
    t = np.ascontiguousarray(np.asarray(table).T)
    return t, np.diff(t, axis=1) / dg


def stoploss_at(table, mean, z, slopes=None):
    """``E[(P - z)+]`` from the table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)``),
    linear between grid points; exact ``mean - z`` for ``z <= 0``. With ``slopes``, ``table``
    and ``slopes`` are :func:`design_major`'s (one gather fewer, cache-friendly)."""
    g = STOPLOSS_GRID
    zp = np.clip(z, 0.0, g[-1])
    pos = np.where(zp < 1.0, zp, 1.0 + np.log2(np.maximum(zp, 1.0)) * STOPLOSS_STEPS_PER_OCTAVE)
    i0 = np.clip(pos.astype(np.intp), 0, len(g) - 2)  # (NaN casts to the lowest integer)
    lo = np.take(g, i0)
    if slopes is None:
        if np.ndim(table) == 1:
            t0, t1 = table[i0], table[i0 + 1]
        else:
            cols = np.arange(table.shape[1])
            t0, t1 = table[i0, cols], table[i0 + 1, cols]
        return np.where(z < 0.0, mean - z, t0 + (t1 - t0) * ((zp - lo) / (g[i0 + 1] - lo)))
    if np.ndim(table) == 1:
        t0, s0 = np.take(table, i0), np.take(slopes, i0)
    else:  # per design, (n, G): one flat gather per table (np.take: faster than fancy indexing)
        row = np.arange(table.shape[0])
        t0, s0 = np.take(table, row * table.shape[1] + i0), np.take(slopes, row * slopes.shape[1] + i0)
    return np.where(z < 0.0, mean - z, t0 + s0 * (zp - lo))


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
    n_dec, ctx = request_shape(c, w)
    frag = 0.5 * (s["kv_block_tokens"] - 1.0)
    k = s["token_budget"]
    n_ch = 1.0 + stoploss_at(w["in_stoploss"], w["in_mean"], k) / k
    return ctx + frag + n_ch * (w["in_mean"] + frag) / n_dec


def kv_max_seqs(c: dict, w: dict, s: dict):
    """Sequences the KV cache holds at the mean footprint (``kv_capacity_bytes`` less the watermark)."""
    tokens = c["kv_capacity_bytes"] / c["kv_bytes_per_token"] * (1.0 - s["kv_watermark_frac"])
    return np.maximum(np.floor(tokens / kv_footprint_tokens(c, w, s)), 0.0)


def prepare(c: dict, w: dict, s: dict) -> dict:
    """N-independent per-design quantities. The GEMM rows driven by the token count other than
    the ffn (qkv, o; lm_head in decode) are merged into one roofline for the fluid model: their
    compute/memory crossovers coincide up to the activation term, since every row reads
    ``w_bytes`` per ``2`` FLOPs per token. The ffn row stays apart (MoE reads its experts in
    proportion to those touched, which moves its crossover); the same formulas serve dense rows
    (one expert, always touched), so a design's result never depends on the rest of the batch."""
    cf, cm = np.asarray(c["lin_flop_s_per_tok"], dtype=float), np.asarray(c["lin_act_s_per_tok"], dtype=float)
    cw = np.asarray(c["lin_w_s"], dtype=float)
    d = {"q": c["dec_queries"], "tpv": c["dec_tokens_per_iter"], "mP": w["in_mean"], "tab": w["in_stoploss"],
         "moe": not np.all(np.asarray(c["moe_n_experts"]) == 1.0),
         "spec": bool(np.any(np.asarray(c["dec_queries"]) > 1.0))}
    d["tab"], d["tab_slopes"] = design_major(w["in_stoploss"])
    d["n_dec"], d["ctx"] = request_shape(c, w)
    d["kv_tok"] = np.maximum(c["kv_capacity_bytes"] / c["kv_bytes_per_token"], 0.0)  # < 0: the weights do not fit
    d["foot"] = kv_footprint_tokens(c, w, s)
    d["cf_d"], d["cm_d"], d["cw_d"] = cf[0] + cf[1] + cf[3], cm[0] + cm[1] + cm[3], cw[0] + cw[1] + cw[3]
    d["cf_p"], d["cm_p"] = cf[0] + cf[1], cm[0] + cm[1]  # prefill marginal: qkv, o (lm_head: one row)
    d["slope_p"] = np.maximum(d["cf_p"] - d["cm_p"], 0.0)
    d["cf_f"], d["cm_f"], d["cw_f"] = cf[FFN_ROW], cm[FFN_ROW], cw[FFN_ROW]  # router; experts added per tokens
    d["slope_f"] = np.maximum(d["cf_f"] - d["cm_f"], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d["cross_p"] = np.where(d["slope_p"] > 0.0, (cw[0] + cw[1]) / d["slope_p"], np.inf)
        all_experts = d["cw_f"] + c["moe_expert_w_s"] * c["moe_n_experts"]
        d["cross_f"] = np.where(d["slope_f"] > 0.0, all_experts / d["slope_f"], np.inf)
        d["cross_h"] = np.where(cf[3] > cm[3], cw[3] / (cf[3] - cm[3]), np.inf)
    d["cf_h"], d["cm_h"] = cf[3], cm[3]
    d["cf_x"], d["cm_x"], d["cw_x"] = cf[4], cm[4], cw[4]  # draft model, driven by decode sequences
    launch = np.asarray(c["lin_launch_s"], dtype=float)
    d["fixed"] = launch[:4].sum(axis=0) + c["attn_launch_s"] + c["fixed_s"] + launch[4]
    d["fx_dec"] = c["fixed_s_per_tok"] + c["fixed_s_per_head"]  # collectives per decode token (one head row each)
    fa, ma, ka = c["attn_flop_s_per_pair"], c["attn_act_s_per_tok"], c["attn_kv_s_per_tok"]
    d["att_seq"] = np.maximum(d["q"] * d["ctx"] * fa, d["q"] * ma + d["ctx"] * ka)  # decode attention per sequence
    k = s["token_budget"]
    pi_b = stoploss_at(d["tab"], d["mP"], k, d["tab_slopes"])
    kv_read = np.where(pi_b > 0.0, np.maximum(0.5 * w["in_sq_mean"] / k - 0.5 * d["mP"], 0.0), 0.0)
    d["pairs"] = 0.5 * (w["in_sq_mean"] + d["mP"])
    d["attn_pf"] = np.maximum(d["pairs"] * fa, d["mP"] * ma + kv_read * ka)  # causal prefill attention
    d["grow"] = d["n_dec"] * d["tpv"]
    d["wm"] = s["kv_watermark_frac"] * d["kv_tok"]
    return d


def _touched(c: dict, d: dict, tokens):
    """Expected experts touched by ``tokens`` tokens (1 for a dense model)."""
    if not d["moe"]:
        return 1.0
    e = c["moe_n_experts"]
    return e * (1.0 - (1.0 - c["moe_top_k"] / e) ** np.maximum(tokens, 1.0))


def fluid_state(c: dict, d: dict, s: dict, n) -> dict:
    """Fluid operating point at ``n`` decoding sequences (module docstring); ``n`` may carry a
    leading grid axis."""
    q, mP, tab = d["q"], d["mP"], d["tab"]
    x = q * n
    comp = x * d["cf_d"]
    mem = d["cw_d"] + x * d["cm_d"]
    t_d = np.maximum(comp, mem) + d["fixed"] + n * d["att_seq"] + d["fx_dec"] * x
    slope_d = q * np.where(comp > mem, d["cf_d"], d["cm_d"]) + d["att_seq"] + d["fx_dec"] * q
    f_comp, f_mem = x * d["cf_f"], d["cw_f"] + c["moe_expert_w_s"] * _touched(c, d, x) + x * d["cm_f"]
    t_d = t_d + np.maximum(f_comp, f_mem)
    slope_d = slope_d + q * np.where(f_comp > f_mem, d["cf_f"], d["cm_f"])
    if d["spec"]:  # draft rows are zero without speculation: the same result either way
        x_comp, x_mem = n * d["cf_x"], d["cw_x"] + n * d["cm_x"]
        t_d = t_d + np.maximum(x_comp, x_mem)
        slope_d = slope_d + np.where(x_comp > x_mem, d["cf_x"], d["cm_x"])
    # marginal prefill of one request at this batch: chunks of k, Poisson-shared crossover room
    k = np.maximum(s["token_budget"] - x, 1.0)
    pi_k = stoploss_at(tab, mP, k, d["tab_slopes"])
    n_ch = 1.0 + pi_k / k
    lam_ch = n / d["n_dec"] * n_ch
    share = np.where(lam_ch > 1e-9, -np.expm1(-lam_ch) / np.maximum(lam_ch, 1e-9), 1.0)
    tab = (tab, d["tab_slopes"])
    lin = _prefill_gemm_s(tab, mP, k, pi_k, d["cm_p"], d["slope_p"], crossover_room(d["cross_p"], x, share))
    lin_f = _prefill_gemm_s(tab, mP, k, pi_k, d["cm_f"], d["slope_f"], crossover_room(d["cross_f"], x, share))
    if d["moe"]:  # a chunk touches more experts than the decode tokens: read once per mixed iteration
        lin_f = lin_f + c["moe_expert_w_s"] * (_touched(c, d, x + np.minimum(mP, k)) - _touched(c, d, x)) * n_ch * share
    lin = lin + lin_f
    head = np.where(x > d["cross_h"], d["cf_h"], d["cm_h"]) + c["fixed_s_per_head"]
    per_token = lin / mP + c["fixed_s_per_tok"]
    # preemption: decode growth outruns the free slack before a completion frees blocks
    slack = d["wm"] + np.maximum(d["kv_tok"] - d["wm"] - n * d["foot"], 0.0) + 0.5 * mP
    recompute = d["grow"] * np.exp(-slack / d["grow"])  # tokens per request
    mp = lin + head + d["attn_pf"] + n_ch * c["attn_launch_s"] + c["fixed_s_per_tok"] * mP + recompute * per_token
    # fluid pass (u = N / n_dec), then the arrival rate with the prefill queued behind each
    # request's own (arrivals during its TTFT run during its first decode iterations)
    tau_fluid = t_d + n / d["n_dec"] * mp
    ttft0 = n_ch * t_d + mp
    lam = _rate(n, d["n_dec"] * _tau_req(n, tau_fluid, slope_d * tau_fluid / t_d), ttft0 * mp, mp)
    rho_p = np.minimum(lam * mp, 0.95)
    tau = t_d / (1.0 - rho_p)  # second pass: tau = t_d + lam tau m_p
    slope = slope_d / (1.0 - rho_p)  # prefill per iteration follows arrivals, not the batch
    eps = np.clip(n * slope / tau, 0.0, 0.95)
    tau_req = tau + slope / (1.0 - eps)
    lam = _rate(n, d["n_dec"] * tau_req, ttft0 * mp, mp)
    x_req = lam * ttft0 * mp / (1.0 - np.minimum(lam * mp, 0.95))
    return {"n": n, "t_d": t_d, "slope_d": slope_d, "k": k, "n_ch": n_ch, "share": share, "mp": mp,
            "tau_fluid": tau_fluid, "tau": tau, "slope": slope, "eps": eps, "tau_req": tau_req, "x_req": x_req,
            "ttft0": ttft0, "lam": lam, "recompute": recompute, "x": x, "lin_f": lin_f}


def _prefill_gemm_s(tab, mp_tokens, k, pi_k, cm, slope, z):
    """Expected GEMM seconds a prompt adds: ``cm P + slope E[(P - z)+]`` over the first chunk of
    ``k`` plus the tokens beyond it at the full-chunk rate (``tab``: stop-loss table, slopes)."""
    first = stoploss_at(tab[0], mp_tokens, np.clip(z, 0.0, k), tab[1]) - pi_k
    full = pi_k / k * (np.maximum(k - z, 0.0) - np.maximum(-z, 0.0))
    return cm * mp_tokens + slope * (first + full)


def _tau_req(n, tau, slope):
    """Request-weighted iteration time ``tau + slope var(N) / N``, ``var(N) = N / (1 - eps)``."""
    eps = np.clip(n * slope / tau, 0.0, 0.95)
    return tau + slope / (1.0 - eps)


def _rate(n, a, b, c):
    """Arrival rate ``lam`` with ``n = lam (a + lam b / (1 - lam c))`` (Little's law with the decode
    time ``a`` per request plus the queued prefill ``lam b / (1 - lam c)``): root of
    ``(b - a c) lam^2 + (a + n c) lam - n = 0`` in the stable form."""
    return 2.0 * n / (a + n * c + np.sqrt((a - n * c) ** 2 + 4.0 * n * b))


def iteration_energy_j(c: dict, d: dict, st: dict, u) -> tuple:
    """Mean dynamic joules of one iteration at operating point ``st`` with ``u`` admissions per
    iteration, as (devices, links). Devices: the decode iteration (weights, per-token GEMM work,
    decode attention) + the prefill of ``u`` requests (GEMM work per prompt token incl.
    recomputed ones, one LM-head row, causal attention) + compute power while waiting in the
    collectives over the iteration's operator time ``t_d + u m_p - t_comm``. Links: the
    collectives' energy."""
    q, n, mP, x = d["q"], st["n"], d["mP"], st["x"]
    ew = np.asarray(c["lin_w_j"], dtype=float)
    per_tok = np.asarray(c["lin_flop_j_per_tok"], dtype=float) + np.asarray(c["lin_act_j_per_tok"], dtype=float)
    fj, mj, kj = c["attn_flop_j_per_pair"], c["attn_act_j_per_tok"], c["attn_kv_j_per_tok"]
    weights = ew[:4].sum(axis=0) + c["moe_expert_w_j"] * _touched(c, d, x + u * mP)
    dec = weights + x * per_tok[:4].sum(axis=0) + n * q * d["ctx"] * fj + n * (q * mj + d["ctx"] * kj)
    dec = dec + ew[4] + n * per_tok[4]
    pf_tok = mP + st["recompute"]
    pre = pf_tok * per_tok[:3].sum(axis=0) + per_tok[3] + d["pairs"] * fj + mP * mj
    ops_j = dec + u * pre
    link_j = (c["fixed_j"] + (c["fixed_j_per_tok"] + c["fixed_j_per_head"]) * x
              + u * (pf_tok * c["fixed_j_per_tok"] + c["fixed_j_per_head"]))
    comm_s = c["fixed_s"] + d["fx_dec"] * x + u * (pf_tok * c["fixed_s_per_tok"] + c["fixed_s_per_head"])
    return ops_j + waiting_j(ops_j, st["t_d"] + u * st["mp"] - comm_s, comm_s), link_j
