"""Power model: energy of compute and of every memory level, plus static power.

``energy = static_power_w * time + sum(flop * e_flop(bits)) + sum(bytes * 8 * e_bit(level))``
(DESIGN.md section 4). Levels: main memory (DRAM/HBM), the on-chip path from the memory
interface to the compute units, on-chip SRAM (every DRAM byte is staged through it once:
written then read), PIM in-bank access, host <-> PIM link.
"""

from __future__ import annotations

import numpy as np

from dse.model import jit, perf
from dse.model.arrays import fused, total
from dse.model.perf import op_totals
from dse.model.workload import FP8_METHOD, Array
from dse.spec.registry import INTEGER_GEMM_METHODS, KNOB_BY_NAME
from dse.spec.units import BITS_PER_BYTE, PJ

SRAM_ACCESSES_PER_DRAM_BYTE = 2.0  # one write into SRAM, one read out of it
# quant_method codes that run integer GEMMs, as a bit mask (bit c: code c), and the number of codes
_INTEGER_MASK = float(sum(1 << c for c, name in enumerate(KNOB_BY_NAME["quant_method"].choices)
                          if name in INTEGER_GEMM_METHODS))
_N_METHODS = float(len(KNOB_BY_NAME["quant_method"].choices))
def j_per_dram_byte(hw: dict) -> Array:
    """Energy of one main-memory byte on the host: DRAM + on-chip path + SRAM staging, joules (one
    compiled pass)."""
    return fused(_j_per_dram_byte_rows, 1, hw["mem_energy_pj_per_bit"], hw["onchip_energy_pj_per_bit"],
                 hw["sram_energy_pj_per_bit"])[0]


@jit.kernel
def _j_per_dram_byte_rows(mem_pj, onchip_pj, sram_pj, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        per_bit_pj = jit.at(mem_pj, i) + jit.at(onchip_pj, i) + SRAM_ACCESSES_PER_DRAM_BYTE * jit.at(sram_pj, i)
        out[i] = per_bit_pj * BITS_PER_BYTE * PJ


def j_per_flop(hw: dict, native: Array) -> Array:
    """Energy of one FLOP at native width ``native`` bits, joules (:func:`j_per_flop_at`)."""
    return fused(_j_per_flop_rows, 1, native, hw["flop16_energy_pj_per_flop"], hw["flop_energy_fixed_frac"])[0]


@jit.kernel
def j_per_flop_at(native: float, e16_pj: float, fixed: float) -> float:
    """Energy of one FLOP at native width ``native`` bits, joules (compiled, one design):
    ``flop16_energy_pj_per_flop x (f + (1 - f) native / 16)``, ``f = flop_energy_fixed_frac``.

    The width-proportional part follows the multipliers and operand delivery (register file,
    datapath wires); the fixed part (instruction issue, scheduling, accumulation, staging that
    does not narrow) stays. Fitted on an H200 (``validation/gemm_precision_h200.csv``, power-capped
    GEMMs): FP8 costs 0.568 of BF16 per FLOP (0.53-0.61 over 19 shapes), not the 0.5 a linear rule
    gives; 4-bit and 32-bit are the same rule extrapolated (not measured).
    """
    e16 = e16_pj * PJ
    return native * (e16 * (1.0 - fixed) / 16.0) + e16 * fixed


@jit.kernel
def _j_per_flop_rows(native, e16_pj, fixed, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = j_per_flop_at(jit.at(native, i), jit.at(e16_pj, i), jit.at(fixed, i))


@jit.kernel
def gemm_energy_frac_at(executed: float, method: float, a_bits: float, ratio: float, integer_mask: float,
                        n_methods: float) -> float:
    """Multiplier of a weight GEMM's dense-FLOP energy (:func:`j_per_flop_at`; compiled, one design):
    the executed share ``executed`` (:func:`dse.model.perf.sparse_exec_frac_at`: 2:4 sparse units skip
    half) times ``int_op_energy_ratio`` ``ratio`` where the GEMM runs in integer arithmetic (a
    ``quant_method`` ``method`` of :data:`dse.spec.registry.INTEGER_GEMM_METHODS`: bit ``method`` of
    ``integer_mask``, codes clipped to ``n_methods``) with quantised activations, ``a_bits < 16``.
    On an H200 the best INT8 GEMM measured (Triton) costs 1.17x the best FP8 one (cuBLASLt) per
    operation (``validation/gemm_triton_h200.csv``); the ratio is 1 (nothing added) elsewhere by default."""
    code = min(max(int(method), 0), int(n_methods) - 1)
    return executed * (ratio if (int(integer_mask) >> code) & 1 and a_bits < 16.0 else 1.0)


@jit.kernel
def gemm_time_frac_at(executed: float, method: float, a_bits: float, frac: float) -> float:
    """Multiplier of a weight GEMM's seconds per dense FLOP at its native peak (compiled, one design):
    the executed share ``executed`` (:func:`dse.model.perf.sparse_exec_frac_at`) over ``fp8_rate_frac``
    ``frac`` where the GEMM runs in FP8 (``quant_method`` fp8 with ``a_bits < 16``, on FP8 units:
    :func:`dse.model.workload.executed_knobs`). GeForce Ada tensor cores run FP8 with FP32 accumulation,
    as serving kernels use it, at half the 8-bit peak (RTX 4090: 330.3 against 660.6 TFLOP/s); 1
    (nothing changed) by default."""
    return executed / (frac if method == FP8_METHOD and a_bits < 16.0 else 1.0)


DECODE_ATTN_FULL_ROWS = 4.0  # query rows per KV head from which decode_attn_energy_ratio applies in full


def decode_attn_energy_ratio(hw: dict, m: dict, queries: Array) -> Array:
    """Decode attention's dynamic energy over the rule: ``1 + (r - 1) min(rows, 4) / 4`` with ``r =
    decode_attn_energy_ratio`` and ``rows = (n_heads / n_kv_heads) x queries`` query rows per KV head.

    Measured on an H200 (``validation/decode_parts_h200.csv``: PyTorch's FlashAttention-2 decode at
    batch 16-64, context 577-2049): 1.30-1.61x the rule with 4 (Llama-3-8B) and 8 (Llama-3-70B) rows
    per KV head, median 1.44, but 1.05-1.14 with one (Llama-2-7B): the excess grows with the rows up
    to 4 (a quarter of it at one row, 1.11) and no further. The card's head ratio is used, also where
    tensor parallelism replicates KV heads."""
    r = hw["decode_attn_energy_ratio"]
    rows = (m["n_heads"] / m["n_kv_heads"]) * queries
    return 1.0 + (r - 1.0) * (np.minimum(rows, DECODE_ATTN_FULL_ROWS) / DECODE_ATTN_FULL_ROWS)


def op_rates(hw: dict, k: dict) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """(weight-GEMM rate, attention rate), each ``(achievable seconds, joules)`` per dense FLOP.

    Weight GEMMs compute at ``max(w_bits, a_bits)``, with the multipliers :func:`gemm_time_frac_at`
    (executed share, FP8 rate) in their time and :func:`gemm_energy_frac_at` in their energy;
    attention at ``max(a_bits, kv_bits)``. One compiled pass over the designs."""
    lin_s, lin_j, attn_s, attn_j = fused(
        _op_rates_rows, 4, k["w_bits"], k["a_bits"], k["kv_bits"], *perf.peaks(hw), hw["compute_eff_frac"],
        hw["flop16_energy_pj_per_flop"], hw["flop_energy_fixed_frac"], k["nm_sparse"], hw["nm_sparsity_native"],
        k["quant_method"], hw["fp8_rate_frac"], hw["int_op_energy_ratio"], _INTEGER_MASK, _N_METHODS)
    return (lin_s, lin_j), (attn_s, attn_j)


@jit.kernel
def _op_rates_rows(w_bits, a_bits, kv_bits, p4, p8, p16, p32, eff, e16_pj, fixed, nm_sparse, nm_native,  # noqa: ANN001
                   method, fp8_frac, int_ratio, integer_mask, n_methods, lin_s, lin_j, attn_s, attn_j):
    for i in range(lin_s.shape[0]):
        a, peak4, peak8, peak16, peak32, e = (jit.at(a_bits, i), jit.at(p4, i), jit.at(p8, i), jit.at(p16, i),
                                              jit.at(p32, i), jit.at(eff, i))
        s, native = perf.native_rate_at(np.maximum(jit.at(w_bits, i), a), peak4, peak8, peak16, peak32, e)
        executed = perf.sparse_exec_frac_at(jit.at(nm_sparse, i), jit.at(nm_native, i))
        q = jit.at(method, i)
        lin_s[i] = s * gemm_time_frac_at(executed, q, a, jit.at(fp8_frac, i))
        lin_j[i] = (j_per_flop_at(native, jit.at(e16_pj, i), jit.at(fixed, i))
                    * gemm_energy_frac_at(executed, q, a, jit.at(int_ratio, i), integer_mask, n_methods))
        s, native = perf.native_rate_at(np.maximum(a, jit.at(kv_bits, i)), peak4, peak8, peak16, peak32, e)
        attn_s[i] = s
        attn_j[i] = j_per_flop_at(native, jit.at(e16_pj, i), jit.at(fixed, i))


def host_dynamic_j(hw: dict, flop: Array, nbytes: Array, per_flop_j: Array) -> Array:
    """Dynamic energy of work done on the host chip, joules: ``flop`` dense FLOPs at ``per_flop_j``
    each (:func:`op_rates`) + DRAM, the on-chip path and SRAM staging for ``nbytes``."""
    return flop * per_flop_j + nbytes * j_per_dram_byte(hw)


def pim_dynamic_j(hw: dict, flop: Array, inbank_bytes: Array, link_bytes: Array) -> Array:
    """Dynamic energy of work done in memory: PIM compute + in-bank access + host link, joules."""
    return (flop * hw["pim_energy_pj_per_flop"]
            + inbank_bytes * BITS_PER_BYTE * hw["pim_energy_pj_per_bit"]
            + link_bytes * BITS_PER_BYTE * hw["host_link_energy_pj_per_bit"]) * PJ


def op_energy_j(hw: dict, cost: dict[str, Array]) -> Array:
    """Dynamic energy of one operator over its phase (host compute and memory, or PIM), joules;
    a host operator's times its ``energy_ratio`` where it has one (decode attention:
    ``decode_attn_energy_ratio``)."""
    if "energy_j" in cost:
        return cost["energy_j"]
    host_j = rule_energy_j(hw, cost)
    return host_j * cost["energy_ratio"] if "energy_ratio" in cost else host_j


def rule_energy_j(hw: dict, cost: dict[str, Array]) -> Array:
    """Dynamic energy of one host operator over its phase by the per-FLOP and per-byte rule, joules."""
    totals = op_totals(cost)
    return host_dynamic_j(hw, totals["flop"], totals["bytes"], totals["j_per_flop"])


def phase_dynamic_j(hw: dict, costs: dict[str, dict[str, Array]]) -> Array:
    """Dynamic energy of a phase, joules (:func:`phase_time_and_dynamic_j`)."""
    return phase_time_and_dynamic_j(hw, costs)[1]


def phase_time_and_dynamic_j(hw: dict, costs: dict[str, dict[str, Array]]) -> tuple[Array, Array]:
    """(time before the power cap, dynamic energy) of a phase, in one compiled pass.

    Per-step operators are summed first, then times the phase's steps once, then the totals
    added (:func:`dse.model.perf.op_totals`). Host operators that share an energy per FLOP are
    priced together (their bytes all at once), plus what an ``energy_ratio`` (:func:`op_energy_j`)
    adds to the rule; with PIM operators (``energy_j``) the energy is the sum of :func:`op_energy_j`.
    """
    cs = list(costs.values())
    steps, j_byte = jit.arg(cs[0]["steps"]), jit.arg(j_per_dram_byte(hw))
    n = -1  # the batch length, -1 where every input is a number
    for x in (steps, j_byte, *(c[key] for c in cs for key in ("time_s", "flop", "bytes", "j_per_flop"))):
        if type(x) is np.ndarray and x.ndim:
            n = len(x)
            break
    rows = n if n >= 0 else 1
    js: list[np.ndarray] = []  # the j_per_flop objects' columns, in order of first appearance
    seen: list[Array] = []
    time_s, flop, nbytes, per_step, group, ratio, has_ratio = [], [], [], [], [], [], []
    for c in cs:
        j = c["j_per_flop"]
        g = next((g for g, x in enumerate(seen) if x is j), len(seen))
        if g == len(seen):
            seen.append(j)
            js.append(_column(j, rows))
        time_s.append(_column(c["time_s"], rows))
        flop.append(_column(c["flop"], rows))
        nbytes.append(_column(c["bytes"], rows))
        per_step.append(int(c["per_step"]))
        group.append(g)
        has_ratio.append(int("energy_ratio" in c))
        ratio.append(_column(c["energy_ratio"], rows) if "energy_ratio" in c else time_s[-1])
    raw_s, dyn_j = np.empty(rows), np.empty(rows)
    _phase_rows(tuple(time_s), tuple(flop), tuple(nbytes), tuple(per_step), tuple(group), tuple(ratio),
                tuple(has_ratio), tuple(js), _column(steps, rows) if type(steps) is np.ndarray else steps,
                _column(j_byte, rows) if type(j_byte) is np.ndarray else j_byte, raw_s, dyn_j)
    if n < 0:  # every input a number
        raw_s, dyn_j = float(raw_s[0]), float(dyn_j[0])
    if any("energy_j" in c for c in cs):
        dyn_j = total([op_energy_j(hw, c) for c in cs])
    return raw_s, dyn_j


def _column(x: Array, n: int) -> np.ndarray:
    """``x`` as a writable, contiguous float64 column of ``n`` rows: a kernel's tuple holds arrays of
    one numba type only (a read-only input, or a number, is copied)."""
    if type(x) is np.ndarray and x.dtype is jit.F64 and x.shape == (n,) and x.flags.writeable and x.flags.c_contiguous:
        return x
    return np.array(np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)))


@jit.kernel
def _phase_sum_into(out, values, per_step, group, g, steps):  # noqa: ANN001, ANN202
    """``out`` = the sum over the operators (of group ``g``; every operator when ``g < 0``) per design:
    per-step operators first, times ``steps``, then the totals added in order; 0 when there are none.
    Which operators take part is decided once, in two flag arrays (tuple flags tested per design
    cost twice the time)."""
    m = len(values)
    step_use, total_use = np.zeros(m, np.bool_), np.zeros(m, np.bool_)
    for o in range(m):
        mine = g < 0 or group[o] == g
        step_use[o], total_use[o] = mine and per_step[o], mine and not per_step[o]
    for i in range(out.shape[0]):
        s = jit.at(steps, i)  # read first: read after the sum, it takes 4x the time
        acc, have = 0.0, False
        for o in range(m):
            if step_use[o]:
                x = values[o][i]
                acc = acc + x if have else x
                have = True
        if have:
            acc = s * acc
        for o in range(m):
            if total_use[o]:
                x = values[o][i]
                acc = acc + x if have else x
                have = True
        out[i] = acc


@jit.kernel
def _phase_rows(time_s, flop, nbytes, per_step, group, ratio, has_ratio, j_flop, steps, j_byte,  # noqa: ANN001
                raw_s, dyn_j):
    n = raw_s.shape[0]
    _phase_sum_into(raw_s, time_s, per_step, group, -1, steps)
    part = np.empty(n)
    for g in range(len(j_flop)):
        _phase_sum_into(part, flop, per_step, group, g, steps)
        j = j_flop[g]
        if g:
            for i in range(n):
                dyn_j[i] += part[i] * j[i]
        else:
            for i in range(n):
                dyn_j[i] = part[i] * j[i]
    _phase_sum_into(part, nbytes, per_step, group, -1, steps)
    for i in range(n):
        dyn_j[i] = part[i] * jit.at(j_byte, i) + dyn_j[i]
    for o in range(len(flop)):
        if has_ratio[o]:  # what an energy_ratio adds to the operator's rule energy
            f, b, r, j = flop[o], nbytes[o], ratio[o], j_flop[group[o]]
            for i in range(n):
                s = jit.at(steps, i)
                fo, bo = (s * f[i], s * b[i]) if per_step[o] else (f[i], b[i])
                dyn_j[i] += (r[i] - 1.0) * (fo * j[i] + bo * jit.at(j_byte, i))
