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
from dse.spec.units import BITS_PER_BYTE, PJ

SRAM_ACCESSES_PER_DRAM_BYTE = 2.0  # one write into SRAM, one read out of it


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


def host_dynamic_j(hw: dict, flop: Array, nbytes: Array, native: Array, exec_frac: Array = 1.0) -> Array:
    """Dynamic energy of work done on the host chip: compute + DRAM + SRAM staging, joules.

    Energy per FLOP at a native precision: :func:`j_per_flop`. Only the executed share
    ``exec_frac`` of the dense ``flop`` is charged (:func:`dse.model.perf.sparse_exec_frac`:
    2:4 sparse units skip half).
    """
    per_flop = j_per_flop(hw, native)
    if not (np.ndim(exec_frac) == 0 and exec_frac == 1.0):
        per_flop = per_flop * exec_frac
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
    return host_dynamic_j(hw, total["flop"], total["bytes"], total["native"], total["exec_frac"])


def phase_dynamic_j(hw: dict, costs: dict[str, dict[str, Array]]) -> Array:
    """Dynamic energy of a phase; host operators that share a precision (and executed share) are
    priced together."""
    if any("energy_j" in c for c in costs.values()):
        return functools.reduce(operator.add, (op_energy_j(hw, c) for c in costs.values()))
    groups: dict[tuple[int, int], list[dict[str, Array]]] = {}
    for c in costs.values():
        groups.setdefault((id(c["native"]), id(c["exec_frac"])), []).append(c)
    return functools.reduce(operator.add, (
        host_dynamic_j(hw, phase_sum(g, "flop"), phase_sum(g, "bytes"), g[0]["native"], g[0]["exec_frac"])
        for g in groups.values()))
