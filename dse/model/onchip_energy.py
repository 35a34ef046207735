"""On-chip data-movement energy per main-memory bit, one rule for every platform class (R-ONCHIP-P).

The power model charges a DRAM bit three times: the DRAM device (``mem_energy_pj_per_bit``), one
SRAM write + read of the last-level cache or scratchpad (``2 * sram_energy_pj_per_bit``) and the
on-chip path in between (``onchip_energy_pj_per_bit``, this module). The path is priced from its
physical parts::

    E = E_if[mem]                                                  host PHY + memory controller
      + e_wire(node) * path_factor[arch] * route_factor[arch] * L  wires over the dies crossed
      + E_d2d                                                      die-to-die crossings on the path
      + E_load[arch] * s(node) / s(ref)                            logic of the load path

* ``E_if`` per memory technology: host-side PHY and controller (HBM on an interposer ~0.5,
  LPDDR ~1.5, GDDR/DDR ~4 pJ/bit); the DRAM side is in ``mem_energy_pj_per_bit``.
* ``e_wire(node)``: energy per bit moved per mm of repeated on-chip wire (Keckler, Dally et al.,
  IEEE Micro 2011, Table 1: 0.121 pJ/bit/mm at 40 nm, 0.076 at 10 nm and below), interpolated
  log-log by node; ``L = sum_i sqrt(A_i)`` (mm) over the dies the data crosses (for one die its
  side), times the mean route as a fraction of the side (``path_factor``: GPU edge-PHY -> L2 ->
  crossbar -> SM 0.9, CPU mesh 1.0, scratchpad ASIC and FPGA 0.5) and the wire cost relative to
  an ASIC wire (``route_factor``: FPGA programmable routing 4, else 1).
* ``E_load[arch]``: the logic that issues and tracks the loads (instructions, tags, queues,
  crossbar/mesh routers), quoted at the reference node and scaled with the logic energy
  ``s(node)`` of rule R-E16. Fitted to H100 and H200 GEMV power measurements for GPUs (10 pJ/bit
  at 7 nm; an A100 microbenchmark study checks within 2%); transferred to the other
  architectures by how much work one instruction or descriptor moves (CPU 0.5x, ASIC/FPGA 0.1x).

Constants and their sources: ``spaces/onchip_energy.yaml`` (:mod:`dse.spec.onchip_table` loads it
as the ``table`` dict below). Pure numpy over arrays; scalars broadcast.
"""

from __future__ import annotations

import numpy as np

from dse.spec.onchip_table import ARCHITECTURES

Array = np.ndarray | float
__all__ = ["ARCHITECTURES", "default_arch_code", "logic_scale", "onchip_energy_pj_per_bit", "onchip_terms",
           "path_side_mm", "wire_pj_per_bit_mm"]


def _interp_log(x_nm: Array, xp_nm: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Log-log interpolation of the positive column ``fp`` over nodes ``xp_nm`` (ascending), held at the ends."""
    return np.exp(np.interp(np.log(x_nm), np.log(xp_nm), np.log(fp)))


def wire_pj_per_bit_mm(table: dict, process_nm: Array) -> np.ndarray:
    """Energy per bit moved per mm of on-chip wire at ``process_nm``, pJ/(bit mm)."""
    return _interp_log(process_nm, table["node_nm"], table["wire_pj_per_bit_mm"])


def logic_scale(table: dict, process_nm: Array) -> np.ndarray:
    """Logic energy at ``process_nm`` relative to the reference node, ``s(node) / s(ref)`` (1)."""
    return _interp_log(process_nm, table["node_nm"], table["logic_pj"]) / table["reference_logic_pj"]


def path_side_mm(die_areas_mm2: Array) -> np.ndarray:
    """``L = sum_i sqrt(A_i)``, mm, over the last axis of ``die_areas_mm2`` (the dies the data crosses)."""
    return np.sqrt(np.asarray(die_areas_mm2, dtype=float)).sum(axis=-1)


def onchip_terms(table: dict, process_nm: Array, mem_code: Array, arch_code: Array, side_mm: Array,
                 d2d_pj_per_bit: Array) -> dict[str, np.ndarray]:
    """The four terms of the rule and their sum, pJ per main-memory bit.

    ``process_nm``: logic node (nm); ``mem_code``: row of ``MEMORY_TECHNOLOGIES``; ``arch_code``:
    index in :data:`ARCHITECTURES`; ``side_mm``: ``L`` of :func:`path_side_mm` (mm);
    ``d2d_pj_per_bit``: energy of the die-to-die crossings on the path (pJ/bit). Returns
    ``interface``, ``wire``, ``d2d``, ``load`` and ``total``.
    """
    mem = np.asarray(mem_code, dtype=np.int64)
    arch = np.asarray(arch_code, dtype=np.int64)
    interface = table["mem_interface_pj_per_bit"][mem]
    wire = wire_pj_per_bit_mm(table, process_nm) * table["path_factor"][arch] * table["route_factor"][arch] * side_mm
    load = table["load_pj_per_bit"][arch] * logic_scale(table, process_nm)
    d2d = np.asarray(d2d_pj_per_bit, dtype=float)
    return {"interface": interface, "wire": wire, "d2d": d2d, "load": load,
            "total": interface + wire + d2d + load}


def onchip_energy_pj_per_bit(table: dict, process_nm: Array, mem_code: Array, arch_code: Array, side_mm: Array,
                             d2d_pj_per_bit: Array = 0.0) -> np.ndarray:
    """``onchip_energy_pj_per_bit`` of each design by rule R-ONCHIP-P (see the module docstring), pJ/bit."""
    return onchip_terms(table, process_nm, mem_code, arch_code, side_mm, d2d_pj_per_bit)["total"]


def default_arch_code(table: dict, platform_class_code: Array) -> np.ndarray:
    """The load-path architecture of each platform class (``class_architecture`` of the table)."""
    return table["class_arch_code"][np.asarray(platform_class_code, dtype=np.int64)]
