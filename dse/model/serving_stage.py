"""Serving stage, part 4: the serving metrics of a batch of designs (the pipeline's last stage).

Pure numpy. Builds each design's iteration coefficients (one device, then the ``tp * pp * ep``
replica: :mod:`dse.model.serving_mapping`; a pipeline runs ``pp`` virtual engines), its
request-length moments (the workload's, precomputed once per distribution, or the point mass
of its own ``in_len``/``out_len`` for ``workload`` 0, "none") and runs
:func:`dse.model.serving.serving_metrics`. Metrics are per system: ``dp`` replicas share the
offered rate equally, so rates, tokens/s and power scale by ``dp``; the cost per token uses the
system's TCO at the serving power.
"""

from __future__ import annotations

import numpy as np

from dse.model import cost, parallel, sharding
from dse.model.serving import SCHED_DEFAULTS, serving_metrics
from dse.model.serving_coeffs import serving_coeffs
from dse.model.serving_lengths import MOMENT_KEYS
from dse.model.serving_mapping import point_moments, point_stoploss, replica_coeffs, round_limits
from dse.model.workload import stored_weight_bytes, weight_bytes_per_param
from dse.spec.metrics import METRIC_TABLE

Array = np.ndarray | float
_RATES = ("serving_tokens_per_s", "goodput_req_per_s", "serving_capacity_req_per_s", "serving_power_w")
_METRICS = tuple(m.name for m in METRIC_TABLE if m.stage == "serving")  # the stage's columns, in table order


def workload_moments(k: dict, moments: list[dict | None]) -> dict[str, np.ndarray]:
    """Per-design length moments: ``moments[code]`` for ``workload`` codes > 0 (``moments[0]`` is
    None), the point mass of ``in_len``/``out_len`` for code 0. One workload for the whole
    batch: its shared moments as they are (scalars, one stop-loss table). Several: per-design
    moment arrays, and the stop-loss tables as a set ``(R, G)`` (each workload's, then the point
    masses' of the code-0 rows) with ``in_stoploss_rows`` giving each design's row
    (:func:`dse.model.serving_stoploss.stoploss_of`): no per-design copy of a shared table."""
    code = np.asarray(k["workload"], dtype=np.int64)
    if not np.any(code > 0):
        return point_moments(k["in_len"], k["out_len"])
    shape = np.broadcast_shapes(np.shape(code), np.shape(k["in_len"]), np.shape(k["out_len"]))
    codes = np.broadcast_to(code, shape).ravel()
    used = np.flatnonzero(np.bincount(codes, minlength=len(moments)))
    if len(used) == 1:  # the same numbers as stacked, without per-design tables
        return moments[int(used[0])]
    table = [m if m is not None else moments[1] for m in moments]  # code 0 rows take the point mass below
    out = {key: np.array([m[key] for m in table])[codes] for key in MOMENT_KEYS}
    tables = np.stack([m["in_stoploss"] for m in table])  # (workloads, G)
    rows = codes.copy()
    if used[0] == 0:  # some rows are point masses
        own = np.flatnonzero(codes == 0)
        point = point_moments(np.broadcast_to(k["in_len"], shape).ravel()[own],
                              np.broadcast_to(k["out_len"], shape).ravel()[own])
        for key, v in out.items():
            v[own] = point[key]
        tables = np.concatenate([tables, point_stoploss(point["in_mean"])])
        rows[own] = len(table) + np.arange(len(own))
    out = {key: v.reshape(shape) for key, v in out.items()}
    out["in_stoploss"], out["in_stoploss_rows"] = tables, rows.reshape(shape)
    return out


def serving_stage(m: dict, k: dict, hw: dict, tech: dict, moments: list[dict | None],
                  system_cost_usd: Array) -> dict[str, Array]:
    """Serving metrics of each design (``hw`` with its provisioned static power and usable links)."""
    k1 = {**k, "micro_batches": k["pp"]}  # a pipeline serves with pp virtual engines
    c = serving_coeffs(m, k1, hw, k["token_budget"], k["max_seqs"])
    if not parallel.is_single_device(k1):
        wb = weight_bytes_per_param(k)
        weights = stored_weight_bytes(m, k, wb)
        per_device = sharding.memory_bytes_per_device(m, {**k1, "batch": 0.0}, wb)
        c = replica_coeffs(c, m, k1, hw, per_device, weights)
    dp = k["dp"]
    sched = round_limits({key: k[key] for key in SCHED_DEFAULTS}, k["pp"])
    # arrays and numbers: their distinct shapes (np.shape and broadcast_shapes cost ~1 us a value, ~90 values)
    shape = np.broadcast_shapes(*{getattr(v, "shape", ()) for v in (*k.values(), *m.values(), *hw.values())})
    # the offered rate carries the batch's shape, so every output comes back per design
    sched["arrival_rate_req_per_s"] = np.broadcast_to(k["arrival_rate_req_per_s"] / dp, shape)
    res = serving_metrics(c, workload_moments(k, moments), sched)
    out = {name: res[name] * dp if name in _RATES else res[name] for name in _METRICS if name in res}
    setting = cost.cost_setting(k, tech)
    tco = cost.tco_usd_per_hour(system_cost_usd, out["serving_power_w"], setting["lifetime_years"],
                                setting["usd_per_kwh"], setting["pue"], tech["hours_per_year"])
    out["serving_usd_per_mtoken"] = cost.usd_per_mtoken(tco, out["serving_tokens_per_s"])
    return out
