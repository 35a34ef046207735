"""Serving stage: continuous batching with chunked prefill over request-length distributions.

Pure numpy over arrays (``(n,)`` designs; scalars broadcast). Inputs: the iteration
coefficients ``c`` (:mod:`dse.model.serving_iteration`), the length moments ``w``
(:func:`dse.model.serving_lengths.length_moments`, once per distribution) and the scheduler
and service knobs ``s`` (:data:`SCHED_DEFAULTS`). Output: :func:`serving_metrics`.
``docs/serving.md`` gives the derivation and the measured error against the discrete-event
reference ``tests/serving_des.py``; in short:

**Scheduler** (vLLM/Sarathi-Serve): each iteration carries every decoding sequence
(``q`` tokens each) and fills the rest of ``token_budget`` with prefill chunks; at most
``max_seqs`` running sequences; paged KV blocks of ``kv_block_tokens``; admission keeps
``kv_watermark_frac`` of the cache free; overflow preempts by recomputation.

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

**Latency** (:mod:`dse.model.serving_queue`). TTFT = residual of the iteration in progress
(length-biased, iterations two-point: pure decode or with prefill, Poisson chunks) + queueing
(M/G/1 on the prefill lane in tokens, Pollaczek-Khinchine; plus Sakasegawa's M/G/c for the
``N_cap`` slots) + the request's own chunks; p90 from a gamma fitted to the mean and variance
(Wilson-Hilferty). TPOT = ``tau_req / tokens_per_iter`` with the variance of the batch-size
process and of the prefill interference over the request's iterations; p90 normal.

**Goodput** (DistServe's definition): the largest arrival rate whose TTFT p90 and TPOT p90
both meet the SLOs: bracketed on a coarse load grid, refined by two safeguarded regula falsi
steps on ``-1 / (SLO ratio)`` (about linear in the load where queueing grows like
``1 / (1 - rho)``), read off the chord of ``log(ratio)`` (conservative). The metrics are
evaluated at ``arrival_rate_req_per_s`` when it is positive, else at the goodput rate, with the
batch that solves Little's law for that rate (regula falsi on the batch).

**Power cap**: a clock stretch ``max(1, P_dyn / (tdp - static))`` at each point of the load
curve (its mean iteration's dynamic power), applied to every time there; the capacity is that of
the stretch at capacity (the highest power).

Not modelled: prefix caching, disaggregated prefill/decode, speculative serving beyond the
expected tokens per verification, multi-replica load balancing (``dp`` divides the rate),
preemption by swapping, priority scheduling, output-length prediction.
"""

from __future__ import annotations

import numpy as np

from dse.model.serving_iteration import FFN_ROW, waiting_j
from dse.model.serving_lengths import STOPLOSS_GRID, STOPLOSS_STEPS_PER_OCTAVE
from dse.model.serving_queue import crossover_room, latencies

SCHED_DEFAULTS: dict[str, float] = {
    "token_budget": 2048.0,        # tokens per iteration (vLLM max_num_batched_tokens, Sarathi chunk budget)
    "max_seqs": 256.0,             # running sequences (vLLM max_num_seqs default)
    "kv_block_tokens": 16.0,       # paged-attention block (vLLM default)
    "kv_watermark_frac": 0.01,     # cache kept free at admission (vLLM v0 default)
    "arrival_rate_req_per_s": 0.0,  # offered Poisson load; 0: evaluate at the goodput rate
    "ttft_slo_s": 1.0,
    "tpot_slo_s": 0.1,
}
SERVING_METRICS: tuple[str, ...] = (
    "serving_tokens_per_s", "goodput_req_per_s", "ttft_p90_s", "tpot_p90_s", "kv_max_seqs",
    "serving_capacity_req_per_s", "serving_load_req_per_s", "ttft_mean_s", "tpot_mean_s",
    "serving_batch", "serving_iter_s", "serving_power_w", "serving_tokens_per_j",
)
# load grid: fractions of the capacity batch, then fractions of the way to capacity on the slot queue;
# regula falsi steps refining the goodput bracket and the batch of the operating point
_GRID_BATCH_FRAC: tuple[float, ...] = (0.002, 0.15, 0.5, 1.0)
_GRID_QUEUE_FRAC: tuple[float, ...] = (0.6,)
_GOODPUT_STEPS = 2
_BATCH_STEPS = 2
_SAFE_FRAC = 0.2  # a regula falsi point stays this far inside its bracket (both ends move)


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


def _prepare(c: dict, w: dict, s: dict) -> dict:
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


def _state(c: dict, d: dict, s: dict, n) -> dict:
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


def _energy_j(c: dict, d: dict, st: dict, u) -> tuple:
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


def _grid(a, b):
    """Stack ``a`` (per design) and points ``b`` into a leading grid axis."""
    return np.asarray(b, dtype=float).reshape((-1,) + (1,) * np.ndim(a)) * a


def _pick(grid, idx):
    """``grid[idx[j], j]`` for every design ``j`` (grid axis first)."""
    return np.take_along_axis(grid, idx[None, :], axis=0)[0]


def _slo_ratio(lat: dict, s: dict):
    """The larger of TTFT p90 / its SLO and TPOT p90 / its SLO (<= 1: both met; inf past capacity)."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.maximum(lat["ttft_p90_s"] / s["ttft_slo_s"], lat["tpot_p90_s"] / s["tpot_slo_s"])


def _neg_inv(ratio):
    """``-1 / ratio``: increasing in the load, and about linear in it where queueing makes the
    latencies grow like ``1 / (1 - rho)`` (the goodput search interpolates it, not the ratio)."""
    return -1.0 / np.maximum(ratio, 1e-300)


def _stretch(c: dict, d: dict, st: dict, lam):
    """Power-cap clock stretch at fluid state ``st`` with arrival rate ``lam`` (unstretched time):
    ``max(1, P_dev / (tdp - static))``, ``P_dev`` the devices' dynamic energy of the mean iteration
    (``u = lam tau`` admissions) over its time ``tau = t_d / (1 - lam m_p)`` (at capacity: the
    full iterations, ``u = N_cap / n_dec``)."""
    tau = st["t_d"] / (1.0 - np.minimum(lam * st["mp"], 0.999))
    dev_j, _ = _energy_j(c, d, st, lam * tau)
    return np.maximum(1.0, dev_j / (tau * np.maximum(c["headroom_w"], 1e-9)))


def _load_point(c: dict, d: dict, s: dict, t, curve: dict) -> tuple:
    """(state, arrival rate in unstretched time, real rate) at load parameter ``t`` per design:
    ``t <= 1`` is the fraction of the capacity batch (rate from Little's law), ``1 < t < 2`` the
    way from there to capacity on the slot queue (batch at capacity); the real rate is the rate
    over the power cap's stretch there, at most the capacity."""
    st = _state(c, d, s, np.minimum(t, 1.0) * curve["n_cap"])
    lam = np.where(t <= 1.0, np.minimum(st["lam"], curve["lam_top"]),
                   curve["lam_top"] + np.maximum(t - 1.0, 0.0) * (curve["lam_max"] - curve["lam_top"]))
    return st, lam, np.minimum(lam / _stretch(c, d, st, lam), curve["capacity"])


def _toward(lo: tuple, hi: tuple, y_target, lo_frac=0.0, hi_frac=1.0):
    """Linear interpolation of ``x`` at ``y_target`` between bracket ends ``(x, y)``, as a
    fraction of the bracket clamped to ``[lo_frac, hi_frac]``."""
    with np.errstate(invalid="ignore"):  # an infinite end: the other end
        f = np.clip((y_target - lo[1]) / np.where(hi[1] > lo[1], hi[1] - lo[1], 1.0), lo_frac, hi_frac)
        return lo[0] + (hi[0] - lo[0]) * np.nan_to_num(f)


def _shrink(lo: tuple, hi: tuple, new: tuple, keep_lo) -> tuple:
    """Regula falsi bracket update: the point ``new`` replaces ``hi`` where ``keep_lo``, else ``lo``."""
    return (tuple(np.where(keep_lo, a, b) for a, b in zip(new, lo, strict=True)),
            tuple(np.where(keep_lo, b, a) for a, b in zip(new, hi, strict=True)))


def _goodput_bracket(c, d, w, s, ratio, t_g, rate_g, curve) -> tuple:
    """(points meeting both SLOs, bracket ends ``(t, -1/ratio, rate)``) of the SLO crossing:
    between the last grid point meeting both SLOs and the next, shrunk by
    :data:`_GOODPUT_STEPS` safeguarded regula falsi steps on the load parameter ``t``. Ratios
    and rates are in real (power-capped) time."""
    n_ok = np.cumprod(ratio <= 1.0, axis=0).sum(axis=0)
    i_hi = np.clip(n_ok, 1, ratio.shape[0] - 1)
    y = _neg_inv(ratio)
    lo = (t_g[i_hi - 1], _pick(y, i_hi - 1), _pick(rate_g, i_hi - 1))
    hi = (t_g[i_hi], _pick(y, i_hi), _pick(rate_g, i_hi))
    for _ in range(_GOODPUT_STEPS):
        t_new = _toward(lo, hi, -1.0, _SAFE_FRAC, 1.0 - _SAFE_FRAC)
        st_new, lam_new, rate_new = _load_point(c, d, s, t_new, curve)
        lat = latencies(c, d, w, st_new, lam_new, curve["lam_max"], curve["n_cap"])
        y_new = _neg_inv(_slo_ratio(lat, s) * (lam_new / rate_new))
        lo, hi = _shrink(lo, hi, (t_new, y_new, rate_new), y_new <= -1.0)
    return n_ok, lo, hi


def _operating_batch(c, d, s, rate_op, b_lo, b_hi, curve):
    """The batch whose real (power-capped) Little's-law rate is ``rate_op``: :data:`_BATCH_STEPS`
    regula falsi steps in the bracket ``(batch, rate)`` ends, then interpolated."""
    for _ in range(_BATCH_STEPS):
        n_new = _toward(b_lo, b_hi, rate_op)
        st = _state(c, d, s, n_new)
        lam = np.minimum(st["lam"], curve["lam_top"])
        rate = np.minimum(lam / _stretch(c, d, st, lam), curve["capacity"])
        b_lo, b_hi = _shrink(b_lo, b_hi, (n_new, rate), rate <= rate_op)
    return _toward(b_lo, b_hi, rate_op)


def serving_metrics(c: dict, w: dict, s: dict) -> dict[str, np.ndarray]:
    """Serving metrics (:data:`SERVING_METRICS`) for a batch of designs.

    ``c``: iteration coefficients (:mod:`dse.model.serving_iteration`); ``w``: length moments
    (:func:`dse.model.serving_lengths.length_moments`); ``s``: :data:`SCHED_DEFAULTS` keys
    (arrays or scalars). Rates in requests/s; ``serving_tokens_per_s`` counts output tokens;
    times in seconds; ``ttft_*`` are inf where the offered rate reaches capacity.

    The load curve is evaluated on a coarse grid (:data:`_GRID_BATCH_FRAC` of the capacity
    batch, then :data:`_GRID_QUEUE_FRAC` of the way from there to capacity on the slot queue),
    each point in real time under its own power-cap stretch (:func:`_stretch`); goodput: the
    SLO crossing bracketed between the last grid point that meets both SLOs and the next,
    refined by regula falsi on ``-1 / ratio`` (:func:`_goodput_bracket`); the operating point's
    batch solves Little's law for the rate by regula falsi (:func:`_operating_batch`), then the
    point is evaluated.
    """
    s = {**SCHED_DEFAULTS, **s}
    d = _prepare(c, w, s)
    n_kv = kv_max_seqs(c, w, s)
    n_budget = s["token_budget"] / (d["q"] + d["mP"] / d["n_dec"])
    n_cap = np.maximum(np.minimum(np.minimum(s["max_seqs"], n_kv), n_budget), 1e-6)
    shape = np.shape(n_cap)
    n_cap = np.atleast_1d(n_cap)
    # the coarse load grid: batch fractions (fluctuation-corrected rates), then the slot queue;
    # rates in unstretched time (lam), then in real time (rate = lam / stretch)
    n_grid = _grid(n_cap, _GRID_BATCH_FRAC)
    gs = _state(c, d, s, n_grid)
    top = {key: v[-1] for key, v in gs.items() if np.ndim(v) == 2}  # the capacity batch
    tau_sat = top["t_d"] + n_cap / d["n_dec"] * top["mp"]  # capacity: every iteration full
    lam_max = n_cap / (d["n_dec"] * tau_sat)
    lam_top = np.minimum(top["lam"], lam_max)
    capacity = lam_max / _stretch(c, d, top, lam_max)
    lam_b = np.minimum(gs["lam"], lam_top)
    rate_b = np.minimum(lam_b / _stretch(c, d, gs, lam_b), capacity)
    lam_q = lam_top + _grid(lam_max - lam_top, _GRID_QUEUE_FRAC)
    rate_q = np.minimum(lam_q / _stretch(c, d, top, lam_q), capacity)
    curve = {"n_cap": n_cap, "lam_top": lam_top, "lam_max": lam_max, "capacity": capacity}
    ratio = np.concatenate([_slo_ratio(latencies(c, d, w, gs, lam_b, lam_max, n_cap), s) * (lam_b / rate_b),
                            _slo_ratio(latencies(c, d, w, top, lam_q, lam_max, n_cap), s) * (lam_q / rate_q)])
    rate_g = np.concatenate([rate_b, rate_q])
    t_g = np.concatenate([_GRID_BATCH_FRAC, 1.0 + np.asarray(_GRID_QUEUE_FRAC)])
    # goodput: where the SLO ratio crosses 1 in the refined bracket, on the chord of log(ratio): convex
    # where queueing blows up, so the chord errs on the side of meeting the SLOs (-1/ratio, used for
    # the steps, is concave there and would overshoot)
    n_ok, lo, hi = _goodput_bracket(c, d, w, s, ratio, t_g, rate_g, curve)
    with np.errstate(divide="ignore"):  # -1/ratio = -0 where the ratio is infinite
        rate_good = _toward((lo[2], np.log(-1.0 / lo[1])), (hi[2], np.log(-1.0 / hi[1])), 0.0)
    goodput = np.where(n_ok == 0, 0.0, np.where(n_ok == len(t_g), rate_g[-1], rate_good))
    # the operating point: the offered rate, or the goodput rate. Below the capacity batch its
    # batch solves Little's law in real time (bracketed by the goodput search's last bracket,
    # else by the batch grid); on the slot queue, the queue position gives the rate
    offered = np.atleast_1d(np.asarray(s["arrival_rate_req_per_s"], dtype=float))
    rate_top = rate_b[-1]
    rate_op = np.minimum(np.where(offered > 0.0, offered, goodput), capacity * (1.0 - 1e-9))
    zero = np.zeros((1,) + n_cap.shape)
    rate_rows = np.maximum.accumulate(np.concatenate([zero, rate_b]), axis=0)
    n_rows = np.concatenate([zero, n_grid])
    j = np.clip((rate_rows < rate_op).sum(axis=0), 1, rate_rows.shape[0] - 1)
    seeded = (offered <= 0.0) & (n_ok > 0) & (n_ok < len(t_g))
    ends = [tuple(np.where(seeded, a, b) for a, b in zip(
        (np.minimum(end[0], 1.0) * n_cap, np.minimum(end[2], rate_top)), (_pick(n_rows, i), _pick(rate_rows, i)),
        strict=True)) for end, i in ((lo, j - 1), (hi, j))]
    queued = rate_op >= rate_top
    n_op = np.where(queued, n_cap, _operating_batch(c, d, s, rate_op, *ends, curve))
    st = _state(c, d, s, n_op)
    # on the slot queue: the rate through (rate_top, lam_top), the grid's queue points, (capacity, lam_max)
    rate_pts = np.concatenate([rate_b[-1:], rate_q, capacity[None]])
    lam_pts = np.concatenate([lam_top[None], lam_q, lam_max[None]])
    k = np.clip((rate_pts < rate_op).sum(axis=0), 1, rate_pts.shape[0] - 1)
    lam_queue = _toward((_pick(lam_pts, k - 1), _pick(rate_pts, k - 1)), (_pick(lam_pts, k), _pick(rate_pts, k)),
                        rate_op)
    lam_here = np.minimum(st["lam"], lam_top)
    stretch = np.where(queued, lam_queue / np.maximum(rate_op, 1e-300),
                       np.maximum(_stretch(c, d, st, lam_here), lam_here / capacity))  # the real rate <= capacity
    lam_op = rate_op * stretch  # unstretched
    lat = latencies(c, d, w, st, lam_op, lam_max, n_cap)
    stable = np.where(offered > 0.0, offered < capacity, True)
    power_w = c["static_power_w"] + sum(_energy_j(c, d, st, lat["u"])) / (st["tau"] * stretch) * lat["busy"]
    tokens_per_s = rate_op * w["out_mean"]
    out = {
        "serving_tokens_per_s": tokens_per_s,
        "goodput_req_per_s": goodput,
        "ttft_p90_s": np.where(stable, lat["ttft_p90_s"] * stretch, np.inf),
        "tpot_p90_s": lat["tpot_p90_s"] * stretch,
        "kv_max_seqs": n_kv,
        "serving_capacity_req_per_s": capacity,
        "serving_load_req_per_s": rate_op,
        "ttft_mean_s": np.where(stable, lat["ttft_mean_s"] * stretch, np.inf),
        "tpot_mean_s": lat["tpot_mean_s"] * stretch,
        "serving_batch": st["n"],
        "serving_iter_s": st["tau"] * stretch,
        "serving_power_w": power_w,
        "serving_tokens_per_j": tokens_per_s / np.maximum(power_w, 1e-12),
    }
    full = np.broadcast_shapes(*(np.shape(v) for v in out.values()))
    target = np.broadcast_shapes(shape, np.shape(s["arrival_rate_req_per_s"]))
    return {key: np.broadcast_to(np.asarray(v, dtype=float), full).reshape(target) for key, v in out.items()}
