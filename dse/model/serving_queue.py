"""Serving stage: TTFT and TPOT (means and p90s) at one operating point of the fluid model.

Pure numpy, arrays over designs (a leading load-grid axis allowed). Called by
:func:`dse.model.serving.serving_metrics` with the operating point ``st`` of
``dse.model.serving_fluid.fluid_state`` (batch, iteration times, prefill marginal, rate) and the
per-design quantities ``d`` of ``dse.model.serving_prepare.prepare``. The approximations (derivation
and error against the discrete-event reference: ``docs/serving.md`` section 2, items 5-6):

* **TTFT** = residual of the iteration in progress (length-biased over a two-point
  iteration-time distribution: pure decode or with prefill chunks) + the request's own chunks
  (exactly at the p90 prompt for the p90) + queueing: M/G/1 Pollaczek-Khinchine on the
  prefill lane in tokens plus Sakasegawa's M/G/c for the slots; p90 of the service part from a
  gamma fitted to its mean and variance (Wilson-Hilferty), the queueing part zero-else-exponential.
* **TPOT** = request-weighted iteration time / tokens per iteration + the prefill queued behind
  the request's own; p90 normal on the batch-size process averaged over its lifetime.

What does not move with the load (the p90 prompt's own GEMM and attention terms, the slot
queue's exponent and scale at the capacity batch, moment ratios) is computed once per design
by :func:`queue_constants`.
"""

from __future__ import annotations

import numpy as np

from dse.model.jit import kernel
from dse.model.serving_jit import at2, clip, grid_rows, mx

Z90 = 1.2815515655446004  # standard normal 0.9 quantile


def queue_constants(c: dict, d: dict, w: dict, n_cap) -> dict:
    """Per-design terms of :func:`latencies` that do not move with the load (``n_cap``: the
    capacity batch, the slot count of the M/G/c queue), with the terms of ``d``
    (:func:`dse.model.serving_prepare.prepare`) it reads: every input of :func:`latencies` but the
    operating point is here."""
    mP, p90 = w["in_mean"], w["in_p90"]
    cc = np.maximum(n_cap, 1.0)
    with np.errstate(divide="ignore"):
        spread = np.where(p90 > 1.001 * mP, 1.0 / np.maximum(p90 - mP, 1e-9), 0.0)
    attn90 = np.maximum(0.5 * p90 * (p90 + 1.0) * c["attn_flop_s_per_pair"], p90 * c["attn_act_s_per_tok"])
    return {
        "p90": p90, "la": d["la_pf"],
        "own90": d["cm_p"] * p90 + attn90,  # the p90 prompt's activations (all chunks) and causal attention
        "ffn90": p90 / mP,  # the ffn row's prefill, pro rata
        "spread": spread,  # d(service) / d(prompt) from the mean to the p90 prompt
        "var_p": w["in_sq_mean"] - mP * mP,
        "sq_ratio": w["in_sq_mean"] / (mP * mP),
        "half_in_sq": w["in_sq_mean"] * 0.5,
        "exp_c": np.sqrt(2.0 * (cc + 1.0)) - 1.0,  # Sakasegawa (1977) M/G/c
        "scale_c": d["n_dec"] / cc * (0.5 * (w["out_sq_mean"] / w["out_mean"] ** 2)),
        "tpot_var": w["out_avg_var_factor"], "tpot_mix": w["out_inv_mean"] * d["tpv"], "inv_tpv": 1.0 / d["tpv"],
        "z90_tpv_sq": (Z90 / d["tpv"]) ** 2, "out_inv_mean": w["out_inv_mean"],
        "mP": mP, "inv_mP": d["inv_mP"], "slope_p": d["slope_p"], "pipe": d["pipe"], "E": d["E"],
        "inv_E": d["inv_E"] if d["pipe"] else 1.0,
    }


def latencies(qc: dict, st: dict, lam, lam_max) -> dict:
    """TTFT and TPOT (means and p90s) at operating point ``st`` with arrival rate ``lam``
    (``qc``: :func:`queue_constants`). ``lam`` may carry a leading axis that ``st`` does not.

    Compiled passes (:mod:`dse.model.serving_jit`) around numpy's transcendentals: the exponents
    (:func:`_exponents_rows`), ``expm1``, ``log`` and ``exp``; the arguments of the exponential tails'
    logs (:func:`_tails_rows`), ``log``; TTFT (:func:`_ttft_rows`) and TPOT (:func:`_tpot_rows`). Two
    outputs a pass: the loops then compile to SIMD code (with many outputs the compiler cannot rule
    out that they overlap the inputs and keeps them scalar), the few shared terms computed in each."""
    u, phi, busy, p_x, rho_c = grid_rows(_exponents_rows, 5, lam, st["tau"], st["n_ch"], st["n"], st["mp"],
                                         lam_max, st["ttft0"])
    phi = np.expm1(phi, out=phi)  # -(iterations carrying prefill)
    busy = np.expm1(busy, out=busy)
    p_x = np.expm1(p_x, out=p_x)
    with np.errstate(divide="ignore"):  # rho_c = 0: p_c = e^-inf = 0
        p_c = np.log(rho_c)
    p_c *= qc["exp_c"]
    p_c = np.exp(p_c, out=p_c)  # rho_c ** exp_c, a third cheaper than pow
    own, inv_e, mP = st["mp_own"], qc["inv_E"], qc["mP"]
    w_log, y_log = grid_rows(_tails_rows, 2, lam, p_c, p_x, st["t_d"], st["k"], own, qc["inv_mP"], inv_e, mP)
    w_log = np.log(w_log, out=w_log)  # 0 where the probability <= 0.1
    y_log = np.log(y_log, out=y_log)
    ttft_mean, ttft_p90 = grid_rows(
        _ttft_rows, 2, lam, st["tau"], phi, busy, p_c, rho_c, w_log, qc["pipe"], st["n"], st["t_d"], st["mp"],
        st["k"], st["n_ch"], own, st["z_p"], st["lin_f"], st["one_m_eps"], st["slope_d"], mP, inv_e, qc["p90"],
        qc["slope_p"], qc["la"], qc["own90"], qc["ffn90"], qc["E"], qc["inv_mP"], qc["half_in_sq"], qc["scale_c"],
        qc["spread"], qc["var_p"], qc["sq_ratio"])
    tpot_mean, tpot_p90 = grid_rows(
        _tpot_rows, 2, lam, st["tau"], phi, p_x, y_log, st["t_d"], st["mp"], st["n_ch"], st["n"], st["one_m_eps"],
        st["slope"], st["x_req"], st["tau_req"], qc["tpot_mix"], qc["tpot_var"], qc["z90_tpv_sq"],
        qc["out_inv_mean"], qc["inv_tpv"])
    return {"ttft_mean_s": ttft_mean, "ttft_p90_s": ttft_p90, "tpot_mean_s": tpot_mean, "tpot_p90_s": tpot_p90,
            "busy": np.negative(busy, out=busy), "u": u}


@kernel
def _exponents_rows(lam, tau, n_ch, n, mp, lam_max, ttft0, u, phi, busy, p_x, rho_c):
    """Admissions per iteration ``u = lam tau``; the exponents, negated, of the iterations carrying
    prefill (Poisson chunks), of the busy fraction and of the prefill queued behind a request's own;
    the slot queue's load ``rho_c``."""
    for g in range(u.shape[0]):
        for i in range(u.shape[1]):
            lam_i = at2(lam, g, i)
            u_i = lam_i * at2(tau, g, i)
            u[g, i] = u_i
            phi[g, i] = -(u_i * at2(n_ch, g, i))
            busy[g, i] = -(at2(n, g, i) + lam_i * at2(mp, g, i))
            p_x[g, i] = -(lam_i * at2(ttft0, g, i))
            rho_c[g, i] = clip(lam_i / at2(lam_max, g, i), 0.0, 0.999)


@kernel
def _lane(lam, t_d, k, own, inv_mP, inv_E, g, i):
    """(seconds per prefill token with a backlog, the prefill lane's arrivals per second of it) with
    ``own`` the stage time of a request's prefill (pipelines: one engine's lane, 1 / pp of the
    arrivals; ``inv_E = 1`` without)."""
    inv_rate = at2(t_d, g, i) / at2(k, g, i)
    inv_rate += at2(own, g, i) * at2(inv_mP, g, i)
    return inv_rate, (at2(lam, g, i) * at2(inv_E, g, i)) * inv_rate


@kernel
def _tails_rows(lam, p_c, e_px, t_d, k, own, inv_mP, inv_E, mP, w_tail, y_tail):
    """The log arguments ``10 max(p, 0.1)`` of the exponential tails (:func:`_ttft_rows`,
    :func:`_tpot_rows`): queueing (``p``: the larger load of the prefill lane and the slots) and the
    prefill queued behind a request's own (``p``: some arrival during its TTFT)."""
    for g in range(w_tail.shape[0]):
        for i in range(w_tail.shape[1]):
            lam_rate = _lane(lam, t_d, k, own, inv_mP, inv_E, g, i)[1]
            rho_pf = clip(lam_rate * at2(mP, g, i), -np.inf, 0.999)
            p_wait = clip(mx(rho_pf, at2(p_c, g, i)), 1e-9, 1.0)
            w_tail[g, i] = clip(p_wait, 0.1, np.inf) * 10.0
            p_x = clip(-at2(e_px, g, i), 1e-9, 1.0)
            y_tail[g, i] = clip(p_x, 0.1, np.inf) * 10.0


@kernel
def _mixed(lam, tau, e_phi, t_d, mp, g, i):
    """(iterations carrying prefill ``phi``, the mean time ``t_m`` of one that does) from
    ``expm1(-u n_ch)`` (Poisson chunks)."""
    phi = clip(-at2(e_phi, g, i), 1e-12, 1.0)
    t_m = (at2(lam, g, i) * at2(tau, g, i)) * at2(mp, g, i)
    t_m /= phi
    t_m += at2(t_d, g, i)
    return phi, t_m


@kernel
def _ttft_rows(lam, tau, e_phi, e_busy, p_c, rho_c, w_log, pipe, n, t_d, mp, k, n_ch, own, z_p, lin_f, one_m_eps,
               slope_d, mP, inv_E, p90, slope_p, la, own90, ffn90, E, inv_mP, half_in_sq, scale_c, spread, var_p,
               sq_ratio, ttft_mean, ttft_p90):
    """TTFT's mean and p90: residual of the iteration in progress + the request's own chunks (a
    gamma fitted to their mean and variance, Wilson-Hilferty) + queueing (zero with probability
    ``1 - p_wait``, else exponential; its p90 ``log(10 max(p_wait, 0.1)) mean / p_wait`` from the log
    ``w_log``), the deviations in quadrature."""
    for g in range(ttft_p90.shape[0]):
        for i in range(ttft_p90.shape[1]):
            lam_i, t_di, k_i, n_chi = at2(lam, g, i), at2(t_d, g, i), at2(k, g, i), at2(n_ch, g, i)
            tau_i = at2(tau, g, i)
            phi, t_m = _mixed(lam, tau, e_phi, t_d, mp, g, i)
            # residual of the iteration in progress, length-biased over pure-decode / mixed iterations
            td2, tm2 = t_di * t_di, t_m * t_m
            one_phi = 1.0 - phi
            bt = -at2(e_busy, g, i) / tau_i
            r1 = phi * tm2
            r1 += one_phi * td2
            r1 *= bt
            r1 *= 0.5
            r2 = tm2 * t_m
            r2 *= phi
            r2 += one_phi * (td2 * t_di)
            r2 *= bt
            r2 *= 1.0 / 3.0
            # pipelines: a request's own chunk rounds take pp times its stage time (own), and a prompt
            # shares its engine (1 / pp of the arrivals); without, own = mp and inv_E = 1
            own_i = at2(own, g, i)
            inv_rate, lam_rate = _lane(lam, t_d, k, own, inv_mP, inv_E, g, i)
            others = (lam_i * at2(inv_E, g, i)) * own_i
            others *= r1  # prompts arriving in the same window share the first iteration
            s_mean = t_di * n_chi
            s_mean += own_i
            s_mean += others
            # the p90 prompt's own chunks: nfull full chunks of k and one of kk
            p90_i = at2(p90, g, i)
            nfull = np.ceil(p90_i / k_i)
            nfull -= 1.0
            nfull = clip(nfull, 0.0, np.inf)
            zc = at2(z_p, g, i)  # crossover room clipped to [0, k]
            s90 = p90_i - nfull * k_i  # kk
            s90 -= zc
            s90 = clip(s90, 0.0, np.inf)
            s90 += (k_i - zc) * nfull
            s90 *= at2(slope_p, g, i)
            nfull += 1.0  # chunks
            la_i, own90_i, ffn_i = at2(la, g, i), at2(own90, g, i), at2(lin_f, g, i) * at2(ffn90, g, i)
            if pipe != 0.0:  # the p90 prompt's own operators on its micro-batch, pp stage passes per round
                s90 += nfull * la_i
                s90 += own90_i
                s90 += ffn_i
                s90 *= at2(E, g, i)
                s90 += nfull * t_di
            else:
                s90 += nfull * (t_di + la_i)
                s90 += own90_i
                s90 += ffn_i
            s90 += others
            # queueing: M/G/1 on the prefill lane in tokens (Pollaczek-Khinchine), M/G/c on the slots
            rho_pf = clip(lam_rate * at2(mP, g, i), -np.inf, 0.999)
            w_pf = lam_rate * inv_rate
            w_pf *= at2(half_in_sq, g, i)
            w_pf /= 1.0 - rho_pf
            p_ci = at2(p_c, g, i)
            w_c = p_ci * tau_i
            w_c *= at2(scale_c, g, i)
            w_c /= 1.0 - at2(rho_c, g, i)
            w_mean = w_pf + w_c
            p_wait = clip(mx(rho_pf, p_ci), 1e-9, 1.0)
            # service part (residual + own chunks): gamma fitted to mean and variance
            b = s90 - s_mean
            b *= at2(spread, g, i)
            var = b * b
            var *= at2(var_p, g, i)
            var += r2
            var -= r1 * r1
            sn = at2(slope_d, g, i) * n_chi
            sn *= sn
            sn *= at2(n, g, i) / at2(one_m_eps, g, i)
            var += sn
            others *= own_i
            others *= at2(sq_ratio, g, i)
            var += others
            base = r1 + s_mean
            cv2_9 = var / base
            cv2_9 /= base
            cv2_9 *= 1.0 / 9.0
            h = np.sqrt(cv2_9)
            h *= Z90
            h -= cv2_9
            h += 1.0
            cube = h * h
            cube *= h
            cube *= base  # the 0.9 quantile (Wilson-Hilferty cube-root normal)
            cube -= base
            cube *= cube
            w90 = at2(w_log, g, i) * w_mean
            w90 /= p_wait
            w90 -= w_mean
            w90 *= w90
            mean = base + w_mean
            ttft_mean[g, i] = mean
            ttft_p90[g, i] = np.sqrt(cube + w90) + mean


@kernel
def _tpot_rows(lam, tau, e_phi, e_px, y_log, t_d, mp, n_ch, n, one_m_eps, slope, x_req, tau_req, tpot_mix, tpot_var,
               z90_tpv_sq, out_inv_mean, inv_tpv, tpot_mean, tpot_p90):
    """TPOT's mean and p90: ``tau_req / tpv + Y``, the batch-size fluctuation and the prefill
    interference normal, ``Y = X / O`` the prefill queued behind the request's own (zero w.p.
    ``exp(-lam TTFT)``, else exponential; p90 from the log ``y_log``), the deviations in quadrature."""
    for g in range(tpot_p90.shape[0]):
        for i in range(tpot_p90.shape[1]):
            phi, t_m = _mixed(lam, tau, e_phi, t_d, mp, g, i)
            sd2 = t_m - at2(t_d, g, i)
            sd2 *= sd2
            sd2 *= phi * (1.0 - phi)
            sd2 *= at2(tpot_mix, g, i)
            fluct = at2(slope, g, i) * at2(slope, g, i)
            fluct *= at2(n, g, i) / at2(one_m_eps, g, i)
            fluct *= at2(tpot_var, g, i)
            sd2 += fluct
            sd2 *= at2(z90_tpv_sq, g, i)  # (Z90 sd)^2
            y_mean = at2(x_req, g, i) * at2(out_inv_mean, g, i)
            p_x = clip(-at2(e_px, g, i), 1e-9, 1.0)
            y90 = at2(y_log, g, i) * y_mean
            y90 /= p_x
            y90 -= y_mean
            y90 *= y90
            mean = at2(tau_req, g, i) * at2(inv_tpv, g, i)
            mean += y_mean
            tpot_mean[g, i] = mean
            tpot_p90[g, i] = np.sqrt(sd2 + y90) + mean
