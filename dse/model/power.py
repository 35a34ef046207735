"""Power model: energy of compute and of every memory level, plus static power.

``energy = static_power_w * time + sum(flop * e_flop(bits)) + sum(bytes * 8 * e_bit(level))``
(DESIGN.md section 4). Levels: main memory (DRAM/HBM), the on-chip path from the memory
interface to the compute units, on-chip SRAM (every DRAM byte is staged through it once:
written then read), PIM in-bank access, host <-> PIM link.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from dse.model.perf import op_totals, phase_sum
from dse.model.workload import Array
from dse.spec.registry import INTEGER_GEMM_METHODS, KNOB_BY_NAME
from dse.spec.units import BITS_PER_BYTE, PJ

SRAM_ACCESSES_PER_DRAM_BYTE = 2.0  # one write into SRAM, one read out of it
_INTEGER_METHOD = np.array([name in INTEGER_GEMM_METHODS for name in KNOB_BY_NAME["quant_method"].choices])


def j_per_dram_byte(hw: dict) -> Array:
    """Energy of one main-memory byte on the host: DRAM + on-chip path + SRAM staging, joules."""
    per_bit_pj = (hw["mem_energy_pj_per_bit"] + hw["onchip_energy_pj_per_bit"]
                  + SRAM_ACCESSES_PER_DRAM_BYTE * hw["sram_energy_pj_per_bit"])
    return per_bit_pj * BITS_PER_BYTE * PJ


def j_per_flop(hw: dict, native: Array) -> Array:
    """Energy of one FLOP at native width ``native`` bits, joules: ``flop16_energy_pj_per_flop x
    (f + (1 - f) native / 16)``, ``f = flop_energy_fixed_frac``.

    The width-proportional part follows the multipliers and operand delivery (register file,
    datapath wires); the fixed part (instruction issue, scheduling, accumulation, staging that
    does not narrow) stays. Fitted on an H200 (``validation/gemm_precision_h200.csv``, power-capped
    GEMMs): FP8 costs 0.568 of BF16 per FLOP (0.53-0.61 over 19 shapes), not the 0.5 a linear rule
    gives; 4-bit and 32-bit are the same rule extrapolated (not measured).
    """
    e16 = hw["flop16_energy_pj_per_flop"] * PJ
    f = hw["flop_energy_fixed_frac"]
    return e16 * f + native * (e16 * (1.0 - f) / 16.0)  # scalar factors first: two array ops for a scalar device


def gemm_energy_frac(hw: dict, k: dict, executed: Array) -> Array:
    """Multiplier of a weight GEMM's dense-FLOP energy (:func:`j_per_flop`): the executed share
    ``executed`` (:func:`dse.model.perf.sparse_exec_frac`: 2:4 sparse units skip half) times
    ``int_op_energy_ratio`` where the GEMM runs in integer arithmetic (a method of
    :data:`dse.spec.registry.INTEGER_GEMM_METHODS` with quantised activations, ``a_bits < 16``).
    On an H200 the best INT8 GEMM measured (Triton) costs 1.17x the best FP8 one (cuBLASLt) per
    operation (``validation/gemm_triton_h200.csv``); the ratio is 1 (nothing added) elsewhere by default."""
    ratio = hw["int_op_energy_ratio"]
    if np.ndim(ratio) == 0 and ratio == 1.0:
        return executed
    integer = _INTEGER_METHOD.take(np.asarray(k["quant_method"], dtype=np.intp), mode="clip")
    if np.ndim(integer) == 0 and not integer:  # one floating-point method for the batch: nothing to add
        return executed
    return executed * np.where(integer & (k["a_bits"] < 16.0), ratio, 1.0)


def host_dynamic_j(hw: dict, flop: Array, nbytes: Array, native: Array, flop_energy_frac: Array = 1.0) -> Array:
    """Dynamic energy of work done on the host chip: compute + DRAM + SRAM staging, joules.

    Energy per FLOP at a native precision: :func:`j_per_flop`, times ``flop_energy_frac`` for weight
    GEMMs (:func:`gemm_energy_frac`: the executed share of the dense ``flop``, integer arithmetic).
    """
    per_flop = j_per_flop(hw, native)
    if not (np.ndim(flop_energy_frac) == 0 and flop_energy_frac == 1.0):
        per_flop = per_flop * flop_energy_frac
    return flop * per_flop + nbytes * j_per_dram_byte(hw)


def pim_dynamic_j(hw: dict, flop: Array, inbank_bytes: Array, link_bytes: Array) -> Array:
    """Dynamic energy of work done in memory: PIM compute + in-bank access + host link, joules."""
    return (flop * hw["pim_energy_pj_per_flop"]
            + inbank_bytes * BITS_PER_BYTE * hw["pim_energy_pj_per_bit"]
            + link_bytes * BITS_PER_BYTE * hw["host_link_energy_pj_per_bit"]) * PJ


def op_energy_j(hw: dict, cost: dict[str, Array]) -> Array:
    """Dynamic energy of one operator over its phase (host compute and memory, or PIM), joules."""
    if "energy_j" in cost:
        return cost["energy_j"]
    total = op_totals(cost)
    return host_dynamic_j(hw, total["flop"], total["bytes"], total["native"], total["flop_energy_frac"])


def phase_dynamic_j(hw: dict, costs: dict[str, dict[str, Array]]) -> Array:
    """Dynamic energy of a phase; host operators that share a precision (and energy multiplier) are
    priced together."""
    if any("energy_j" in c for c in costs.values()):
        return functools.reduce(operator.add, (op_energy_j(hw, c) for c in costs.values()))
    groups: dict[tuple[int, int], list[dict[str, Array]]] = {}
    for c in costs.values():
        groups.setdefault((id(c["native"]), id(c["flop_energy_frac"])), []).append(c)
    return functools.reduce(operator.add, (
        host_dynamic_j(hw, phase_sum(g, "flop"), phase_sum(g, "bytes"), g[0]["native"], g[0]["flop_energy_frac"])
        for g in groups.values()))
