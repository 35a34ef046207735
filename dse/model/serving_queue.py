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

from dse.model.serving_stoploss import _clip

Z90 = 1.2815515655446004  # standard normal 0.9 quantile
_INF = np.inf


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
    (``qc``: :func:`queue_constants`). ``lam`` may carry a leading axis that ``st`` does not: the
    in-place steps below only write into arrays that carry ``lam``'s shape."""
    mP = qc["mP"]
    n, t_d, mp, k, n_ch = st["n"], st["t_d"], st["mp"], st["k"], st["n_ch"]
    tau = st["tau"]
    u = lam * tau  # admissions per iteration
    phi = u * n_ch
    phi = np.negative(phi, out=phi)
    phi = np.expm1(phi, out=phi)
    phi = np.negative(phi, out=phi)  # iterations carrying prefill (Poisson chunks)
    phi = _clip(phi, 1e-12, 1.0, out=phi)
    t_m = u * mp
    t_m /= phi
    t_m += t_d
    lmp = lam * mp
    busy = n + lmp
    busy = np.negative(busy, out=busy)
    busy = np.expm1(busy, out=busy)
    busy = np.negative(busy, out=busy)
    # residual of the iteration in progress, length-biased over pure-decode / mixed iterations
    td2, tm2 = t_d * t_d, t_m * t_m
    one_phi = 1.0 - phi
    bt = busy / tau
    r1 = phi * tm2
    r1 += one_phi * td2
    r1 *= bt
    r1 *= 0.5
    r2 = tm2
    r2 *= t_m
    r2 *= phi
    td2 *= t_d
    r2 += one_phi * td2
    r2 *= bt
    r2 *= 1.0 / 3.0
    # pipelines: a request's own chunk rounds take pp times its stage time (mp_own), and a prompt
    # shares its engine (1 / pp of the arrivals)
    pipe = qc["pipe"]
    own = st["mp_own"] if pipe else mp
    lam_e = lam * qc["inv_E"] if pipe else lam
    others = lam_e * own if pipe else lmp
    others *= r1  # prompts arriving in the same window share the first iteration
    s_mean = t_d * n_ch
    s_mean += own
    s_mean = s_mean + others  # (lam may carry a leading axis that st does not: no in-place op widens)
    # the p90 prompt's own chunks: nfull full chunks of k and one of kk
    p90 = qc["p90"]
    nfull = p90 / k
    nfull = np.ceil(nfull, out=nfull)
    nfull -= 1.0
    nfull = _clip(nfull, 0.0, _INF, out=nfull)
    zc = st["z_p"]  # crossover room clipped to [0, k]
    s90 = nfull * k
    s90 = np.subtract(p90, s90, out=s90)  # kk
    s90 -= zc
    s90 = _clip(s90, 0.0, _INF, out=s90)
    full = k - zc
    full *= nfull
    s90 += full
    s90 *= qc["slope_p"]
    nfull += 1.0  # chunks
    if pipe:  # the p90 prompt's own operators on its micro-batch, pp stage passes per chunk round
        s90 += nfull * qc["la"]
        s90 += qc["own90"]
        s90 += st["lin_f"] * qc["ffn90"]
        s90 *= qc["E"]
        s90 += nfull * t_d
    else:
        nfull *= t_d + qc["la"]
        s90 += nfull
        s90 += qc["own90"]
        s90 += st["lin_f"] * qc["ffn90"]
    s90 = s90 + others
    # queueing: M/G/1 on the prefill lane in tokens, M/G/c on the slots
    inv_rate = t_d / k
    inv_rate += own * qc["inv_mP"]  # seconds per prefill token with a backlog (pipelines: one engine's lane)
    lam_rate = lam_e * inv_rate
    rho_pf = lam_rate * mP
    rho_pf = _clip(rho_pf, -_INF, 0.999, out=rho_pf)
    w_pf = lam_rate
    w_pf *= inv_rate
    w_pf *= qc["half_in_sq"]
    w_pf /= 1.0 - rho_pf  # Pollaczek-Khinchine
    rho_c = lam / lam_max
    rho_c = _clip(rho_c, 0.0, 0.999, out=rho_c)
    with np.errstate(divide="ignore"):  # rho_c = 0: p_c = e^-inf = 0
        p_c = np.log(rho_c)
    p_c *= qc["exp_c"]
    p_c = np.exp(p_c, out=p_c)  # rho_c ** exp_c, a third cheaper than pow
    w_c = p_c * tau
    w_c *= qc["scale_c"]
    w_c /= np.subtract(1.0, rho_c, out=rho_c)
    w_mean = w_pf
    w_mean += w_c
    p_wait = np.maximum(rho_pf, p_c, out=p_c)
    p_wait = _clip(p_wait, 1e-9, 1.0, out=p_wait)
    var_n = n / st["one_m_eps"]
    # service part (residual + own chunks): gamma fitted to mean and variance (Wilson-Hilferty)
    b = s90 - s_mean
    b *= qc["spread"]
    var = b
    var *= b
    var *= qc["var_p"]
    var += r2
    var -= r1 * r1
    sn = st["slope_d"] * n_ch
    sn *= sn
    sn *= var_n
    var += sn
    others *= own
    others *= qc["sq_ratio"]
    var += others
    base = r1
    base += s_mean
    base90 = gamma_p90(base, var)
    # queueing part: zero with probability 1 - p_wait, else exponential; deviations add in quadrature
    w90 = _tail90(w_mean, p_wait)
    ttft_mean = base + w_mean
    base90 -= base
    base90 *= base90
    w90 -= w_mean
    w90 *= w90
    base90 += w90
    ttft_p90 = np.sqrt(base90, out=base90)
    ttft_p90 += ttft_mean
    # TPOT_i = tau_req / tpv + Y_i: batch-size fluctuation and prefill interference, normal, plus
    # Y = X / O (prefill queued behind the request's own; zero w.p. exp(-lam TTFT), else exponential)
    sd2 = t_m
    sd2 -= t_d
    sd2 *= sd2
    phi *= one_phi
    sd2 *= phi
    sd2 *= qc["tpot_mix"]
    fluct = st["slope"] * st["slope"]
    fluct *= var_n
    fluct *= qc["tpot_var"]
    sd2 += fluct
    sd2 *= qc["z90_tpv_sq"]  # (Z90 sd)^2
    y_mean = st["x_req"] * qc["out_inv_mean"]
    p_x = lam * st["ttft0"]
    p_x = np.negative(p_x, out=p_x)
    p_x = np.expm1(p_x, out=p_x)
    p_x = np.negative(p_x, out=p_x)
    p_x = _clip(p_x, 1e-9, 1.0, out=p_x)
    y90 = _tail90(y_mean, p_x)
    tpot_mean = st["tau_req"] * qc["inv_tpv"]
    tpot_mean += y_mean
    y90 -= y_mean
    y90 *= y90
    sd2 += y90
    tpot_p90 = np.sqrt(sd2, out=sd2)
    tpot_p90 += tpot_mean
    return {"ttft_mean_s": ttft_mean, "ttft_p90_s": ttft_p90, "tpot_mean_s": tpot_mean, "tpot_p90_s": tpot_p90,
            "busy": busy, "u": u}


def _tail90(mean, p):
    """p90 of "zero with probability ``1 - p``, else exponential" with this mean (0 for p <= 0.1)."""
    out = _clip(p, 0.1, _INF)
    out *= 10.0
    out = np.log(out, out=out)  # 0 where p <= 0.1
    out *= mean
    out /= p
    return out


def gamma_p90(mean, var):
    """0.9 quantile of a gamma with this mean and variance (Wilson-Hilferty cube-root normal)."""
    cv2_9 = var / mean
    cv2_9 /= mean
    cv2_9 *= 1.0 / 9.0
    h = np.sqrt(cv2_9)
    h *= Z90
    h -= cv2_9
    h += 1.0
    cube = h * h
    cube *= h
    cube *= mean
    return cube
