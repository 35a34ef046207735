"""Serving stage: TTFT and TPOT (means and p90s) at one operating point of the fluid model.

Pure numpy, arrays over designs (a leading load-grid axis allowed). Called by
:func:`dse.model.serving.serving_metrics` with the operating point ``st`` of
``dse.model.serving_fluid.fluid_state`` (batch, iteration times, prefill marginal, rate) and the
per-design quantities ``d`` of ``dse.model.serving_fluid.prepare``. The approximations (derivation
and error against the discrete-event reference: ``docs/serving.md`` section 2, items 5-6):

* **TTFT** = residual of the iteration in progress (length-biased over a two-point
  iteration-time distribution: pure decode or with prefill chunks) + the request's own chunks
  (exactly at the p90 prompt for the p90) + queueing: M/G/1 Pollaczek-Khinchine on the
  prefill lane in tokens plus Sakasegawa's M/G/c for the slots; p90 of the service part from a
  gamma fitted to its mean and variance (Wilson-Hilferty), the queueing part zero-else-exponential.
* **TPOT** = request-weighted iteration time / tokens per iteration + the prefill queued behind
  the request's own; p90 normal on the batch-size process averaged over its lifetime.
"""

from __future__ import annotations

import numpy as np

Z90 = 1.2815515655446004  # standard normal 0.9 quantile


def crossover_room(cross, x, share):
    """Prompt tokens that ride below the compute/memory crossover ``cross`` on top of ``x``
    decode tokens, shared by the chunks that meet in one iteration (negative: compute-bound)."""
    return np.where(cross > x, (cross - x) * share, cross - x)


def chunk_gemm_s(d: dict, z, k):
    """GEMM seconds one chunk of ``k`` prompt tokens adds (``z``: crossover room)."""
    return d["cm_p"] * k + d["slope_p"] * (np.maximum(k - z, 0.0) - np.maximum(-z, 0.0))


def latencies(c: dict, d: dict, w: dict, st: dict, lam, lam_max, n_cap) -> dict:
    """TTFT and TPOT (means and p90s) at operating point ``st`` with arrival rate ``lam``."""
    mP, tpv = d["mP"], d["tpv"]
    n, t_d, mp, k, n_ch = st["n"], st["t_d"], st["mp"], st["k"], st["n_ch"]
    tau = st["tau"]
    u = lam * tau  # admissions per iteration
    phi = np.clip(-np.expm1(-u * n_ch), 1e-12, 1.0)  # iterations carrying prefill (Poisson chunks)
    t_m = t_d + u * mp / phi
    busy = -np.expm1(-(n + lam * mp))
    r1 = busy * (phi * t_m * t_m + (1.0 - phi) * t_d * t_d) / (2.0 * tau)  # residual, length-biased
    r2 = busy * (phi * t_m ** 3 + (1.0 - phi) * t_d ** 3) / (3.0 * tau)
    others = lam * r1 * mp  # prompts arriving in the same window share the first iteration
    s_mean = t_d * n_ch + mp + others
    p90 = w["in_p90"]
    nfull = np.maximum(np.ceil(p90 / k) - 1.0, 0.0)
    z = crossover_room(d["cross_p"], st["x"], st["share"])
    s90 = ((nfull + 1.0) * (t_d + c["attn_launch_s"]) + nfull * chunk_gemm_s(d, z, k)
           + chunk_gemm_s(d, z, p90 - nfull * k)
           + np.maximum(0.5 * p90 * (p90 + 1.0) * c["attn_flop_s_per_pair"], p90 * c["attn_act_s_per_tok"])
           + others)
    s90 = s90 + st["lin_f"] * (p90 / mP)  # the ffn row, pro rata
    rate_tok = k / (t_d + mp * k / mP)  # prefill tokens/s with a backlog
    rho_pf = np.minimum(lam * mP / rate_tok, 0.999)
    w_pf = lam * w["in_sq_mean"] / (rate_tok * rate_tok) / (2.0 * (1.0 - rho_pf))  # Pollaczek-Khinchine
    cc = np.maximum(n_cap, 1.0)
    rho_c = np.clip(lam / lam_max, 0.0, 0.999)
    p_c = rho_c ** (np.sqrt(2.0 * (cc + 1.0)) - 1.0)  # Sakasegawa (1977) M/G/c
    w_c = d["n_dec"] * st["tau"] * p_c / (cc * (1.0 - rho_c)) * 0.5 * (w["out_sq_mean"] / w["out_mean"] ** 2)
    w_mean = w_pf + w_c
    p_wait = np.clip(np.maximum(rho_pf, p_c), 1e-9, 1.0)
    var_n = n / (1.0 - st["eps"])
    # service part (residual + own chunks): gamma fitted to mean and variance (Wilson-Hilferty)
    b = np.where(p90 > 1.001 * mP, (s90 - s_mean) / np.maximum(p90 - mP, 1e-9), 0.0)
    var = (b * b * (w["in_sq_mean"] - mP * mP) + (r2 - r1 * r1)
           + (st["slope_d"] * n_ch) ** 2 * var_n + lam * r1 * mp * mp * w["in_sq_mean"] / (mP * mP))
    base = r1 + s_mean
    base90 = gamma_p90(base, var)
    # queueing part: zero with probability 1 - p_wait, else exponential; deviations add in quadrature
    w90 = np.where(p_wait > 0.1, w_mean / p_wait * np.log(np.maximum(p_wait, 0.1) / 0.1), 0.0)
    ttft_mean = base + w_mean
    ttft_p90 = ttft_mean + np.sqrt((base90 - base) ** 2 + (w90 - w_mean) ** 2)
    # TPOT_i = tau_req / tpv + Y_i: batch-size fluctuation and prefill interference, normal, plus
    # Y = X / O (prefill queued behind the request's own; zero w.p. exp(-lam TTFT), else exponential)
    base_mean = st["tau_req"] / tpv
    base_sd = np.sqrt(st["slope"] ** 2 * var_n * w["out_avg_var_factor"]
                      + phi * (1.0 - phi) * (t_m - t_d) ** 2 * w["out_inv_mean"] * tpv) / tpv
    y_mean = st["x_req"] * w["out_inv_mean"]
    p_x = np.clip(-np.expm1(-lam * st["ttft0"]), 1e-9, 1.0)
    y90 = np.where(p_x > 0.1, y_mean / p_x * np.log(np.maximum(p_x, 0.1) / 0.1), 0.0)
    tpot_mean = base_mean + y_mean
    tpot_p90 = tpot_mean + np.sqrt((Z90 * base_sd) ** 2 + (y90 - y_mean) ** 2)
    return {"ttft_mean_s": ttft_mean, "ttft_p90_s": ttft_p90, "tpot_mean_s": tpot_mean, "tpot_p90_s": tpot_p90,
            "busy": busy, "u": u}


def gamma_p90(mean, var):
    """0.9 quantile of a gamma with this mean and variance (Wilson-Hilferty cube-root normal)."""
    cv2_9 = var / (9.0 * mean * mean)
    return mean * (1.0 - cv2_9 + Z90 * np.sqrt(cv2_9)) ** 3
