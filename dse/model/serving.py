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

**Fluid operating point** (:mod:`dse.model.serving_fluid`): with ``N`` sequences decoding,
``tau(N) = t_d(N) + u m_p(N)``, closed by Little's law with the batch fluctuation.

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

import functools

import numpy as np

from dse.model.arrays import ndim
from dse.model.jit import kernel
from dse.model.serving_fluid import (  # noqa: F401 (_rate re-exported)
    _energy_args,
    _rate,
    device_j_row,
    fluid_state,
    iteration_energy_j,
)
from dse.model.serving_jit import at2, clip, grid_rows
from dse.model.serving_prepare import (  # noqa: F401 (re-exported: the stage's public helpers)
    kv_footprint_tokens,
    kv_max_seqs,
    prepare,
    request_shape,
)
from dse.model.serving_queue import latencies, queue_constants
from dse.model.serving_stoploss import _clip, stoploss_at, upper  # noqa: F401 (stoploss_at re-exported)

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


def _grid(a, b):
    """Stack ``a`` (per design) and points ``b`` into a leading grid axis."""
    return np.asarray(b, dtype=float).reshape((-1,) + (1,) * ndim(a)) * a


def _pick(grids, idx) -> tuple:
    """``grid[idx[j], j]`` for every design ``j`` of each of ``grids`` (grid axis first, the same
    shape), as one flat gather each from one flat index."""
    cols = np.size(idx)
    at = np.ravel(idx) * cols
    at += _columns(cols)
    return tuple(np.take(grid, at).reshape(np.shape(idx)) for grid in grids)


@functools.lru_cache(maxsize=4)
def _columns(cols: int) -> np.ndarray:
    """``arange(cols)``, read-only, built once per chunk size (np.arange costs 0.6 ns per element)."""
    out = np.arange(cols)
    out.flags.writeable = False
    return out


def _slo_ratio(lat: dict, s: dict):
    """The larger of TTFT p90 / its SLO and TPOT p90 / its SLO (<= 1: both met; inf past capacity)."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.maximum(lat["ttft_p90_s"] / s["ttft_slo_s"], lat["tpot_p90_s"] / s["tpot_slo_s"])


def _queue_ratio(qc: dict, top: dict, lam_q, rate_q, lam_max, s: dict, need) -> np.ndarray:
    """The SLO ratios of the slot queue's grid points (real rates ``rate_q`` at ``lam_q``, the
    capacity batch's state ``top``) of the designs whose batch points all meet both SLOs (``need``),
    evaluated on those designs only; inf elsewhere, where the goodput search never reads them (it
    stops at the first point that misses)."""
    if need.all():
        return _slo_ratio(latencies(qc, top, lam_q, lam_max), s) * (lam_q / rate_q)
    ratio = np.full(lam_q.shape, np.inf)
    if need.any():
        at = np.flatnonzero(need)  # (gathers from indices: ~4x faster than from the mask)
        lat = latencies(_designs(qc, at, need.shape), _designs(top, at, need.shape), lam_q.take(at, axis=-1),
                        lam_max.take(at))
        lam_rate = lam_q.take(at, axis=-1) / rate_q.take(at, axis=-1)
        ratio[..., at] = _slo_ratio(lat, _designs(s, at, need.shape)) * lam_rate
    return ratio


def _designs(x: dict, at, shape: tuple) -> dict:
    """``x`` with its per-design arrays (of ``shape``, ``(n,)``) cut to the designs ``at``."""
    return {key: v.take(at) if getattr(v, "shape", None) == shape else v for key, v in x.items()}


def _neg_inv(ratio):
    """``-1 / ratio``: increasing in the load, and about linear in it where queueing makes the
    latencies grow like ``1 / (1 - rho)`` (the goodput search interpolates it, not the ratio)."""
    return -1.0 / np.maximum(ratio, 1e-300)


def _stretch(c: dict, d: dict, st: dict, lam):
    """Power-cap clock stretch at fluid state ``st`` with arrival rate ``lam`` (unstretched time):
    ``max(1, P_dev / (tdp - static))``, ``P_dev`` the devices' dynamic energy of the mean iteration
    (``u = lam tau`` admissions) over its time ``tau = t_d / (1 - lam m_p)`` (at capacity: the
    full iterations, ``u = N_cap / n_dec``), in one compiled pass (:func:`_stretch_rows`; MoE: the
    admissions first, for numpy's power of the experts touched)."""
    u = grid_rows(_admissions_rows, 1, lam, st["mp"], st["t_d"])[0] if d["moe"] else 0.0
    return grid_rows(_stretch_rows, 1, lam, d["headroom"], *_energy_args(c, d, st, u))[0]


@kernel
def _mean_tau(lam, mp, t_d):
    """The mean iteration ``t_d / (1 - lam m_p)`` (numbers; the prefill lane's load at most 0.999)."""
    return t_d / (1.0 - clip(lam * mp, -np.inf, 0.999))


@kernel
def _admissions_rows(lam, mp, t_d, out):
    for g in range(out.shape[0]):
        for i in range(out.shape[1]):
            lam_i = at2(lam, g, i)
            out[g, i] = lam_i * _mean_tau(lam_i, at2(mp, g, i), at2(t_d, g, i))


@kernel
def _stretch_rows(lam, headroom, recompute, n, x, mp, t_d, e_pf_tok, e_req, e_dec, e_w, moe, moe_j, comm, mP,
                  fixed_s_per_tok, fixed_s_per_head, fx_dec, fixed_s, out):
    for g in range(out.shape[0]):
        for i in range(out.shape[1]):
            lam_i = at2(lam, g, i)
            tau = _mean_tau(lam_i, at2(mp, g, i), at2(t_d, g, i))
            dev_j = device_j_row(lam_i * tau, recompute, n, x, mp, t_d, e_pf_tok, e_req, e_dec, e_w, moe, moe_j, comm,
                                 mP, fixed_s_per_tok, fixed_s_per_head, fx_dec, fixed_s, g, i)
            dev_j /= tau * at2(headroom, g, i)
            out[g, i] = clip(dev_j, 1.0, np.inf)


def _load_point(c: dict, d: dict, s: dict, t, curve: dict) -> tuple:
    """(state, arrival rate in unstretched time, real rate) at load parameter ``t`` per design:
    ``t <= 1`` is the fraction of the capacity batch (rate from Little's law), ``1 < t < 2`` the
    way from there to capacity on the slot queue (batch at capacity); the real rate is the rate
    over the power cap's stretch there (not clipped to the capacity: the batch solve needs the
    curve's own shape; the SLO ratio and the goodput clip it)."""
    st = fluid_state(c, d, s, upper(t, 1.0) * curve["n_cap"])
    queue = t - 1.0
    queue = _clip(queue, 0.0, np.inf, out=queue)
    queue *= curve["lam_span"]
    queue += curve["lam_top"]
    lam = np.where(t <= 1.0, np.minimum(st["lam"], curve["lam_top"]), queue)
    return st, lam, lam / _stretch(c, d, st, lam)


def _toward(lo: tuple, hi: tuple, y_target, lo_frac=0.0, hi_frac=1.0):
    """Linear interpolation of ``x`` at ``y_target`` between bracket ends ``(x, y)``, as a
    fraction of the bracket clamped to ``[lo_frac, hi_frac]`` (one compiled pass)."""
    return grid_rows(_toward_rows, 1, lo[0], lo[1], hi[0], hi[1], y_target, lo_frac, hi_frac)[0]


@kernel
def _toward_rows(x0, y0, x1, y1, y_target, lo_frac, hi_frac, out):
    for g in range(out.shape[0]):
        for i in range(out.shape[1]):
            y0_i, y1_i, x0_i = at2(y0, g, i), at2(y1, g, i), at2(x0, g, i)
            f = at2(y_target, g, i) - y0_i
            f /= y1_i - y0_i if y1_i > y0_i else 1.0
            f = clip(f, at2(lo_frac, g, i), at2(hi_frac, g, i))
            if f != f:  # an infinite end: the other end
                f = 0.0
            f *= at2(x1, g, i) - x0_i
            f += x0_i
            out[g, i] = f


def _shrink(lo: tuple, hi: tuple, new: tuple, keep_lo) -> tuple:
    """Regula falsi bracket update: the point ``new`` replaces ``hi`` where ``keep_lo``, else ``lo``
    (one compiled pass per coordinate)."""
    pairs = [grid_rows(_shrink_rows, 2, keep_lo, a, b, c) for a, b, c in zip(new, lo, hi, strict=True)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


@kernel
def _shrink_rows(keep_lo, new, lo, hi, lo_out, hi_out):
    for g in range(lo_out.shape[0]):
        for i in range(lo_out.shape[1]):
            keep, x = at2(keep_lo, g, i) != 0.0, at2(new, g, i)
            lo_out[g, i] = x if keep else at2(lo, g, i)
            hi_out[g, i] = at2(hi, g, i) if keep else x


def _goodput_bracket(c, d, w, s, ratio, t_g, rate_g, rate_gu, curve) -> tuple:
    """(points meeting both SLOs, bracket ends ``(t, -1/ratio, rate, unclipped rate)``) of the SLO
    crossing: between the last grid point meeting both SLOs and the next, shrunk by
    :data:`_GOODPUT_STEPS` safeguarded regula falsi steps on the load parameter ``t``. Ratios
    and rates are in real (power-capped) time; ``rate_gu``: the grid's rates not clipped to the
    capacity (the batch solve reads them)."""
    ok = ratio[0] <= 1.0
    n_ok = ok.astype(np.intp)  # grid points meeting both SLOs before the first that does not
    for row in ratio[1:]:
        ok &= row <= 1.0
        n_ok += ok
    i_hi = np.clip(n_ok, 1, ratio.shape[0] - 1)
    y = _neg_inv(ratio)
    lo = (t_g[i_hi - 1], *_pick((y, rate_g, rate_gu), i_hi - 1))
    hi = (t_g[i_hi], *_pick((y, rate_g, rate_gu), i_hi))
    for _ in range(_GOODPUT_STEPS):
        t_new = _toward(lo, hi, -1.0, _SAFE_FRAC, 1.0 - _SAFE_FRAC)
        st_new, lam_new, rate_new = _load_point(c, d, s, t_new, curve)
        lat = latencies(curve["qc"], st_new, lam_new, curve["lam_max"])
        y_new = _neg_inv(_slo_ratio(lat, s) * (lam_new / np.minimum(rate_new, curve["capacity"])))
        lo, hi = _shrink(lo, hi, (t_new, y_new, rate_new, rate_new), y_new <= -1.0)
    return n_ok, lo, hi


def _operating_batch(c, d, s, rate_op, b_lo, b_hi, curve):
    """The batch whose real (power-capped, unclipped) Little's-law rate is ``rate_op``:
    :data:`_BATCH_STEPS` safeguarded regula falsi steps in the bracket ``(batch, rate)`` ends on
    ``(-1/batch, -1/rate)``, then interpolated there. ``rate = N / (n_dec tau(N))`` with ``tau``
    about affine in ``N`` (and, under a power cap, ``rate = P_cap u / E_iter(N)`` with the
    iteration energy about affine): ``1/rate`` about affine in ``1/N`` on both sides of the cap's
    kink, where the rate itself bends sharply and a secant on it stalls at the bracket's far end.
    A zero lower end (light load, rate proportional to the batch), or ends so small that their
    reciprocals overflow (a rate of 1e-308 req/s): the plain secant."""
    with np.errstate(divide="ignore"):  # a zero rate (no goodput): the plain secant below gives 0
        target = -1.0 / rate_op
    ends = [b_lo, b_hi]
    for i in range(_BATCH_STEPS + 1):
        (n0, r0), (n1, r1) = ends
        origin = n0 <= 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            x = _toward((-1.0 / n0, -1.0 / r0), (-1.0 / n1, -1.0 / r1), target,
                        *((_SAFE_FRAC, 1.0 - _SAFE_FRAC) if i < _BATCH_STEPS else (0.0, 1.0)))
            n_new = np.divide(-1.0, x, out=x)
            plain = origin | ~(n_new > 0.0) | ~np.isfinite(n_new)  # (NaN where -1/n overflowed at both ends)
            if plain.any():
                n_new = np.where(plain, _toward((n0, r0), (n1, r1), rate_op), n_new)
        if i == _BATCH_STEPS:
            return n_new
        st = fluid_state(c, d, s, n_new)
        lam = np.minimum(st["lam"], curve["lam_top"])
        rate = lam / _stretch(c, d, st, lam)
        ends = list(_shrink(ends[0], ends[1], (n_new, rate), rate <= rate_op))


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
    d = prepare(c, w, s)
    n_kv = np.maximum(np.floor(d["kv_tok"] * (1.0 - s["kv_watermark_frac"]) / d["foot"]), 0.0)  # kv_max_seqs
    n_budget = s["token_budget"] / (d["q"] + d["mP"] / d["n_dec"])
    n_cap = np.maximum(np.minimum(np.minimum(s["max_seqs"], n_kv), n_budget), 1e-6)
    # every design's shape: the offered rate carries it (serving_stage), also where the capacity is
    # the same for all (only an energy coefficient varies per row, e.g. the integer-GEMM ratio)
    shape = np.broadcast_shapes(np.shape(n_cap), np.shape(s["arrival_rate_req_per_s"]))
    n_cap = np.atleast_1d(n_cap if np.shape(n_cap) == shape else np.broadcast_to(n_cap, shape).copy())
    # the coarse load grid: batch fractions (fluctuation-corrected rates), then the slot queue;
    # rates in unstretched time (lam), then in real time (rate = lam / stretch)
    n_grid = _grid(n_cap, _GRID_BATCH_FRAC)
    gs = fluid_state(c, d, s, n_grid)
    top = {key: v[-1] for key, v in gs.items() if ndim(v) == 2}  # the capacity batch
    tau_sat = top["t_d"] + n_cap / d["n_dec"] * top["mp"]  # capacity: every iteration full
    lam_max = n_cap / (d["n_dec"] * tau_sat)
    lam_top = np.minimum(top["lam"], lam_max)
    capacity = lam_max / _stretch(c, d, top, lam_max)
    lam_b = np.minimum(gs["lam"], lam_top)
    rate_bu = lam_b / _stretch(c, d, gs, lam_b)  # the batch curve's own rates (the batch solve)
    rate_b = np.minimum(rate_bu, capacity)  # real rates at most the capacity (the SLO ratio, goodput)
    lam_span = lam_max - lam_top  # the slot queue's
    lam_q = lam_top + _grid(lam_span, _GRID_QUEUE_FRAC)
    rate_q = np.minimum(lam_q / _stretch(c, d, top, lam_q), capacity)
    qc = queue_constants(c, d, w, n_cap)
    curve = {"n_cap": n_cap, "lam_top": lam_top, "lam_max": lam_max, "lam_span": lam_span, "capacity": capacity,
             "qc": qc}
    ratio_b = _slo_ratio(latencies(qc, gs, lam_b, lam_max), s) * (lam_b / rate_b)
    ratio = np.concatenate([ratio_b, _queue_ratio(qc, top, lam_q, rate_q, lam_max, s, np.all(ratio_b <= 1.0, axis=0))])
    rate_g = np.concatenate([rate_b, rate_q])
    t_g = np.concatenate([_GRID_BATCH_FRAC, 1.0 + np.asarray(_GRID_QUEUE_FRAC)])
    # goodput: where the SLO ratio crosses 1 in the refined bracket, on the chord of log(ratio): convex
    # where queueing blows up, so the chord errs on the side of meeting the SLOs (-1/ratio, used for
    # the steps, is concave there and would overshoot)
    n_ok, lo, hi = _goodput_bracket(c, d, w, s, ratio, t_g, rate_g, np.concatenate([rate_bu, rate_q]), curve)
    with np.errstate(divide="ignore"):  # -1/ratio = -0 where the ratio is infinite
        rate_good = _toward((lo[2], np.log(-1.0 / lo[1])), (hi[2], np.log(-1.0 / hi[1])), 0.0)
    goodput = np.where(n_ok == 0, 0.0, np.where(n_ok == len(t_g), rate_g[-1], rate_good))
    goodput = np.minimum(goodput, capacity * (1.0 - 1e-9))  # stable: an offered rate equal to it is below capacity
    # the batch curve's points: the grid's, and the goodput search's final bracket ends where they are
    # on it (t <= 1). The bracket ends refine the curve where the goodput is found: the rate is
    # steep in the batch there under a power cap (a batch solve from the grid alone can miss by
    # several %, and an SLO-bound point then runs above its SLO), and it can peak between grid
    # points (the grid's first batch reaching the rate is then past the peak, on the falling side)
    zero = np.zeros((1,) + n_cap.shape)
    rate_rows = np.concatenate([zero, rate_bu])
    n_rows = np.concatenate([zero, n_grid])
    p_lo = (np.where(lo[0] <= 1.0, lo[0] * n_cap, np.inf), lo[3])
    p_hi = (np.where(hi[0] <= 1.0, hi[0] * n_cap, np.inf), hi[3])
    # the curve's highest rate on those points: an offered rate above it is on the slot queue (below,
    # its batch solves Little's law on the batch curve). A crossing on the batch curve past it (the
    # curve flat under a power cap) counts only up to it, so that the goodput evaluated as an offered
    # rate finds the same point
    rate_hat = np.maximum(np.where(lo[0] <= 1.0, lo[3], 0.0), np.where(hi[0] <= 1.0, hi[3], 0.0))
    for row in rate_bu:
        np.maximum(rate_hat, row, out=rate_hat)
    on_curve = (n_ok > 0) & (n_ok < len(_GRID_BATCH_FRAC))
    goodput = np.where(on_curve, np.minimum(goodput, rate_hat), goodput)
    # the operating point: the offered rate, or the goodput rate. Up to the curve's highest rate its
    # batch solves Little's law in real time (bracketed on those points); above it, on the slot
    # queue, the queue position gives the rate
    offered = np.atleast_1d(np.asarray(s["arrival_rate_req_per_s"], dtype=float))
    rate_op = np.minimum(np.where(offered > 0.0, offered, goodput), capacity * (1.0 - 1e-9))
    # the first point (in batch order) whose rate reaches rate_op, and the one before: the stable
    # solution of Little's law (where the rate rises with the batch), also where the power cap bends
    # the curve flat or makes it fall. One path for both modes (an offered rate equal to the goodput
    # gives the same point; seeding the goodput mode from the goodput search's bracket alone made
    # the two disagree). On the grid first (j), then the two bracket ends: they lie inside one grid
    # interval, the one from the grid point g0 (row i_hi) on
    below = np.ones(np.broadcast_shapes(n_cap.shape, rate_op.shape), dtype=bool)
    j = np.zeros(below.shape, dtype=np.intp)
    for row in rate_rows:
        below &= row < rate_op
        j += below
    j = np.clip(j, 1, rate_rows.shape[0] - 1)
    e0, e1 = (_pick((n_rows, rate_rows), i) for i in (j - 1, j))
    first_lo = (p_lo[1] >= rate_op) & (p_lo[0] < e1[0])
    first_hi = ~first_lo & (p_hi[1] >= rate_op) & (p_hi[0] < e1[0])
    i_hi = np.clip(n_ok, 1, rate_rows.shape[0] - 1)  # g0 matters only below a bracket end on the curve
    g0 = _pick((n_rows, rate_rows), i_hi)
    # below e1 (the ends between e0 and e1 have rates below rate_op there): the last of e0 and those
    before_e1 = [np.where((p_hi[0] > e0[0]) & (p_hi[0] < e1[0]), h,
                          np.where((p_lo[0] > e0[0]) & (p_lo[0] < e1[0]), lw, z)) for h, lw, z in zip(p_hi, p_lo, e0,
                                                                                                   strict=True)]
    ends = [tuple(np.where(first_lo, a, np.where(first_hi, b, z)) for a, b, z in zip(*pts, strict=True))
            for pts in ((g0, p_lo, before_e1), (p_lo, p_hi, e1))]
    queued = rate_op > rate_hat
    n_op = np.where(queued, n_cap, _operating_batch(c, d, s, rate_op, *ends, curve))
    st = fluid_state(c, d, s, n_op)
    # on the slot queue: the rate through (rate_top, lam_top), the grid's queue points, (capacity, lam_max)
    rate_pts = np.concatenate([rate_b[-1:], rate_q, capacity[None]])
    lam_pts = np.concatenate([lam_top[None], lam_q, lam_max[None]])
    k = np.clip((rate_pts < rate_op).sum(axis=0), 1, rate_pts.shape[0] - 1)
    lam_queue = _toward(_pick((lam_pts, rate_pts), k - 1), _pick((lam_pts, rate_pts), k), rate_op)
    lam_here = np.minimum(st["lam"], lam_top)
    stretch = np.where(queued, lam_queue / np.maximum(rate_op, 1e-300),
                       np.maximum(_stretch(c, d, st, lam_here), lam_here / capacity))  # the real rate <= capacity
    lam_op = rate_op * stretch  # unstretched
    lat = latencies(qc, st, lam_op, lam_max)
    stable = np.where(offered > 0.0, offered < capacity, True)
    power_w = c["static_power_w"] + sum(iteration_energy_j(c, d, st, lat["u"])) / (st["tau"] * stretch) * lat["busy"]
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
