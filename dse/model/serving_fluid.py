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
design in :func:`dse.model.serving_prepare.prepare`; the collectives' terms are skipped on a single
device, the MoE terms for dense models and the draft rows without speculation (all exact: they are
zero there), so :func:`fluid_state` and :func:`iteration_energy_j` do only the work that moves with
``N`` (``docs/serving.md`` section 6 gives the cost). The prefill marginal's GEMM terms and the
pipeline stall: :mod:`dse.model.serving_prefill`; the stop-loss lookups: :mod:`dse.model.serving_stoploss`.
"""

from __future__ import annotations

import numpy as np

from dse.model.serving_iteration import waiting_j
from dse.model.serving_prefill import _gemm_group, _prefill_gemm_s, _stall, _touched
from dse.model.serving_stoploss import _clip, _stoploss

_INF = np.inf


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
        t_d += np.maximum(att, d["att_floor"], out=att)
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
    xm = x * d["inv_E"] if pipe else x
    k = s["token_budget"] - x
    if pipe:
        k *= d["inv_E"]
    k = _clip(k, 1.0, _INF, out=k)
    r = _stoploss(d, k)
    r /= k  # chunks beyond the first, E[(P - k)+] / k
    n_ch = r + 1.0
    neg_u0 = n * d["neg_inv_n_dec"]  # -u0 = -N / n_dec admissions per iteration
    neg_ch = neg_u0 * n_ch  # -lam_ch, chunks per iteration
    if pipe:
        neg_ch *= d["inv_E"]
    neg_ch = _clip(neg_ch, -_INF, -1e-9, out=neg_ch)
    share = np.expm1(neg_ch)
    share /= neg_ch  # (1 - e^-lam_ch) / lam_ch
    z, lin = _prefill_gemm_s(d, xm, k, r, share, d["cross_p"], d["act_p"], d["slope_p"])
    _, lin_f = _prefill_gemm_s(d, xm, k, r, share, d["cross_f"], d["act_f"], d["slope_f"])
    if d["moe"]:  # a chunk touches more experts than the decode tokens: read once per mixed iteration
        w_exp = c["moe_expert_w_s"] * d["inv_E"] if pipe else c["moe_expert_w_s"]
        lin_f = lin_f + w_exp * (_touched(c, d, xm + np.minimum(mP, k)) - _touched(c, d, xm)) * n_ch * share
    lin += lin_f
    mp = np.where(x > d["cross_h"], d["cf_h"], d["cm_h"])  # the LM-head row
    per_token = lin * d["inv_mP"]
    if d["comm"]:
        mp += c["fixed_s_per_head"]
        per_token += c["fixed_s_per_tok"]
    # preemption: decode growth outruns the free slack before a completion frees blocks; the tokens
    # recomputed per request, grow exp(-(max(kv_free - N foot, 0) + slack0) / grow) (kv_free: the cache
    # less the watermark; slack0: the watermark and half a prompt), with ln(grow) in the exponent
    expo = n * d["foot_per_grow"]
    expo += d["neg_free_per_grow"]
    expo = _clip(expo, -_INF, 0.0, out=expo)
    expo += d["slack_expo"]
    expo = _clip(expo, -700.0, _INF, out=expo)  # exp underflow takes libm's slow path (7x); e^-700 ~ 1e-304
    recompute = np.exp(expo, out=expo)
    mp += lin
    mp += d["mp_fixed"]
    mp += r * d["la_pf"]
    per_token *= recompute
    mp += per_token
    mp_own = mp  # the stage time of one request's prefill
    if pipe:
        u0 = -neg_u0
        mp_own = mp * E  # its own chunk rounds: pp passes of its micro-batch
        stall = _stall(c, d, x, u0, mp, -neg_ch)
        stall /= np.where(u0 > 0.0, u0, _INF)  # per admission; 0 where nothing decodes (stall 0 there)
        mp = mp + stall
    # fluid pass (u = N / n_dec), then the arrival rate with the prefill queued behind each
    # request's own (arrivals during its TTFT run during its first decode iterations);
    # eps = N tau' / tau is the same in both passes (tau and tau' scale together)
    ttft0 = n_ch * t_d
    ttft0 += mp_own
    g = slope_d / t_d
    one_m_eps = n * g
    one_m_eps = _clip(one_m_eps, 0.0, 0.95, out=one_m_eps)  # eps
    one_m_eps = np.subtract(1.0, one_m_eps, out=one_m_eps)
    f_req = np.divide(g, one_m_eps, out=g)
    f_req += 1.0  # tau_req / tau = 1 + (tau' / tau) / (1 - eps)
    nmp = n * mp
    b4 = nmp * ttft0
    b4 *= 4.0
    a = neg_u0 * mp
    a = np.subtract(t_d, a, out=a)  # the fluid pass's tau = t_d + u0 mp
    a *= d["n_dec"]
    a *= f_req
    n2 = n + n
    lam = _rate_nc(n2, a, b4, nmp)
    one_m = lam * mp
    one_m = _clip(one_m, -_INF, 0.95, out=one_m)
    one_m = np.subtract(1.0, one_m, out=one_m)  # 1 - rho of the prefill lane
    tau = t_d / one_m  # second pass: tau = t_d + lam tau m_p
    slope = slope_d / one_m  # prefill per iteration follows arrivals, not the batch
    tau_req = tau * f_req
    lam = _rate_nc(n2, d["n_dec"] * tau_req, b4, nmp)
    lmp = lam * mp
    x_req = lmp * ttft0
    lmp = _clip(lmp, -_INF, 0.95, out=lmp)
    x_req /= np.subtract(1.0, lmp, out=lmp)
    return {"n": n, "t_d": t_d, "slope_d": slope_d, "k": k, "n_ch": n_ch, "share": share, "mp": mp,
            "tau": tau, "slope": slope, "one_m_eps": one_m_eps, "tau_req": tau_req, "x_req": x_req,
            "ttft0": ttft0, "lam": lam, "recompute": recompute, "x": x, "lin_f": lin_f, "z_p": z,
            "mp_own": mp_own}


def _rate_nc(n2, a, b4, nc):
    """:func:`_rate` with ``n2 = 2 n``, ``b4 = 4 n b`` and ``nc = n c`` given."""
    root = a - nc
    root *= root
    root += b4
    root = np.sqrt(root, out=root)
    root += a
    root += nc
    return np.divide(n2, root, out=root)


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
    ops_j = st["recompute"] * d["e_pf_tok"]
    ops_j += d["e_req"]
    ops_j = ops_j * u  # (u may carry a leading axis that st does not)
    ops_j += n * d["e_dec"]
    ops_j += d["e_w"]
    if d["moe"]:
        ops_j += c["moe_expert_w_j"] * _touched(c, d, x + u * mP)
    if not d["comm"]:
        return ops_j, 0.0
    pf_tok = mP + st["recompute"]
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
