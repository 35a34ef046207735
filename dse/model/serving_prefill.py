"""Serving stage: the GEMM rooflines of the fluid model's iteration, the marginal prefill of one
request on top of the decode batch and the pipeline stall (for :func:`dse.model.serving_fluid.fluid_state`).

Pure numpy over arrays (``(n,)`` designs, an optional leading load-grid axis). ``c`` the iteration
coefficients (:mod:`dse.model.serving_iteration`), ``d`` the per-design quantities of
:func:`dse.model.serving_prepare.prepare`. A GEMM row is ``max(x cf, cw + x cm)`` in its driver
tokens ``x`` (:func:`_gemm_group`); a prompt's GEMM seconds price its tokens below the row's
compute/memory crossover at the activation rate and the rest at the compute rate, from the
prompt's stop-loss (:func:`_prefill_gemm_s`); MoE rows read the experts the tokens touch
(:func:`_touched`); a pipeline round adds the stall of the micro-batches carrying prefill
(:func:`_stall`). ``docs/serving.md`` section 2 gives the derivation.
"""

from __future__ import annotations

import numpy as np

from dse.model.arrays import total
from dse.model.serving_stoploss import _clip, _stoploss, upper


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
    slope = np.where(comp > mem, cf, cm)
    return np.maximum(comp, mem, out=mem), slope


def _stall(c: dict, d: dict, x, u0, mp, lam_ch):
    """Pipelines: the round time a carrying micro-batch's stall adds to the pooled round ``t_d + u0 mp``.

    A stage serves the micro-batches in order and an engine schedules its next one only when its
    last has left the pipeline, so the round is the longer of the last stage's load (the pooled round,
    ``t_d + sum X_i`` with ``X_i`` a micro-batch's prefill time per pass) and the trip of the heaviest
    micro-batch, whose ``pp - 1`` passes through the earlier stages are shorter than the last stage's
    by ``D`` (LM head, draft launches): ``t_d + pp X_max - (pp - 1) D``. With ``K`` of the ``pp``
    micro-batches carrying chunks (binomial, each with probability ``phi = 1 - e^-lam_ch``) and each
    carrying ``C = u0 mp / (pp phi)``, the stall is ``E[((pp - K) C - (pp - 1) D)+; K >= 1]`` (0 where
    ``u0 = 0``). ``D`` and the binomial's ratios: :func:`dse.model.serving_prepare.prepare`."""
    lam = upper(lam_ch, 50.0)
    odds = np.expm1(lam)  # phi / (1 - phi)
    carry = u0 * mp
    carry *= d["inv_E"]
    carry *= odds + 1.0
    carry /= odds  # / phi
    gap = x * d["gap_cf"]
    gap += d["gap_la"]
    hi = x * d["gap_cm"]
    hi += d["gap_w"]
    gap = np.maximum(gap, hi, out=gap)  # (pp - 1) D
    pmf = d["neg_E"] * lam
    pmf = np.exp(pmf, out=pmf)  # K = 0
    terms = []
    for ratio, share in d["binom"]:  # K = 1 .. pp - 1 (K = pp adds nothing)
        pmf *= odds
        pmf *= ratio
        term = carry * share
        term -= gap
        term = _clip(term, 0.0, np.inf, out=term)
        term *= pmf
        terms.append(term)
    return total(terms)


def _prefill_gemm_s(d: dict, x, k, r, share, cross, act, slope):
    """(room, expected GEMM seconds a prompt adds): ``cm P + slope E[(P - z)+]`` over the first
    chunk of ``k`` plus the tokens beyond it at the full-chunk rate (``r = E[(P - k)+] / k``),
    ``z`` the prompt tokens that ride below the compute/memory crossover ``cross`` on top of the
    ``x`` decode tokens, shared by the chunks that meet in one iteration (negative:
    compute-bound). Returns ``z`` clipped to ``[0, k]``."""
    z = cross - x
    z *= share  # the shared room where positive (share in (0, 1]); a negative one clips to 0 either way
    z = _clip(z, 0.0, k, out=z)
    # E[(P - z)+] - E[(P - k)+] + (k - z) r over the first chunk and the rest: E[(P - z)+] - z r
    first = _stoploss(d, z)
    zr = z * r
    first -= zr
    first *= slope
    first += act
    return z, first
