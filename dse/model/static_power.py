"""Provisioned static power: what the silicon and memory a design provisions draw while it works.

``static_power_w = idle_w_per_mm2 * die_area_mm2 + background_w_per_unit * n_mem_units``

The first term is the active-idle power of the logic die(s) (leakage plus the clock tree and
always-on logic at the working clocks), per mm2 of the design's node; the second the background power of each memory
unit (HBM stack, GDDR x32, LPDDR x64, DDR channel: refresh, standby, an interface kept up). So a
design pays standby energy for compute it does not use and for every stack it adds. Constants
and their sources: ``spaces/technology.yaml`` (``idle_w_per_mm2`` per node fitted to the H100's
and A100's measured idle; memory background per unit from vendor/course figures, low confidence).
It describes datacenter parts idling at working clocks; power-gated edge SoCs and FPGAs draw less.
"""

from __future__ import annotations

import numpy as np

from dse.model.area import resolve_params

Array = np.ndarray | float


def provisioned_static_power_w(die_area_mm2: Array, n_mem_units: Array, background_w_per_unit: Array,
                               idle_w_per_mm2: Array) -> Array:
    """Static power of the provisioned logic silicon and memory units, W."""
    return idle_w_per_mm2 * die_area_mm2 + background_w_per_unit * n_mem_units


def static_power_w(hw: dict, tech: dict, die_area: Array, params: tuple[dict, dict] | None = None) -> Array:
    """Provisioned static power of each design, W (``hw``: ``process_nm``, ``n_mem_units``,
    ``mem_technology_code``; ``params``: :func:`dse.model.area.resolve_params`'s result when
    already looked up)."""
    node, mem = resolve_params(hw, tech) if params is None else params
    return provisioned_static_power_w(die_area, hw["n_mem_units"], mem["background_w_per_unit"],
                                      node["idle_w_per_mm2"])


def static_or_measured_w(measured_w: Array, provisioned_w: Array, has_measured: Array) -> Array:
    """The measured idle power where the preset has one (``has_measured`` true), else the provisioned model, W."""
    return np.where(np.asarray(has_measured, dtype=bool), measured_w, provisioned_w)
