"""Request-length distributions -> the moments the serving stage needs (computed once per distribution).

Pure numpy (plus :mod:`math` for ``erf``). A distribution is a dict (``spaces/workloads.yaml``
holds sourced ones) with ``kind`` and its parameters, for the prompt (``in``) and the output
(``out``) lengths in tokens:

=================  ===================================================================
``fixed``          ``value``
``uniform``        ``low``, ``high`` (integers, inclusive)
``exponential``    ``mean``; lengths ``>= min`` (default 1)
``lognormal``      ``median`` and ``sigma`` (of ln length), or ``mean`` and ``sigma``
``histogram``      ``edges`` (n+1 bin edges) and ``weights`` (n), uniform within a bin
=================  ===================================================================

Every kind may set ``min`` (default 1) and ``max`` (default 2**17): the pmf is put on the
integers ``min..max`` (continuous kinds by their CDF on unit bins) and renormalised, so all
moments below are exact for that pmf. Prompt and output lengths are independent unless the
workload gives ``in_out_mean`` (``E[P O]``, e.g. computed from a trace).

:func:`length_moments` returns floats and one table: ``in_stoploss`` = ``E[(P - z)+]`` on
:data:`STOPLOSS_GRID` (0 and 2**(i/4) tokens), which the stage interpolates to price the
compute-bound part of prefill chunks (:mod:`dse.model.serving`).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_MAX_LEN = 2**17
STOPLOSS_STEPS_PER_OCTAVE = 4
STOPLOSS_GRID: np.ndarray = np.concatenate([[0.0], 2.0 ** (np.arange(0, 18 * STOPLOSS_STEPS_PER_OCTAVE + 1)
                                                          / STOPLOSS_STEPS_PER_OCTAVE)])
MOMENT_KEYS: tuple[str, ...] = ("in_mean", "in_sq_mean", "in_p50", "in_p90", "out_mean", "out_sq_mean",
                                "out_p50", "out_p90", "out_inv_mean", "out_inv_sq_mean", "out_avg_var_factor",
                                "in_out_mean")


def avg_var_factor(x: np.ndarray) -> np.ndarray:
    """Variance of the time average of a stationary process with exponential autocorrelation
    over a window ``x`` correlation times, relative to the process variance:
    ``2 (x - 1 + exp(-x)) / x**2`` (-> 1 for short windows, ``2 / x`` for long ones)."""
    x = np.maximum(np.asarray(x, dtype=float), 1e-9)
    return 2.0 * (x + np.expm1(-x)) / (x * x)


def _cdf(kind: str, d: dict, x: np.ndarray) -> np.ndarray:
    """CDF of a continuous kind at ``x`` (numpy array)."""
    if kind == "exponential":
        lo = float(d.get("min", 1.0))
        return np.where(x <= lo, 0.0, 1.0 - np.exp(-(x - lo) / (float(d["mean"]) - lo)))
    if kind == "lognormal":
        s = float(d["sigma"])
        mu = math.log(float(d["median"])) if "median" in d else math.log(float(d["mean"])) - 0.5 * s * s
        z = (np.log(np.maximum(x, 1e-300)) - mu) / (s * math.sqrt(2.0))
        return np.array([0.5 * (1.0 + math.erf(v)) for v in z])
    raise ValueError(f"unknown length distribution kind {kind!r}")


def pmf(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """(integer lengths, probabilities) of a distribution dict (module docstring)."""
    kind = d["kind"]
    lo = int(d.get("min", 1))
    hi = int(d.get("max", DEFAULT_MAX_LEN))
    if kind == "fixed":
        return np.array([float(d["value"])]), np.array([1.0])
    if kind == "uniform":
        vals = np.arange(int(d["low"]), int(d["high"]) + 1, dtype=float)
        return vals, np.full(len(vals), 1.0 / len(vals))
    if kind == "histogram":
        edges = np.asarray(d["edges"], dtype=float)
        weights = np.asarray(d["weights"], dtype=float)
        lo, hi = max(lo, int(math.ceil(edges[0]))), min(hi, int(math.floor(edges[-1])))
        vals = np.arange(lo, hi + 1, dtype=float)
        # mass of bin b spread uniformly over the integers it contains (x in [edge_b, edge_b+1))
        b = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, len(weights) - 1)
        per_int = weights / np.maximum(np.ceil(edges[1:]) - np.ceil(edges[:-1]), 1.0)
        p = per_int[b]
    else:
        vals = np.arange(lo, hi + 1, dtype=float)
        p = _cdf(kind, d, vals + 0.5) - _cdf(kind, d, vals - 0.5)
        p[0] += _cdf(kind, d, np.array([lo - 0.5]))[0]  # mass below min folds onto min
    p = np.maximum(p, 0.0)
    keep = p > 0
    return vals[keep], p[keep] / p[keep].sum()


def _quantile(vals: np.ndarray, p: np.ndarray, q: float) -> float:
    return float(vals[min(np.searchsorted(np.cumsum(p), q - 1e-12), len(vals) - 1)])


def stoploss(vals: np.ndarray, p: np.ndarray, z: np.ndarray = STOPLOSS_GRID) -> np.ndarray:
    """``E[(X - z)+]`` at each ``z`` for the pmf ``(vals, p)``."""
    return np.array([float(np.sum(p * np.maximum(vals - zi, 0.0))) for zi in z])


def length_moments(workload: dict) -> dict:
    """Moments of ``workload = {"in": dist, "out": dist, "in_out_mean": optional}`` (floats)
    and ``in_stoploss`` (array over :data:`STOPLOSS_GRID`)."""
    pv, pp = pmf(workload["in"])
    ov, op = pmf(workload["out"])
    out = {
        "in_mean": float(np.sum(pp * pv)), "in_sq_mean": float(np.sum(pp * pv * pv)),
        "in_p50": _quantile(pv, pp, 0.5), "in_p90": _quantile(pv, pp, 0.9),
        "out_mean": float(np.sum(op * ov)), "out_sq_mean": float(np.sum(op * ov * ov)),
        "out_p50": _quantile(ov, op, 0.5), "out_p90": _quantile(ov, op, 0.9),
        "out_inv_mean": float(np.sum(op / ov)), "out_inv_sq_mean": float(np.sum(op / (ov * ov))),
    }
    # a request's TPOT averages the batch-size process over its lifetime (O / E[O] lifetimes)
    out["out_avg_var_factor"] = float(np.sum(op * avg_var_factor(ov / out["out_mean"])))
    out["in_out_mean"] = float(workload.get("in_out_mean", out["in_mean"] * out["out_mean"]))
    out["in_stoploss"] = stoploss(pv, pp)
    return out


def sample_moments(prompt: np.ndarray, output: np.ndarray) -> dict:
    """The moments of :func:`length_moments` for an empirical sample of (prompt, output) pairs
    (a trace, or the requests a simulation drew); keeps their correlation in ``in_out_mean``."""
    prompt, output = np.asarray(prompt, dtype=float), np.asarray(output, dtype=float)
    pv, pc = np.unique(prompt, return_counts=True)
    ov, oc = np.unique(output, return_counts=True)
    pp, op = pc / pc.sum(), oc / oc.sum()
    out = {
        "in_mean": float(prompt.mean()), "in_sq_mean": float(np.mean(prompt * prompt)),
        "in_p50": _quantile(pv, pp, 0.5), "in_p90": _quantile(pv, pp, 0.9),
        "out_mean": float(output.mean()), "out_sq_mean": float(np.mean(output * output)),
        "out_p50": _quantile(ov, op, 0.5), "out_p90": _quantile(ov, op, 0.9),
        "out_inv_mean": float(np.mean(1.0 / output)), "out_inv_sq_mean": float(np.mean(1.0 / (output * output))),
        "in_out_mean": float(np.mean(prompt * output)),
    }
    out["out_avg_var_factor"] = float(np.sum(op * avg_var_factor(ov / out["out_mean"])))
    out["in_stoploss"] = stoploss(pv, pp)
    return out


def sample(workload: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` independent (prompt, output) length pairs drawn from the pmfs (for the DES tests)."""
    pv, pp = pmf(workload["in"])
    ov, op = pmf(workload["out"])
    return rng.choice(pv, n, p=pp), rng.choice(ov, n, p=op)


def stack_moments(moments: list[dict], codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-design moment arrays for designs whose workload is ``moments[codes[i]]``; the
    stop-loss tables stay one per workload, ``(len(moments), len(grid))``, with
    ``in_stoploss_rows`` = ``codes`` picking each design's (``dse.model.serving_stoploss.stoploss_of``)."""
    out = {key: np.array([m[key] for m in moments])[codes] for key in MOMENT_KEYS}
    out["in_stoploss"] = np.stack([m["in_stoploss"] for m in moments])
    out["in_stoploss_rows"] = np.asarray(codes, dtype=np.intp)
    return out
