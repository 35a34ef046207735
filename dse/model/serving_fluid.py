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

from dse.model.jit import kernel
from dse.model.serving_iteration import waiting_row
from dse.model.serving_jit import at2, clip, grid_rows, mx
from dse.model.serving_prefill import _touched, gemm_row, prefill_gemm_row, stall_rows
from dse.model.serving_stoploss import stoploss_row, upper


def fluid_state(c: dict, d: dict, s: dict, n) -> dict:
    """Fluid operating point at ``n`` decoding sequences (module docstring); ``n`` may carry a
    leading grid axis.

    Compiled passes (:mod:`dse.model.serving_jit`) around numpy's transcendentals: the decode
    iteration and its slope (:func:`_decode_rows`), the prompt's chunks and the exponents
    (:func:`_chunks_rows`), numpy's ``expm1`` and ``exp`` (and the MoE experts' and pipeline stall's
    transcendentals), the prefill marginal (:func:`_prefill_rows`, :func:`_mp_rows`; pipelines:
    :func:`dse.model.serving_prefill.stall_rows`), Little's law
    (:func:`_little_rows`)."""
    q = d["q"]
    x = q * n if d["spec"] else n  # decode tokens (q = 1 for every design without speculation)
    f_cw = d["cw_f_dec"] + c["moe_expert_w_s"] * _touched(c, d, x) if d["moe"] else d["cw_f_dec"]
    stream, spec, pipe = d["stream"], d["spec"], d["pipe"]
    t_d, slope_d = grid_rows(_decode_rows, 2, n, x, q, spec, d["cf_d"], d["cm_d"], d["cw_d"], d["cf_f"], d["cm_f"],
                             f_cw, d["fixed"], stream, d["att_seq"], d["att_floor"] if stream else 0.0, d["comm"],
                             d["fx_seq"] if stream else 0.0, d["att_fx"], d["cf_x"], d["cm_x"], d["cw_x"])
    inv_e = d["inv_E"] if pipe else 1.0
    k, n_ch, r, neg_ch, expo = grid_rows(_chunks_rows, 5, n, x, s["token_budget"], pipe, inv_e, d["neg_inv_n_dec"],
                                         d["foot_per_grow"], d["neg_free_per_grow"], d["slack_expo"], d["point"],
                                         d["tab"], d["tab_at"])
    share = np.expm1(neg_ch)  # share = (1 - e^-lam_ch) / lam_ch (_marginal_rows)
    recompute = np.exp(expo, out=expo)
    moe_w = 0.0
    if d["moe"]:  # a chunk touches more experts than the decode tokens: read once per mixed iteration
        xm = x * d["inv_E"] if pipe else x
        w_exp = c["moe_expert_w_s"] * d["inv_E"] if pipe else c["moe_expert_w_s"]
        moe_w = w_exp * (_touched(c, d, xm + np.minimum(d["mP"], k)) - _touched(c, d, xm))
    if pipe:  # the stall's binomial: odds phi / (1 - phi) and pmf(0) = e^(-pp lam_ch)
        lam = upper(-neg_ch, 50.0)
        odds = np.expm1(lam)
        pmf0 = d["neg_E"] * lam
        pmf0 = np.exp(pmf0, out=pmf0)
    z, lin_f, lin = grid_rows(_prefill_rows, 3, x, k, r, n_ch, neg_ch, share, pipe, inv_e, d["moe"], moe_w,
                              d["cross_p"], d["act_p"], d["slope_p"], d["cross_f"], d["act_f"], d["slope_f"],
                              d["point"], d["tab"], d["tab_at"])
    (mp,) = grid_rows(_mp_rows, 1, x, r, lin, recompute, d["comm"], c["fixed_s_per_head"], c["fixed_s_per_tok"],
                      d["cross_h"], d["cf_h"], d["cm_h"], d["inv_mP"], d["mp_fixed"], d["la_pf"])
    mp_own = mp  # the stage time of one request's prefill
    if pipe:
        mp_own = mp * d["E"]  # its own chunk rounds: pp passes of its micro-batch
        (mp,) = grid_rows(stall_rows, 1, x, n, d["neg_inv_n_dec"], mp, odds, pmf0, d["inv_E"], d["E"],
                          d["stall_terms"], d["gap_cf"], d["gap_la"], d["gap_cm"], d["gap_w"])
    ttft0, one_m_eps, tau, slope, tau_req, lam, x_req = grid_rows(
        _little_rows, 7, n, t_d, slope_d, n_ch, mp, mp_own, d["neg_inv_n_dec"], d["n_dec"])
    return {"n": n, "t_d": t_d, "slope_d": slope_d, "k": k, "n_ch": n_ch, "mp": mp,
            "tau": tau, "slope": slope, "one_m_eps": one_m_eps, "tau_req": tau_req, "x_req": x_req,
            "ttft0": ttft0, "lam": lam, "recompute": recompute, "x": x, "lin_f": lin_f, "z_p": z,
            "mp_own": mp_own}


@kernel
def _decode_rows(n, x, q, spec, cf_d, cm_d, cw_d, cf_f, cm_f, f_cw, fixed, stream, att_seq, att_floor, comm, fx_seq,
                 att_fx, cf_x, cm_x, cw_x, t_d, slope_d):
    """The pure-decode iteration ``t_d(N)`` and its slope in ``N``: the merged GEMM rows and the ffn
    row in the decode tokens, decode attention ``max(N att_seq, att_floor)`` (slope 0 where
    stream-bound; without a stream limit ``N att_fx``), the draft rows in the sequences."""
    for g in range(t_d.shape[0]):
        for i in range(t_d.shape[1]):
            n_i, x_i = at2(n, g, i), at2(x, g, i)
            t, sel = gemm_row(x_i, cf_d, cm_d, cw_d, g, i)
            t_f, sel_f = gemm_row(x_i, cf_f, cm_f, f_cw, g, i)
            t += t_f
            sel += sel_f
            t += at2(fixed, g, i)
            bound = False
            if stream != 0.0:
                att = n_i * at2(att_seq, g, i)
                floor = at2(att_floor, g, i)
                bound = att < floor
                t += mx(att, floor)
                if comm != 0.0:
                    t += n_i * at2(fx_seq, g, i)
            else:
                t += n_i * at2(att_fx, g, i)
            if spec != 0.0:  # draft rows are zero without speculation: the same result either way
                sel *= at2(q, g, i)
                t_x, sel_x = gemm_row(n_i, cf_x, cm_x, cw_x, g, i)
                t += t_x
                sel += sel_x
            sel += at2(fx_seq, g, i) if bound else at2(att_fx, g, i)
            t_d[g, i] = t
            slope_d[g, i] = sel


@kernel
def _chunks_rows(n, x, token_budget, pipe, inv_E, neg_inv_n_dec, foot_per_grow, neg_free_per_grow, slack_expo, point,
                 tab, tab_at, k_out, n_ch_out, r_out, neg_ch_out, expo_out):
    """A prompt's chunks of ``k = token_budget - x`` (pipelines: its engine's, 1 / pp of the budget
    and of the decode tokens), the chunks beyond the first ``r = E[(P - k)+] / k``, the chunks per
    iteration (negated, ``-lam_ch``; pipelines: per engine) and the preemption exponent: the tokens
    recomputed per request grow ``exp(-(max(kv_free - N foot, 0) + slack0) / grow)``, ``ln(grow)`` in it."""
    for g in range(k_out.shape[0]):
        for i in range(k_out.shape[1]):
            n_i = at2(n, g, i)
            k = at2(token_budget, g, i) - at2(x, g, i)
            if pipe != 0.0:
                k *= at2(inv_E, g, i)
            k = clip(k, 1.0, np.inf)
            r = stoploss_row(point, tab, tab_at, g, i, k)
            r /= k
            n_ch = r + 1.0
            neg_ch = (n_i * at2(neg_inv_n_dec, g, i)) * n_ch  # -u0 = -N / n_dec admissions per iteration
            if pipe != 0.0:
                neg_ch *= at2(inv_E, g, i)
            k_out[g, i] = k
            n_ch_out[g, i] = n_ch
            r_out[g, i] = r
            neg_ch_out[g, i] = clip(neg_ch, -np.inf, -1e-9)
            expo = n_i * at2(foot_per_grow, g, i)
            expo += at2(neg_free_per_grow, g, i)
            expo = clip(expo, -np.inf, 0.0)
            expo += at2(slack_expo, g, i)
            expo_out[g, i] = clip(expo, -700.0, np.inf)  # exp underflow takes libm's slow path; e^-700 ~ 1e-304


@kernel
def _prefill_rows(x, k, r, n_ch, neg_ch, e_ch, pipe, inv_E, moe, moe_w, cross_p, act_p, slope_p, cross_f, act_f,
                  slope_f, point, tab, tab_at, z_out, lin_f_out, lin_out):
    """The GEMM rows' seconds a prompt adds over its chunks (:func:`dse.model.serving_prefill.prefill_gemm_row`):
    the crossover room ``z`` of the merged rows, the ffn row's (MoE: plus the experts a chunk touches
    beyond the decode tokens', ``moe_w`` from numpy's powers) and both. The stop-loss lookups gather
    from tables: this pass stays scalar, the arithmetic around it is in :func:`_mp_rows`."""
    for g in range(z_out.shape[0]):
        for i in range(z_out.shape[1]):
            x_i, k_i, r_i = at2(x, g, i), at2(k, g, i), at2(r, g, i)
            share = at2(e_ch, g, i) / at2(neg_ch, g, i)  # (1 - e^-lam_ch) / lam_ch
            xm = x_i * at2(inv_E, g, i) if pipe != 0.0 else x_i
            z, lin = prefill_gemm_row(point, tab, tab_at, g, i, xm, k_i, r_i, share, cross_p, act_p, slope_p)
            lin_f = prefill_gemm_row(point, tab, tab_at, g, i, xm, k_i, r_i, share, cross_f, act_f, slope_f)[1]
            if moe != 0.0:
                lin_f = lin_f + at2(moe_w, g, i) * at2(n_ch, g, i) * share
            z_out[g, i] = z
            lin_f_out[g, i] = lin_f
            lin_out[g, i] = lin + lin_f


@kernel
def _mp_rows(x, r, lin, recompute, comm, fixed_s_per_head, fixed_s_per_tok, cross_h, cf_h, cm_h, inv_mP, mp_fixed,
             la_pf, mp_out):
    """The marginal prefill of one request at this batch (before a pipeline's stall): its GEMM rows
    ``lin``, the LM-head row, the collectives, causal attention, its chunks' launches and the
    recomputed tokens."""
    for g in range(mp_out.shape[0]):
        for i in range(mp_out.shape[1]):
            lin_i = at2(lin, g, i)
            mp = at2(cf_h, g, i) if at2(x, g, i) > at2(cross_h, g, i) else at2(cm_h, g, i)  # the LM-head row
            per_token = lin_i * at2(inv_mP, g, i)
            if comm != 0.0:
                mp += at2(fixed_s_per_head, g, i)
                per_token += at2(fixed_s_per_tok, g, i)
            mp += lin_i
            mp += at2(mp_fixed, g, i)
            mp += at2(r, g, i) * at2(la_pf, g, i)
            per_token *= at2(recompute, g, i)
            mp += per_token
            mp_out[g, i] = mp


@kernel
def _little_rows(n, t_d, slope_d, n_ch, mp, mp_own, neg_inv_n_dec, n_dec, ttft0_out, one_m_eps_out, tau_out,
                 slope_out, tau_req_out, lam_out, x_req_out):
    """Little's law at batch ``N``: the fluid pass (``u = N / n_dec``), then the arrival rate with the
    prefill queued behind each request's own (arrivals during its TTFT run during its first decode
    iterations); ``eps = N tau' / tau`` the same in both passes (tau and tau' scale together)."""
    for g in range(tau_out.shape[0]):
        for i in range(tau_out.shape[1]):
            n_i, t_di, slope_di, mp_i = at2(n, g, i), at2(t_d, g, i), at2(slope_d, g, i), at2(mp, g, i)
            n_dec_i = at2(n_dec, g, i)
            ttft0 = at2(n_ch, g, i) * t_di
            ttft0 += at2(mp_own, g, i)
            gr = slope_di / t_di
            one_m_eps = 1.0 - clip(n_i * gr, 0.0, 0.95)  # 1 - eps
            f_req = gr / one_m_eps
            f_req += 1.0  # tau_req / tau = 1 + (tau' / tau) / (1 - eps)
            nmp = n_i * mp_i
            b4 = nmp * ttft0
            b4 *= 4.0
            a = t_di - (n_i * at2(neg_inv_n_dec, g, i)) * mp_i  # the fluid pass's tau = t_d + u0 mp
            a *= n_dec_i
            a *= f_req
            n2 = n_i + n_i
            lam = _rate_row(n2, a, b4, nmp)
            one_m = 1.0 - clip(lam * mp_i, -np.inf, 0.95)  # 1 - rho of the prefill lane
            tau = t_di / one_m  # second pass: tau = t_d + lam tau m_p
            tau_req = tau * f_req
            lam = _rate_row(n2, n_dec_i * tau_req, b4, nmp)
            lmp = lam * mp_i
            x_req = lmp * ttft0
            x_req /= 1.0 - clip(lmp, -np.inf, 0.95)
            ttft0_out[g, i] = ttft0
            one_m_eps_out[g, i] = one_m_eps
            tau_out[g, i] = tau
            slope_out[g, i] = slope_di / one_m  # prefill per iteration follows arrivals, not the batch
            tau_req_out[g, i] = tau_req
            lam_out[g, i] = lam
            x_req_out[g, i] = x_req


@kernel
def _rate_row(n2, a, b4, nc):
    """:func:`_rate` with ``n2 = 2 n``, ``b4 = 4 n b`` and ``nc = n c`` given."""
    root = a - nc
    root *= root
    root += b4
    root = np.sqrt(root)
    root += a
    root += nc
    return n2 / root


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
    collectives over the iteration's operator time ``t_d + u m_p - t_comm`` (:func:`device_j_row`,
    one compiled pass). Links: the collectives' energy (0 on a single device; not computed, 0, with
    ``links=False``)."""
    (dev_j,) = grid_rows(_device_j_rows, 1, u, *_energy_args(c, d, st, u))
    if not (d["comm"] and links):
        return dev_j, 0.0
    x = st["x"]
    pf_tok = d["mP"] + st["recompute"]
    link_j = (c["fixed_j"] + (c["fixed_j_per_tok"] + c["fixed_j_per_head"]) * x
              + u * (pf_tok * c["fixed_j_per_tok"] + c["fixed_j_per_head"]))
    return dev_j, link_j


def _energy_args(c: dict, d: dict, st: dict, u) -> tuple:
    """The arguments of :func:`device_j_row` after ``u`` (MoE: the experts the iteration's tokens
    touch, numpy's power)."""
    moe_j = c["moe_expert_w_j"] * _touched(c, d, st["x"] + u * d["mP"]) if d["moe"] else 0.0
    return (st["recompute"], st["n"], st["x"], st["mp"], st["t_d"], d["e_pf_tok"], d["e_req"], d["e_dec"], d["e_w"],
            d["moe"], moe_j, d["comm"], d["mP"], c["fixed_s_per_tok"], c["fixed_s_per_head"], d["fx_dec"],
            c["fixed_s"])


@kernel
def device_j_row(u, recompute, n, x, mp, t_d, e_pf_tok, e_req, e_dec, e_w, moe, moe_j, comm, mP, fixed_s_per_tok,
                 fixed_s_per_head, fx_dec, fixed_s, g, i):
    """The devices' joules of :func:`iteration_energy_j` at grid row ``g``, design ``i`` (``u`` a
    number): the operators', plus the compute power drawn while waiting in the collectives,
    ``ops_j comm_s / ops_s`` (:func:`dse.model.serving_iteration.waiting_j`)."""
    ops_j = at2(recompute, g, i) * at2(e_pf_tok, g, i)
    ops_j += at2(e_req, g, i)
    ops_j *= u
    ops_j += at2(n, g, i) * at2(e_dec, g, i)
    ops_j += at2(e_w, g, i)
    if moe != 0.0:
        ops_j += at2(moe_j, g, i)
    if comm == 0.0:
        return ops_j
    comm_s = (at2(mP, g, i) + at2(recompute, g, i)) * at2(fixed_s_per_tok, g, i)
    comm_s += at2(fixed_s_per_head, g, i)
    comm_s *= u
    comm_s += at2(fx_dec, g, i) * at2(x, g, i)
    comm_s += at2(fixed_s, g, i)
    ops_s = u * at2(mp, g, i)
    ops_s += at2(t_d, g, i)
    ops_s -= comm_s
    return ops_j + waiting_row(ops_j, ops_s, comm_s)


@kernel
def _device_j_rows(u, recompute, n, x, mp, t_d, e_pf_tok, e_req, e_dec, e_w, moe, moe_j, comm, mP, fixed_s_per_tok,
                   fixed_s_per_head, fx_dec, fixed_s, out):
    for g in range(out.shape[0]):
        for i in range(out.shape[1]):
            out[g, i] = device_j_row(at2(u, g, i), recompute, n, x, mp, t_d, e_pf_tok, e_req, e_dec, e_w, moe, moe_j,
                                     comm, mP, fixed_s_per_tok, fixed_s_per_head, fx_dec, fixed_s, g, i)
