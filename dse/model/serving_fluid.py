"""Serving stage: the fluid operating point of the continuous-batching scheduler (for
:func:`dse.model.serving.serving_metrics`).

Pure numpy over arrays (``(n,)`` designs, an optional leading load-grid axis). Inputs: the
iteration coefficients ``c`` (:mod:`dse.model.serving_iteration`), the length moments ``w``
(:func:`dse.model.serving_lengths.length_moments`) and the scheduler knobs ``s``
(:data:`dse.model.serving.SCHED_DEFAULTS`). ``docs/serving.md`` section 2 gives the derivation.

**Fluid operating point.** With ``N`` sequences decoding and ``u = N / n_dec`` admissions per
iteration (``n_dec`` decode iterations per request), the mean iteration is
``tau(N) = t_d(N) + u * m_p(N)``: the pure-decode iteration at batch ``N`` (exact roofline of
the coefficients at the mean context ``c_bar``; decode attention ``max(N a, a_floor)``, constant
in ``N`` below ``attn_stream_seqs`` where its (sequence, KV head) streams bound the read) plus
the *marginal* cost of one request's prefill on top of it. ``m_p`` prices each GEMM row as
``act * P + (flop - act) * E[(P - z)+]`` where ``z`` is the row's compute/memory crossover minus
the decode tokens already in the iteration (the piggy-backed prompt tokens below the crossover
ride on the weight reads: Sarathi-Serve's argument), with ``E[(P - z)+]`` from the distribution's stop-loss table,
chunks of ``K = token_budget - q N`` beyond the first priced at the full-chunk rate, the
crossover shared by the chunks that meet in one iteration (Poisson), causal attention over
``E[P (P+1) / 2]`` pairs, and recomputed tokens after preemptions. Little's law closes the
loop: ``N = lam * n_dec * tau_req(N)`` with the request-weighted iteration time
``tau_req = tau + tau' var(N) / N`` and ``var(N) = N / (1 - eps)``, ``eps = N tau' / tau``
(linear-noise batch fluctuation with the feedback of a slower iteration on lifetimes).

**Capacity.** ``N_cap = min(max_seqs, kv_max_seqs, token_budget / (q + E[P] / n_dec))``
(slots, KV cache at the mean footprint, or the token budget);
``serving_capacity_req_per_s = N_cap / (n_dec * tau(N_cap))``.

**Cost.** Everything that does not depend on the batch ``N`` (sums over GEMM rows, the
prompt's own GEMM and attention terms, the constant parts of the energy) is computed once per
design in :func:`prepare`; the collectives' terms are skipped on a single device, the MoE terms
for dense models and the draft rows without speculation (all exact: they are zero there), so
:func:`fluid_state` and :func:`iteration_energy_j` do only the work that moves with ``N``
(``docs/serving.md`` section 6 gives the cost).
"""

from __future__ import annotations

import numpy as np

from dse.model.serving_iteration import FFN_ROW, waiting_j
from dse.model.serving_lengths import STOPLOSS_GRID, STOPLOSS_STEPS_PER_OCTAVE

try:  # the ufunc behind np.clip, without its Python wrapper (np.maximum with a scalar is ~2x slower)
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover (numpy < 2)
    _clip = np.clip

_INF = np.inf
_GMAX = float(STOPLOSS_GRID[-1])
_ILAST = float(len(STOPLOSS_GRID) - 2)  # the last interval


def lower(a, lo):
    """``max(a, lo)`` for a scalar ``lo`` (NaN propagates), as one clip pass."""
    return _clip(a, lo, _INF)


def upper(a, hi):
    """``min(a, hi)`` for a scalar ``hi`` (NaN propagates), as one clip pass."""
    return _clip(a, -_INF, hi)


def design_major(table) -> tuple[np.ndarray, np.ndarray]:
    """A stop-loss table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)`` per design) and
    its slopes between grid points, laid out for :func:`stoploss_at`'s gathers: per design
    ``(n, G)`` and ``(n, G - 1)``, C-contiguous (a design's table in one cache-friendly run)."""
    dg = np.diff(STOPLOSS_GRID)
    if np.ndim(table) == 1:
        return table, np.diff(table) / dg
    t = np.ascontiguousarray(np.asarray(table).T)
    return t, np.diff(t, axis=1) / dg


def stoploss_at(table, mean, z, slopes=None, rows=None, point=None):
    """``E[(P - z)+]`` from the table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)``),
    linear between grid points; exact ``mean - z`` for ``z <= 0``. With ``slopes``, ``table``
    and ``slopes`` are :func:`design_major`'s (one gather fewer, cache-friendly). With ``rows``
    (integers per design), ``table`` is a set of tables ``(R, G)`` and design ``j`` reads row
    ``rows[j]`` (the moments' ``in_stoploss_rows`` form, :func:`stoploss_of`). With ``point``
    (every design's prompt length; ``table`` unused), the table of that point mass,
    ``max(point - grid, 0)``, read where it is needed instead of stored."""
    g = STOPLOSS_GRID
    if slopes is not None:
        pair = None if rows is None else (rows * table.shape[1], rows * slopes.shape[1])
        return np.where(z < 0.0, mean - z, _lookup(table, slopes, pair, np.maximum(z, 0.0)))
    zp = np.clip(z, 0.0, g[-1])
    pos = np.where(zp < 1.0, zp, 1.0 + np.log2(np.maximum(zp, 1.0)) * STOPLOSS_STEPS_PER_OCTAVE)
    i0 = np.clip(pos.astype(np.intp), 0, len(g) - 2)  # (NaN casts to the lowest integer)
    lo = np.take(g, i0)
    if point is not None:
        t0, t1 = np.maximum(point - lo, 0.0), np.maximum(point - g[i0 + 1], 0.0)
    elif rows is not None:
        at = rows * table.shape[1] + i0
        t0, t1 = np.take(table, at), np.take(table, at + 1)
    elif np.ndim(table) == 1:
        t0, t1 = table[i0], table[i0 + 1]
    else:
        cols = np.arange(table.shape[1])
        t0, t1 = table[i0, cols], table[i0 + 1, cols]
    return np.where(z < 0.0, mean - z, t0 + (t1 - t0) * ((zp - lo) / (g[i0 + 1] - lo)))


def _lookup(table, slopes, rows, z):
    """``E[(P - z)+]`` for ``z >= 0`` from :func:`design_major`'s ``table`` and ``slopes``
    (``rows``: :func:`_rows` of a per-design table, None to compute them): the grid interval
    from ``log2`` (``z < 1``: the first), one gather each for the table, its slope and the grid
    point; as :func:`stoploss_at`. NaN propagates (its index is clipped)."""
    zp = upper(z, _GMAX)
    pos = np.log2(lower(zp, 1.0))
    pos *= STOPLOSS_STEPS_PER_OCTAVE
    pos += upper(zp, 1.0)  # z < 1: pos = z (interval 0); else 1 + 4 log2(z)
    i0 = upper(pos, _ILAST).astype(np.intp)
    lo = np.take(STOPLOSS_GRID, i0, mode="clip")
    zp -= lo
    if np.ndim(table) == 1:
        t0, s0 = np.take(table, i0, mode="clip"), np.take(slopes, i0, mode="clip")
    else:  # per design, (n, G): one flat gather per table (np.take: faster than fancy indexing)
        rows_t, rows_s = _rows(table) if rows is None else rows
        t0, s0 = np.take(table, i0 + rows_t, mode="clip"), np.take(slopes, i0 + rows_s, mode="clip")
    zp *= s0
    zp += t0
    return zp


def stoploss_of(w: dict, z):
    """``E[(P - z)+]`` of length moments ``w`` (a shared table, ``(G, n)`` tables per design, or a
    set of tables with ``in_stoploss_rows``)."""
    if "in_point" in w:
        return stoploss_at(None, w["in_mean"], z, point=w["in_point"])
    return stoploss_at(w["in_stoploss"], w["in_mean"], z, rows=w.get("in_stoploss_rows"))


def _stoploss(d: dict, z):
    """``E[(P - z)+]`` for ``z >= 0`` from what :func:`prepare` keeps: the point masses' closed
    form or the tables."""
    if d["point"] is not None:
        return _lookup_point(d["point"], z)
    return _lookup(d["tab"], d["tab_slopes"], d["rows"], z)


_DG = np.diff(STOPLOSS_GRID)


def _lookup_point(point, z):
    """:func:`_lookup` of the point mass at ``point`` (``E[(P - z)+]`` linear between grid
    points of ``max(point - grid, 0)``, the same numbers as its table, none stored)."""
    zp = upper(z, _GMAX)
    pos = np.log2(lower(zp, 1.0))
    pos *= STOPLOSS_STEPS_PER_OCTAVE
    pos += upper(zp, 1.0)
    i0 = upper(pos, _ILAST).astype(np.intp)
    lo = np.take(STOPLOSS_GRID, i0, mode="clip")
    t0 = lower(point - lo, 0.0)
    s0 = lower(point - np.take(STOPLOSS_GRID, i0 + 1, mode="clip"), 0.0)
    s0 -= t0
    s0 /= np.take(_DG, i0, mode="clip")
    zp -= lo
    zp *= s0
    zp += t0
    return zp


def _rows(table) -> tuple:
    """Each design's offset into a per-design ``(n, G)`` table and its ``(n, G - 1)`` slopes."""
    i = np.arange(table.shape[0])
    return i * table.shape[1], i * (table.shape[1] - 1)


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
    k = s["token_budget"] / s["engines"] if "engines" in s else s["token_budget"]  # a prompt's chunks: its engine's
    n_ch = 1.0 + stoploss_of(w, k) / k
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
    dg = np.diff(STOPLOSS_GRID)
    d = {"q": c["dec_queries"], "tpv": c["dec_tokens_per_iter"], "mP": w["in_mean"],
         "moe": not np.all(np.asarray(c["moe_n_experts"]) == 1.0),
         "spec": bool(np.any(np.asarray(c["dec_queries"]) != 1.0)),
         "comm": _nonzero(c["fixed_s"], c["fixed_s_per_tok"], c["fixed_s_per_head"], c["fixed_j"],
                          c["fixed_j_per_tok"], c["fixed_j_per_head"])}
    # pipelines: pp virtual engines (round_limits' "engines"); a micro-batch carries its engine's chunks
    d["pipe"] = "engines" in s and _nonzero(np.asarray(s["engines"]) - 1.0)
    d["E"] = s["engines"] if d["pipe"] else 1.0
    d["point"] = w.get("in_point")  # every design a point mass: no tables
    if d["point"] is not None:
        d["tab"] = d["tab_slopes"] = d["rows"] = None
    elif "in_stoploss_rows" in w:  # a few tables (R, G), design j reads row rows[j]
        d["tab"], d["tab_slopes"] = np.ascontiguousarray(w["in_stoploss"]), np.diff(w["in_stoploss"], axis=1) / dg
        rows = np.asarray(w["in_stoploss_rows"], dtype=np.intp)
        d["rows"] = (rows * d["tab"].shape[1], rows * d["tab_slopes"].shape[1])
    else:
        d["tab"], d["tab_slopes"] = design_major(w["in_stoploss"])
        d["rows"] = None if np.ndim(d["tab"]) == 1 else _rows(d["tab"])
    mP = d["mP"]
    d["n_dec"], d["ctx"] = request_shape(c, w)
    d["inv_n_dec"] = 1.0 / d["n_dec"]
    d["kv_tok"] = np.maximum(c["kv_capacity_bytes"] / c["kv_bytes_per_token"], 0.0)  # < 0: the weights do not fit
    d["foot"] = kv_footprint_tokens(c, w, s)
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
    if d["pipe"]:  # what the last stage runs per pass beyond the others: LM head (+ its gather), draft launches
        launch = np.asarray(c["lin_launch_s"], dtype=float)
        d["cw_h"], d["la_h"] = cw[3], launch[3] + launch[4]
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
    kv_read = np.where(pi_b > 0.0, np.maximum(0.5 * w["in_sq_mean"] / k - 0.5 * mP, 0.0), 0.0)
    d["pairs"] = 0.5 * (w["in_sq_mean"] + mP)
    d["attn_pf"] = np.maximum(d["pairs"] * fa, mP * ma + kv_read * ka)  # causal prefill attention
    # a request's prefill marginal, the parts that do not move with N: activations of qkv/o and
    # ffn, causal attention, its first chunk's attention launch, its tokens' collectives
    d["act_p"], d["act_f"] = d["cm_p"] * mP, d["cm_f"] * mP
    d["la_pf"] = c["attn_launch_s"] / d["E"] if d["pipe"] else c["attn_launch_s"]  # a chunk's (pipelines: per pass)
    d["mp_fixed"] = d["attn_pf"] + d["la_pf"] + c["fixed_s_per_tok"] * mP
    d["inv_mP"] = 1.0 / mP
    d["grow"] = d["n_dec"] * d["tpv"]
    d["neg_inv_grow"] = -1.0 / d["grow"]
    d["wm"] = s["kv_watermark_frac"] * d["kv_tok"]
    d["kv_free"] = d["kv_tok"] - d["wm"]
    d["slack0"] = d["wm"] + 0.5 * mP
    # energy: the terms of one iteration that do not move with N (iteration_energy_j)
    ew = np.asarray(c["lin_w_j"], dtype=float)
    per_tok = np.asarray(c["lin_flop_j_per_tok"], dtype=float) + np.asarray(c["lin_act_j_per_tok"], dtype=float)
    fj, mj, kj = c["attn_flop_j_per_pair"], c["attn_act_j_per_tok"], c["attn_kv_j_per_tok"]
    d["e_w"] = ew[:4].sum(axis=0) + ew[4] + (0.0 if d["moe"] else c["moe_expert_w_j"])
    d["e_tok"] = per_tok[:4].sum(axis=0)  # per decode token
    d["e_seq"] = d["q"] * d["ctx"] * fj + (d["q"] * mj + d["ctx"] * kj) + per_tok[4]  # per decode sequence
    d["e_pf_tok"] = per_tok[:3].sum(axis=0)  # per prompt token (incl. recomputed)
    d["e_pf"] = per_tok[3] + d["pairs"] * fj + mP * mj  # per request: LM-head row, attention
    d["headroom"] = np.maximum(c["headroom_w"], 1e-9)
    return d


def _touched(c: dict, d: dict, tokens):
    """Expected experts touched by ``tokens`` tokens (1 for a dense model)."""
    if not d["moe"]:
        return 1.0
    e = c["moe_n_experts"]
    return e * (1.0 - (1.0 - c["moe_top_k"] / e) ** np.maximum(tokens, 1.0))


def _gemm_group(x, cf, cm, cw):
    """(time, slope in ``x``) of one roofline ``max(x cf, cw + x cm)``."""
    comp = x * cf
    mem = x * cm
    mem += cw
    return np.maximum(comp, mem), np.where(comp > mem, cf, cm)


def fluid_state(c: dict, d: dict, s: dict, n) -> dict:
    """Fluid operating point at ``n`` decoding sequences (module docstring); ``n`` may carry a
    leading grid axis."""
    q, mP = d["q"], d["mP"]
    x = q * n if d["spec"] else n  # decode tokens (q = 1 for every design without speculation)
    t_d, sel = _gemm_group(x, d["cf_d"], d["cm_d"], d["cw_d"])
    f_cw = d["cw_f_dec"] + c["moe_expert_w_s"] * _touched(c, d, x) if d["moe"] else d["cw_f_dec"]
    t_f, sel_f = _gemm_group(x, d["cf_f"], d["cm_f"], f_cw)
    t_d += t_f
    sel += sel_f
    t_d += d["fixed"]
    if d["stream"]:  # decode attention: max(N att_seq, att_floor), slope 0 where stream-bound
        att = n * d["att_seq"]
        bound = att < d["att_floor"]
        t_d += np.maximum(att, d["att_floor"])
        if d["comm"]:
            t_d += n * d["fx_seq"]
    else:
        t_d += n * d["att_fx"]
    if d["spec"]:  # draft rows are zero without speculation: the same result either way
        sel *= q
        t_x, sel_x = _gemm_group(n, d["cf_x"], d["cm_x"], d["cw_x"])
        t_d += t_x
        sel += sel_x
    slope_d = sel
    slope_d += np.where(bound, d["fx_seq"], d["att_fx"]) if d["stream"] else d["att_fx"]
    # marginal prefill of one request at this batch: chunks of k, Poisson-shared crossover room
    # pipelines (pp virtual engines): one micro-batch's view, its engine's budget, 1 / pp of the decode
    # tokens and of the round's crossover room (each pass reads the stage's weights), chunks meeting there
    pipe, E = d["pipe"], d["E"]
    xm = x / E if pipe else x
    k = lower((s["token_budget"] - x) / E, 1.0) if pipe else lower(s["token_budget"] - x, 1.0)
    pi_k = _stoploss(d, k)
    r = pi_k / k  # chunks beyond the first
    n_ch = r + 1.0
    u0 = n * d["inv_n_dec"]
    lam_ch = lower(u0 / E * n_ch, 1e-9) if pipe else lower(u0 * n_ch, 1e-9)
    share = -np.expm1(-lam_ch)
    share /= lam_ch
    cross_p, cross_f = (d["cross_p"] / E, d["cross_f"] / E) if pipe else (d["cross_p"], d["cross_f"])
    z, lin = _prefill_gemm_s(d, xm, k, pi_k, r, share, cross_p, d["act_p"], d["slope_p"])
    _, lin_f = _prefill_gemm_s(d, xm, k, pi_k, r, share, cross_f, d["act_f"], d["slope_f"])
    if d["moe"]:  # a chunk touches more experts than the decode tokens: read once per mixed iteration
        w_exp = c["moe_expert_w_s"] / E if pipe else c["moe_expert_w_s"]
        lin_f = lin_f + w_exp * (_touched(c, d, xm + np.minimum(mP, k)) - _touched(c, d, xm)) * n_ch * share
    lin = lin + lin_f
    mp = np.where(x > d["cross_h"], d["cf_h"], d["cm_h"])  # the LM-head row
    per_token = lin * d["inv_mP"]
    if d["comm"]:
        mp += c["fixed_s_per_head"]
        per_token += c["fixed_s_per_tok"]
    # preemption: decode growth outruns the free slack before a completion frees blocks
    slack = lower(d["kv_free"] - n * d["foot"], 0.0)
    slack += d["slack0"]
    slack *= d["neg_inv_grow"]
    slack = _clip(slack, -700.0, _INF, out=slack)  # exp underflow takes libm's slow path (7x); e^-700 ~ 1e-304
    recompute = np.exp(slack, out=slack)
    recompute *= d["grow"]  # tokens per request
    mp += lin
    mp += d["mp_fixed"]
    mp += r * d["la_pf"]
    per_token *= recompute
    mp += per_token
    mp_own = mp  # the stage time of one request's prefill
    if pipe:
        mp_own = mp * E  # its own chunk rounds: pp passes of its micro-batch
        stall = _stall(c, d, x, u0, mp, lam_ch)  # 0 where nothing decodes (u0 = 0)
        mp = mp + np.where(u0 > 0.0, stall / np.where(u0 > 0.0, u0, 1.0), 0.0)
    # fluid pass (u = N / n_dec), then the arrival rate with the prefill queued behind each
    # request's own (arrivals during its TTFT run during its first decode iterations);
    # eps = N tau' / tau is the same in both passes (tau and tau' scale together)
    ttft0 = n_ch * t_d
    ttft0 += mp_own
    g = slope_d / t_d
    eps = _clip(n * g, 0.0, 0.95)
    f_req = 1.0 - eps
    np.divide(g, f_req, out=f_req)
    f_req += 1.0  # tau_req / tau = 1 + (tau' / tau) / (1 - eps)
    nmp = n * mp
    b4 = 4.0 * nmp
    b4 *= ttft0
    tau_fluid = u0 * mp
    tau_fluid += t_d
    a = d["n_dec"] * tau_fluid
    a *= f_req
    lam = _rate_nc(n, a, b4, nmp)
    rho_p = upper(lam * mp, 0.95)
    one_m = 1.0 - rho_p
    tau = t_d / one_m  # second pass: tau = t_d + lam tau m_p
    slope = slope_d / one_m  # prefill per iteration follows arrivals, not the batch
    tau_req = tau * f_req
    lam = _rate_nc(n, d["n_dec"] * tau_req, b4, nmp)
    lmp = lam * mp
    x_req = lmp * ttft0
    x_req /= 1.0 - upper(lmp, 0.95)
    return {"n": n, "t_d": t_d, "slope_d": slope_d, "k": k, "n_ch": n_ch, "share": share, "mp": mp,
            "tau": tau, "slope": slope, "eps": eps, "tau_req": tau_req, "x_req": x_req,
            "ttft0": ttft0, "lam": lam, "recompute": recompute, "x": x, "lin_f": lin_f, "z_p": z,
            "mp_own": mp_own}


def _stall(c: dict, d: dict, x, u0, mp, lam_ch):
    """Pipelines: the round time a carrying micro-batch's stall adds to the pooled round ``t_d + u0 mp``.

    A stage serves the micro-batches in order and an engine schedules its next one only when its
    last has left the pipeline, so the round is the longer of the last stage's load (the pooled round,
    ``t_d + sum X_i`` with ``X_i`` a micro-batch's prefill time per pass) and the trip of the heaviest
    micro-batch, whose ``pp - 1`` passes through the earlier stages are shorter than the last stage's
    by ``D`` (LM head, draft launches): ``t_d + pp X_max - (pp - 1) D``. With ``K`` of the ``pp``
    micro-batches carrying chunks (binomial, each with probability ``phi = 1 - e^-lam_ch``) and each
    carrying ``C = u0 mp / (pp phi)``, the stall is ``E[((pp - K) C - (pp - 1) D)+; K >= 1]``."""
    E = d["E"]
    lam = upper(lam_ch, 50.0)
    phi = -np.expm1(-lam)
    odds = np.expm1(lam)  # phi / (1 - phi)
    carry = u0 / E * mp / phi
    th, _ = _gemm_group(x, d["cf_h"], d["cm_h"], d["cw_h"])
    gap = (E - 1.0) * (th + d["la_h"] + c["fixed_s_per_head"] * x) / E  # (pp - 1) D
    pmf = np.exp(-E * lam)  # K = 0
    out = 0.0
    for kk in range(1, int(np.max(E))):  # K = pp adds nothing
        pmf = pmf * ((E - kk + 1.0) / kk * odds)
        out = out + pmf * lower((E - kk) * carry - gap, 0.0)
    return out


def _prefill_gemm_s(d: dict, x, k, pi_k, r, share, cross, act, slope):
    """(room, expected GEMM seconds a prompt adds): ``cm P + slope E[(P - z)+]`` over the first
    chunk of ``k`` plus the tokens beyond it at the full-chunk rate (``r = E[(P - k)+] / k``),
    ``z`` the prompt tokens that ride below the compute/memory crossover ``cross`` on top of the
    ``x`` decode tokens, shared by the chunks that meet in one iteration (negative:
    compute-bound). Returns ``z`` clipped to ``[0, k]``."""
    z = cross - x
    z = np.minimum(z, z * share)  # (cross - x) share where positive (share <= 1), else cross - x
    z = _clip(z, 0.0, _INF, out=z)
    np.minimum(z, k, out=z)
    first = _stoploss(d, z)
    first -= pi_k
    full = k - z  # = max(k - z, 0) - max(-z, 0) before the clip
    full *= r
    first += full
    first *= slope
    first += act
    return z, first


def _rate_nc(n, a, b4, nc):
    """:func:`_rate` with ``b4 = 4 n b`` and ``nc = n c`` given."""
    root = a - nc
    root *= root
    root += b4
    root = np.sqrt(root, out=root)
    root += a
    root += nc
    return np.divide(2.0 * n, root, out=root)


def _rate(n, a, b, c):
    """Arrival rate ``lam`` with ``n = lam (a + lam b / (1 - lam c))`` (Little's law with the decode
    time ``a`` per request plus the queued prefill ``lam b / (1 - lam c)``): root of
    ``(b - a c) lam^2 + (a + n c) lam - n = 0`` in the stable form."""
    return 2.0 * n / (a + n * c + np.sqrt((a - n * c) ** 2 + 4.0 * n * b))


def iteration_energy_j(c: dict, d: dict, st: dict, u, links: bool = True) -> tuple:
    """Mean dynamic joules of one iteration at operating point ``st`` with ``u`` admissions per
    iteration, as (devices, links). Devices: the decode iteration (weights, per-token GEMM work,
    decode attention) + the prefill of ``u`` requests (GEMM work per prompt token incl.
    recomputed ones, one LM-head row, causal attention) + compute power while waiting in the
    collectives over the iteration's operator time ``t_d + u m_p - t_comm``. Links: the
    collectives' energy (0 on a single device; not computed, 0, with ``links=False``)."""
    n, mP, x = st["n"], d["mP"], st["x"]
    pf_tok = mP + st["recompute"]
    ops_j = pf_tok * d["e_pf_tok"]
    ops_j += d["e_pf"]
    ops_j = ops_j * u  # (u may carry a leading axis that st does not)
    ops_j += n * d["e_seq"]
    ops_j += x * d["e_tok"]
    ops_j += d["e_w"]
    if d["moe"]:
        ops_j += c["moe_expert_w_j"] * _touched(c, d, x + u * mP)
    if not d["comm"]:
        return ops_j, 0.0
    comm_s = pf_tok * c["fixed_s_per_tok"]
    comm_s += c["fixed_s_per_head"]
    comm_s = comm_s * u
    comm_s += d["fx_dec"] * x
    comm_s += c["fixed_s"]
    ops_s = u * st["mp"]
    ops_s += st["t_d"]
    ops_s -= comm_s
    dev_j = ops_j + waiting_j(ops_j, ops_s, comm_s)
    if not links:
        return dev_j, 0.0
    link_j = (c["fixed_j"] + (c["fixed_j_per_tok"] + c["fixed_j_per_head"]) * x
              + u * (pf_tok * c["fixed_j_per_tok"] + c["fixed_j_per_head"]))
    return dev_j, link_j
