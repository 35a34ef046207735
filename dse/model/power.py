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


def j_per_flop_per_bit(hw: dict) -> Array:
    """Energy of one FLOP per bit of its native width (``flop16_energy_pj_per_flop / 16``), joules."""
    return hw["flop16_energy_pj_per_flop"] * PJ / 16.0


def host_dynamic_j(hw: dict, flop: Array, nbytes: Array, native: Array, exec_frac: Array = 1.0) -> Array:
    """Dynamic energy of work done on the host chip: compute + DRAM + SRAM staging, joules.

    Energy per FLOP at a native precision is linear in operand width from the 16-bit
    figure (``flop16_energy_pj_per_flop * native / 16``). Linear scaling follows operand
    delivery (register file, datapath wires), which dominates ALU energy in modern
    accelerators; it is conservative for integer multipliers, whose energy falls faster
    than linearly (Horowitz, ISSCC 2014). Only the executed share ``exec_frac`` of the dense
    ``flop`` is charged (:func:`dse.model.perf.sparse_exec_frac`: 2:4 sparse units skip half).
    """
    # scalar factors grouped first: four array operations for a one-platform dense batch
    per_flop = native * j_per_flop_per_bit(hw)
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
