"""Provisioned silicon of each design: memory units, die area and the static power they draw.

Pure numpy; ``tech`` is the table the evaluator loads once (:func:`dse.spec.technology.load_technology`
plus the per-unit bandwidth and capacity of ``spaces/memory_technologies.yaml`` as
``unit_bw_bytes_per_s`` / ``unit_capacity_bytes`` arrays in memory-code order).

* Memory units: a design provisions at least the units its bandwidth and capacity need,
  ``max(n_mem_units, default_n_mem_units(bw, capacity))`` (:func:`dse.model.area.default_n_mem_units`),
  so raising ``mem_bw_bytes_per_s`` in a space adds stacks (area, cost, background power).
* Area: :func:`dse.model.area.area_breakdown`; static power:
  :func:`dse.model.static_power.static_power_w` (leakage/idle per mm2 by node + background per unit).
* A preset's own ``static_power_w`` (measured idle where it has one) is kept as the anchor: a
  design's static power is ``static_power_w * provisioned(design) / provisioned(preset)``
  (:func:`anchored_static_w`): the preset's value for the preset itself, growing (or shrinking)
  in proportion to what a design provisions relative to it, never negative.
* The on-chip path energy is anchored the same way: the preset's ``onchip_energy_pj_per_bit``
  times rule(design) / rule(preset) (:func:`onchip_rule_pj_per_bit`), so a space that changes
  the memory technology, node or die size re-prices the path; a preset is charged its own value.
"""

from __future__ import annotations

import numpy as np

from dse.model.area import area_breakdown, default_n_mem_units, resolve_params
from dse.model.onchip_energy import default_arch_code, onchip_energy_pj_per_bit
from dse.model.static_power import static_power_w

Array = np.ndarray | float


def provision(hw: dict, tech: dict) -> dict:
    """``hw`` (with the provisioned ``n_mem_units``), ``params`` (node and memory lookups),
    ``area`` (:func:`dse.model.area.area_breakdown`) and ``provisioned_static_w`` (W)."""
    node, mem = resolve_params(hw, tech)
    code = np.asarray(hw["mem_technology_code"], dtype=np.int64)
    needed = default_n_mem_units(hw["mem_bw_bytes_per_s"], hw["mem_capacity_bytes"],
                                 tech["unit_bw_bytes_per_s"][code], tech["unit_capacity_bytes"][code])
    hw = {**hw, "n_mem_units": np.maximum(hw["n_mem_units"], needed)}
    area = area_breakdown(hw, tech, (node, mem))
    return {"hw": hw, "params": (node, mem), "area": area,
            "provisioned_static_w": static_power_w(hw, tech, area["die_area_mm2"], (node, mem))}


def onchip_rule_pj_per_bit(hw: dict, onchip_table: dict, area: dict) -> Array:
    """The on-chip path energy rule (:func:`dse.model.onchip_energy.onchip_energy_pj_per_bit`) at a
    design's node, memory technology, class and modelled die side (one die's path), pJ/bit."""
    arch = default_arch_code(onchip_table, hw["platform_class_code"])
    return onchip_energy_pj_per_bit(onchip_table, hw["process_nm"], hw["mem_technology_code"], arch,
                                    area["die_side_mm"])


def anchored_static_w(preset_static_w: Array, provisioned_w: Array, preset_provisioned_w: Array) -> Array:
    """Static power of a design anchored on its preset's value, W (see the module docstring)."""
    return preset_static_w * (provisioned_w / preset_provisioned_w)
