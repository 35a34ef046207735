"""The full analytic model: workload x hardware -> time, energy and the metric columns.

:func:`evaluate_arrays` is a pure function of arrays (no I/O, no globals, inputs not
mutated). Scalars broadcast, so a batch of one platform passes its fields as floats.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from dse.model import perf, power
from dse.model.workload import Array, Op, draft_op, memory_bytes, phase_ops, tokens_per_verify, weight_bytes_per_param


def _pim_possible(hw: dict, k: dict) -> bool:
    """False when no design of the batch can map work to PIM (lets the hot path skip it)."""
    return bool(np.any(_has_pim(hw)) and np.any(k["pim_offload"] > 0))


def _has_pim(hw: dict) -> Array:
    """PIM units exist where they have both compute and in-memory bandwidth."""
    return (hw["pim_peak_flop_per_s"] > 0) & (hw["pim_bw_bytes_per_s"] > 0)


def _op_cost(hw: dict, k: dict, name: str, op: Op, lo: Array, hi: Array, steps: Array,
             rate: tuple[Array, Array], s_per_byte: Array, pim: bool) -> dict[str, Array]:
    """Time (s, with launch overhead), FLOPs and bytes of one operator.

    Operators that do not depend on the context are costed per step (``per_step``
    True: multiply by the phase's steps, see :func:`op_totals`); decode attention is
    summed exactly over the steps ``j = lo..hi``. ``s_per_byte`` is the reciprocal achievable
    memory bandwidth, ``rate`` ``(achievable seconds per FLOP, native bits)``; both are
    kept (``s_per_flop``, ``native``) for the energy and the breakdown. Where PIM is
    possible the result holds phase totals with ``energy_j`` and ``on_pim``.
    """
    s_per_flop, native = rate
    launch_s = op.kernels * hw["kernel_overhead_s"]
    c_sum = steps * (lo + hi) * 0.5 if (op.flop1 is not None or pim) else 0.0  # sum of j = lo..hi
    if op.flop1 is None:  # no context dependence: every step costs the same
        step_s = perf.roofline_s(op.flop0, op.bytes0, s_per_flop, s_per_byte) + launch_s
        cost = {"time_s": step_s, "flop": op.flop0, "bytes": op.bytes0, "per_step": True}
    else:
        cost = {"time_s": perf.sum_max_linear(op.flop0 * s_per_flop, op.flop1 * s_per_flop,
                                              op.bytes0 * s_per_byte, op.bytes1 * s_per_byte, lo, hi, steps, c_sum)
                + steps * launch_s,
                "flop": perf.sum_linear_nonempty(op.flop0, op.flop1, steps, c_sum),
                "bytes": perf.sum_linear_nonempty(op.bytes0, op.bytes1, steps, c_sum), "per_step": False}
    cost.update(s_per_flop=s_per_flop, native=native, steps=steps)
    if pim:
        cost = _with_pim(hw, k, name, op, lo, hi, c_sum, op_totals(cost), launch_s)
    return cost


def op_totals(cost: dict[str, Array]) -> dict[str, Array]:
    """The cost with ``time_s``, ``flop`` and ``bytes`` as totals over the phase."""
    if not cost["per_step"]:
        return cost
    steps = cost["steps"]
    return {**cost, "per_step": False, **{key: steps * cost[key] for key in ("time_s", "flop", "bytes")}}


def op_energy_j(hw: dict, cost: dict[str, Array]) -> Array:
    """Dynamic energy of one operator over its phase (host compute and memory, or PIM), joules."""
    if "energy_j" in cost:
        return cost["energy_j"]
    total = op_totals(cost)
    return power.host_dynamic_j(hw, total["flop"], total["bytes"], total["native"])


def _phase_sum(costs: list[dict[str, Array]], key: str) -> Array:
    """Sum of ``key`` over operators: per-step ones summed first, then times their steps once."""
    per_step = [c[key] for c in costs if c["per_step"]]
    totals = [c[key] for c in costs if not c["per_step"]]
    out = functools.reduce(operator.add, totals) if totals else 0.0
    if per_step:
        steps = costs[0]["steps"]
        part = functools.reduce(operator.add, per_step)
        out = out + (part if isinstance(steps, float) and steps == 1.0 else steps * part)
    return out


def phase_time_s(costs: dict[str, dict[str, Array]]) -> Array:
    """Time of a phase before the power cap, seconds."""
    return _phase_sum(list(costs.values()), "time_s")


def phase_dynamic_j(hw: dict, costs: dict[str, dict[str, Array]]) -> Array:
    """Dynamic energy of a phase; host operators that share a precision are priced together."""
    if any("energy_j" in c for c in costs.values()):
        return functools.reduce(operator.add, (op_energy_j(hw, c) for c in costs.values()))
    groups: dict[int, list[dict[str, Array]]] = {}
    for c in costs.values():
        groups.setdefault(id(c["native"]), []).append(c)
    return functools.reduce(operator.add, (
        power.host_dynamic_j(hw, _phase_sum(g, "flop"), _phase_sum(g, "bytes"), g[0]["native"])
        for g in groups.values()))


def _with_pim(hw: dict, k: dict, name: str, op: Op, lo: Array, hi: Array, c_sum: Array,
              host: dict[str, Array], launch_s: Array) -> dict[str, Array]:
    """Replace the host cost by the PIM cost where the decode operator is mapped to PIM.

    PIM units read weights/KV in-bank (``pim_bw_bytes_per_s``) and compute at 16-bit
    (``pim_peak_flop_per_s``); activations cross the host link each step.
    """
    level = 1.0 if name == "attn" else 2.0
    on_pim = (k["pim_offload"] >= level) & _has_pim(hw)
    pim_flop_per_s = np.where(on_pim, hw["pim_peak_flop_per_s"], 1.0)
    pim_bytes_per_s = np.where(on_pim, hw["pim_bw_bytes_per_s"], 1.0)
    link_ok = on_pim & (hw["host_link_bw_bytes_per_s"] > 0)
    link_s = np.where(link_ok, op.act_bytes / np.where(link_ok, hw["host_link_bw_bytes_per_s"], 1.0), 0.0)
    flop1 = 0.0 if op.flop1 is None else op.flop1
    bytes1 = 0.0 if op.bytes1 is None else op.bytes1
    inbank0 = op.bytes0 - op.act_bytes
    steps = host["steps"]
    pim_s = perf.sum_max_linear(op.flop0 / pim_flop_per_s, flop1 / pim_flop_per_s,
                                inbank0 / pim_bytes_per_s, bytes1 / pim_bytes_per_s, lo, hi, steps, c_sum)
    pim_s = pim_s + steps * link_s
    inbank = host["bytes"] - steps * op.act_bytes
    pim_j = power.pim_dynamic_j(hw, host["flop"], inbank, steps * op.act_bytes)
    return {
        **host,
        "time_s": np.where(on_pim, pim_s + steps * launch_s, host["time_s"]),
        "energy_j": np.where(on_pim, pim_j, op_energy_j(hw, host)),
        "on_pim": on_pim,
    }


def phase_costs(m: dict, k: dict, hw: dict, wb: Array) -> dict[str, dict[str, dict[str, Array]]]:
    """Per-phase, per-operator costs: ``{"prefill": {op: cost}, "decode": {op: cost}}``.

    Each cost holds ``time_s``, ``flop``, ``bytes`` (per step where ``per_step``; see
    :func:`op_totals`), ``s_per_flop`` (reciprocal achievable host rate), ``native``
    (bits), ``steps`` and, where PIM is possible, ``energy_j`` and ``on_pim``.
    """
    lin_s_per_flop, lin_native = perf.compute_s_per_flop(hw, np.maximum(k["w_bits"], k["a_bits"]))
    nm_time_frac = 1.0 - 0.5 * ((k["nm_sparse"] > 0) & (hw["nm_sparsity_native"] > 0))  # 2:4 skips half
    lin_rate = (lin_s_per_flop * nm_time_frac, lin_native)
    attn_rate = perf.compute_s_per_flop(hw, np.maximum(k["a_bits"], k["kv_bits"]))
    pre_ops = phase_ops(m, k, wb, k["batch"] * k["in_len"], prefill=True)
    if np.any(k["spec_len"] > 0):  # speculative decoding: verification steps of spec_len + 1 positions
        queries = k["spec_len"] + 1.0
        per_step = tokens_per_verify(k)
        steps = np.ceil(k["out_len"] / per_step)
        dec_ops = phase_ops(m, k, wb, k["batch"] * queries, prefill=False, queries=queries)
        dec_ops["draft"] = draft_op(m, k, wb)
    else:
        per_step, steps = 1.0, k["out_len"]
        dec_ops = phase_ops(m, k, wb, k["batch"], prefill=False)
    # decode step j = 1..steps attends c = in_len + per_step * j: rewrite attention as linear in j
    dec_ops["attn"] = _in_steps(dec_ops["attn"], k["in_len"], per_step)
    pim = _pim_possible(hw, k)
    bw = perf.mem_s_per_byte(hw)

    def rate(name: str) -> tuple[Array, Array]:
        return attn_rate if name == "attn" else lin_rate

    return {
        "prefill": {n: _op_cost(hw, k, n, op, 0.0, 0.0, 1.0, rate(n), bw, False) for n, op in pre_ops.items()},
        "decode": {n: _op_cost(hw, k, n, op, 1.0, steps, steps, rate(n), bw, pim) for n, op in dec_ops.items()},
    }


def _in_steps(op: Op, in_len: Array, per_step: Array) -> Op:
    """``op`` linear in the attended context ``c = in_len + per_step * j`` as linear in the step ``j``."""
    unit = isinstance(per_step, float) and per_step == 1.0  # no speculation: skip the multiplications
    return op._replace(flop0=op.flop0 + op.flop1 * in_len, flop1=op.flop1 if unit else op.flop1 * per_step,
                       bytes0=op.bytes0 + op.bytes1 * in_len, bytes1=op.bytes1 if unit else op.bytes1 * per_step)


def evaluate_arrays(m: dict, k: dict, hw: dict) -> dict[str, np.ndarray]:
    """All metric columns (DESIGN.md 3.2) for a batch of designs.

    ``m``: model-card fields, ``k``: knobs (:data:`dse.model.workload.KNOB_DEFAULTS`),
    ``hw``: hardware fields; each value an array or a scalar (broadcast).
    """
    wb = weight_bytes_per_param(k)
    costs = phase_costs(m, k, hw, wb)
    times: dict[str, Array] = {}
    energies: dict[str, Array] = {}
    for phase, ops in costs.items():
        raw_s = phase_time_s(ops)
        dyn_j = phase_dynamic_j(hw, ops)
        times[phase] = perf.power_capped_s(raw_s, dyn_j, hw)
        energies[phase] = dyn_j + hw["static_power_w"] * times[phase]
    b, n_out = k["batch"], k["out_len"]
    generated = b * n_out
    ttft, dec_s = times["prefill"], times["decode"]
    total_s = ttft + dec_s
    total_j = energies["prefill"] + energies["decode"]
    per_dec_s, per_total_s = 1.0 / dec_s, 1.0 / total_s  # reciprocals: fewer divisions
    dec_tps = generated * per_dec_s
    mem = memory_bytes(m, k, wb)
    out = {
        "ttft_s": ttft,
        "tpot_s": dec_s / n_out,
        "decode_tokens_per_s": dec_tps,
        "tokens_per_s": generated * per_total_s,
        "decode_power_w": energies["decode"] * per_dec_s,
        "avg_power_w": total_j * per_total_s,
        "decode_tokens_per_j": generated / energies["decode"],
        "tokens_per_j": generated / total_j,
        "tdp_tokens_per_j": dec_tps * (1.0 / hw["tdp_w"]),
        "memory_bytes": mem,
        "g_memory_bytes": mem - hw["mem_capacity_bytes"],
    }
    shape = np.broadcast_shapes(*(np.shape(v) for v in out.values()))
    return {key: np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for key, v in out.items()}
