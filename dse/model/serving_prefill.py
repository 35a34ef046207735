"""Serving stage: the GEMM rooflines of the fluid model's iteration, the marginal prefill of one
request on top of the decode batch and the pipeline stall (for :func:`dse.model.serving_fluid.fluid_state`).

Row functions of the compiled kernels of :mod:`dse.model.serving_fluid` (one design at grid row
``g``, design ``i``; :mod:`dse.model.serving_jit`), and numpy's powers for the MoE rows. A GEMM row is
``max(x cf, cw + x cm)`` in its driver tokens ``x`` (:func:`gemm_row`); a prompt's GEMM seconds
price its tokens below the row's compute/memory crossover at the activation rate and the rest at
the compute rate, from the prompt's stop-loss (:func:`prefill_gemm_row`); MoE rows read the experts
the tokens touch (:func:`_touched`, numpy); a pipeline round adds the stall of the micro-batches
carrying prefill (:func:`stall_rows`). ``docs/serving.md`` section 2 gives the derivation.
"""

from __future__ import annotations

import numpy as np

from dse.model.jit import kernel
from dse.model.serving_jit import at2, clip, mx
from dse.model.serving_stoploss import stoploss_row


def _touched(c: dict, d: dict, tokens):
    """Expected experts touched by ``tokens`` tokens (1 for a dense model)."""
    if not d["moe"]:
        return 1.0
    e = c["moe_n_experts"]
    return e * (1.0 - (1.0 - c["moe_top_k"] / e) ** np.maximum(tokens, 1.0))


@kernel
def gemm_row(x, cf, cm, cw, g, i):
    """(time, slope in ``x``) of one roofline ``max(x cf, cw + x cm)`` (``x`` a number)."""
    cf_i, cm_i = at2(cf, g, i), at2(cm, g, i)
    comp = x * cf_i
    mem = x * cm_i
    mem += at2(cw, g, i)
    return mx(comp, mem), (cf_i if comp > mem else cm_i)


@kernel
def stall_rows(x, n, neg_inv_n_dec, mp, odds, pmf0, inv_E, E, terms, gap_cf, gap_la, gap_cm, gap_w, mp_out):
    """Pipelines: ``mp`` plus the round time a carrying micro-batch's stall adds to the pooled round
    ``t_d + u0 mp``, per admission (``u0 = N / n_dec``; 0 where nothing decodes, the stall 0 there).

    A stage serves the micro-batches in order and an engine schedules its next one only when its
    last has left the pipeline, so the round is the longer of the last stage's load (the pooled round,
    ``t_d + sum X_i`` with ``X_i`` a micro-batch's prefill time per pass) and the trip of the heaviest
    micro-batch, whose ``pp - 1`` passes through the earlier stages are shorter than the last stage's
    by ``D`` (LM head, draft launches): ``t_d + pp X_max - (pp - 1) D``. With ``K`` of the ``pp``
    micro-batches carrying chunks (binomial, each with probability ``phi = 1 - e^-lam_ch``) and each
    carrying ``C = u0 mp / (pp phi)``, the stall is ``E[((pp - K) C - (pp - 1) D)+; K >= 1]``, summed
    over ``K = 1 .. terms`` (``terms = max(pp) - 1``; ``K = pp`` adds nothing). ``odds = phi / (1 - phi)
    = expm1(lam_ch)`` and ``pmf0 = e^(-pp lam_ch)`` (``lam_ch`` at most 50) come from numpy; the
    binomial's ratios ``pmf(K) / pmf(K - 1) = (pp - K + 1) / K * odds``; ``D``:
    :func:`dse.model.serving_prepare.prepare`. One pass per ``K`` (SIMD loops over the designs)."""
    rows, cols = mp_out.shape
    carry, gap, pmf, total = np.empty((rows, cols)), np.empty((rows, cols)), np.empty((rows, cols)), mp_out
    for g in range(rows):
        for i in range(cols):
            x_i = at2(x, g, i)
            odds_i = at2(odds, g, i)
            c = -(at2(n, g, i) * at2(neg_inv_n_dec, g, i)) * at2(mp, g, i)
            c *= at2(inv_E, g, i)
            c *= odds_i + 1.0
            c /= odds_i  # / phi
            carry[g, i] = c
            gp = x_i * at2(gap_cf, g, i)
            gp += at2(gap_la, g, i)
            hi = x_i * at2(gap_cm, g, i)
            hi += at2(gap_w, g, i)
            gap[g, i] = mx(gp, hi)  # (pp - 1) D
            pmf[g, i] = at2(pmf0, g, i)  # K = 0
    for kk in range(1, int(terms) + 1):
        for g in range(rows):
            for i in range(cols):
                e_i = at2(E, g, i)
                p = pmf[g, i] * at2(odds, g, i)
                p *= (e_i - kk + 1.0) / kk
                pmf[g, i] = p
                term = carry[g, i] * (e_i - kk)
                term -= gap[g, i]
                term = clip(term, 0.0, np.inf)
                term *= p
                total[g, i] = term if kk == 1 else total[g, i] + term
    for g in range(rows):
        for i in range(cols):
            u0 = -(at2(n, g, i) * at2(neg_inv_n_dec, g, i))
            mp_out[g, i] = at2(mp, g, i) + total[g, i] / (u0 if u0 > 0.0 else np.inf)


@kernel
def prefill_gemm_row(point, tab, at, g, i, x, k, r, share, cross, act, slope):
    """(room, expected GEMM seconds a prompt adds): ``cm P + slope E[(P - z)+]`` over the first
    chunk of ``k`` plus the tokens beyond it at the full-chunk rate (``r = E[(P - k)+] / k``),
    ``z`` the prompt tokens that ride below the compute/memory crossover ``cross`` on top of the
    ``x`` decode tokens, shared by the chunks that meet in one iteration (negative:
    compute-bound). Returns ``z`` clipped to ``[0, k]``; the stop-loss of ``point``, ``tab``, ``at``
    (:func:`dse.model.serving_stoploss.stoploss_row`)."""
    z = at2(cross, g, i) - x
    z *= share  # the shared room where positive (share in (0, 1]); a negative one clips to 0 either way
    z = clip(z, 0.0, k)
    # E[(P - z)+] - E[(P - k)+] + (k - z) r over the first chunk and the rest: E[(P - z)+] - z r
    first = stoploss_row(point, tab, at, g, i, z)
    first -= z * r
    first *= at2(slope, g, i)
    first += at2(act, g, i)
    return z, first
