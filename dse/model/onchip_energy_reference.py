"""Scalar reference of :mod:`dse.model.onchip_energy`: one design at a time, plain Python, line by line.

Tests compare it with the vectorised rule on random batches. ``table`` is the dict of
:func:`dse.spec.onchip_table.load_onchip_table`.
"""

from __future__ import annotations

import math


def interp_log(x: float, xs: list[float], ys: list[float]) -> float:
    """Log-log interpolation of ``ys`` over ascending ``xs`` at ``x``, held at the ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            t = (math.log(x) - math.log(xs[i - 1])) / (math.log(xs[i]) - math.log(xs[i - 1]))
            return math.exp(math.log(ys[i - 1]) + t * (math.log(ys[i]) - math.log(ys[i - 1])))
    return ys[-1]


def onchip_energy_pj_per_bit(table: dict, process_nm: float, mem_code: int, arch_code: int,
                             die_areas_mm2: list[float], d2d_pj_per_bit: float) -> float:
    """pJ per main-memory bit of one design (R-ONCHIP-P)."""
    nodes = [float(n) for n in table["node_nm"]]
    # 1. host PHY + memory controller of the memory technology
    interface = float(table["mem_interface_pj_per_bit"][mem_code])
    # 2. wires: energy per bit-mm at this node x route length over the dies crossed
    e_wire = interp_log(process_nm, nodes, [float(v) for v in table["wire_pj_per_bit_mm"]])
    side = sum(math.sqrt(a) for a in die_areas_mm2)
    route = float(table["path_factor"][arch_code]) * float(table["route_factor"][arch_code]) * side
    wire = e_wire * route
    # 3. the logic of the load path, scaled from the reference node like logic energy
    s_node = interp_log(process_nm, nodes, [float(v) for v in table["logic_pj"]])
    load = float(table["load_pj_per_bit"][arch_code]) * s_node / float(table["reference_logic_pj"])
    # 4. die-to-die crossings
    return interface + wire + d2d_pj_per_bit + load
