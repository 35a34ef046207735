"""Scalar references of the area, cost and provisioned-static-power models, one design at a time.

Plain Python, written to be read line by line against the equations in the docstrings of
:mod:`dse.model.area`, :mod:`dse.model.cost` and :mod:`dse.model.static_power`; the tests
compare them with the vectorised functions on random batches. ``hw`` holds floats (codes as ints).
"""

from __future__ import annotations

import math

BITS = (32, 16, 8, 4)


def node_value(tech: dict, column: str, process_nm: float) -> float:
    """``column`` at ``process_nm``: linear in log(value) vs log(node) between rows, held at the ends."""
    nodes = [float(n) for n in tech["node_nm"]]
    values = [float(v) for v in tech[column]]
    if process_nm <= nodes[0]:
        return values[0]
    if process_nm >= nodes[-1]:
        return values[-1]
    for i in range(len(nodes) - 1):
        lo, hi = nodes[i], nodes[i + 1]
        if lo <= process_nm <= hi:
            t = (math.log(process_nm) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return math.exp(math.log(values[i]) + t * (math.log(values[i + 1]) - math.log(values[i])))
    raise AssertionError("unreachable")


def area_ref(hw: dict, tech: dict) -> dict[str, float]:
    """Area terms, dies and constraints of one design (see :func:`dse.model.area.area_breakdown`)."""
    node = hw["process_nm"]
    ref = tech["reference_node_nm"]
    density = node_value(tech, "logic_mtr_per_mm2", node)
    logic_scale = node_value(tech, "logic_mtr_per_mm2", ref) / density
    sram_mm2_per_mb = (tech["sram_mm2_per_mb_ref"] * node_value(tech, "sram_bitcell_um2", node)
                       / node_value(tech, "sram_bitcell_um2", ref))
    cls = int(hw["platform_class_code"])
    weighted = []
    for i, bits in enumerate(BITS):
        weight = float(tech["class_area_weight"][cls][i])
        weighted.append(weight * hw[f"flop{bits}_peak_flop_per_s"] / 1e12)
    p_max = max(weighted)
    p_eff = p_max + tech["multi_mode_frac"] * (sum(weighted) - p_max)
    compute = float(tech["class_compute_mm2_per_tflop"][cls]) * logic_scale * p_eff
    sram = sram_mm2_per_mb * hw["sram_bytes"] / 1e6
    m = int(hw["mem_technology_code"])
    n_units = hw["n_mem_units"]
    mem_if = n_units * (float(tech["phy_mm2"][m]) + float(tech["ctrl_mtr"][m]) / density)
    mono = (compute + sram + mem_if) / (1.0 - tech["uncore_frac"])
    edge = float(tech["hbm"][m]) * n_units * float(tech["edge_mm_per_unit"][m])
    if hw.get("n_dies", 0) > 0:
        n_dies = float(hw["n_dies"])
    else:
        n_dies = max(math.ceil(mono / tech["reticle_mm2"]), math.ceil(edge / (2.0 * tech["reticle_long_edge_mm"])), 1)
        n_dies = float(min(n_dies, max(hw.get("n_dies_max", tech["n_dies_max"]), 1.0)))
    aspect = tech["reticle_long_edge_mm"] / tech["reticle_short_edge_mm"]
    long_edge = edge / (2.0 * n_dies)
    per_die = mono / n_dies
    if n_dies > 1:
        per_die *= 1.0 + tech["d2d_area_frac"]
    per_die = max(per_die, long_edge * long_edge / aspect)
    return {"compute_mm2": compute, "sram_mm2": sram, "mem_if_mm2": mem_if, "mono_mm2": mono, "n_dies": n_dies,
            "area_per_die_mm2": per_die, "die_area_mm2": n_dies * per_die,
            "c_reticle": per_die - tech["reticle_mm2"], "c_shoreline": long_edge - tech["reticle_long_edge_mm"]}


def dies_per_wafer_ref(area_mm2: float, tech: dict) -> float:
    d = tech["wafer_diameter_mm"] - 2.0 * tech["edge_loss_mm"]
    padded = (math.sqrt(area_mm2) + tech["scribe_mm"]) ** 2
    return max(math.pi * (d / 2.0) ** 2 / padded - math.pi * d / math.sqrt(2.0 * padded), 1.0)


def yield_ref(area_mm2: float, d0_per_mm2: float, alpha: float) -> float:
    return (1.0 + area_mm2 * d0_per_mm2 / alpha) ** (-alpha)


def device_cost_ref(hw: dict, tech: dict) -> float:
    """Manufacturing cost of one device, USD (see :func:`dse.model.cost.device_cost_usd`)."""
    area = area_ref(hw, tech)
    node = hw["process_nm"]
    wafer = node_value(tech, "wafer_usd", node)
    d0 = node_value(tech, "defect_density_per_cm2", node) / 100.0
    per_die = area["area_per_die_mm2"]
    good_per_wafer = dies_per_wafer_ref(per_die, tech) * yield_ref(per_die, d0, tech["yield_cluster_alpha"])
    dies = area["n_dies"] * wafer / good_per_wafer
    m = int(hw["mem_technology_code"])
    memory = hw["mem_capacity_bytes"] / 1e9 * float(tech["usd_per_gb"][m])
    n_hbm = float(tech["hbm"][m]) * hw["n_mem_units"]
    if n_hbm > 0 or area["n_dies"] > 1:
        stacks_mm2 = n_hbm * float(tech["footprint_mm2"][m])
        interposer_mm2 = tech["interposer_area_factor"] * (area["die_area_mm2"] + stacks_mm2)
        package = tech["interposer_usd_base"] + tech["interposer_usd_per_mm2"] * interposer_mm2
    else:
        package = (tech["organic_area_factor"] * tech["organic_usd_per_mm2"] + tech["bump_usd_per_mm2"]) \
            * area["die_area_mm2"]
    bond = tech["bonding_yield_per_component"] ** (area["n_dies"] + n_hbm)
    return (dies + memory + package) / bond * (1.0 + tech["assembly_test_frac"]) * (1.0 + tech["markup_frac"])


def static_power_ref(hw: dict, tech: dict) -> float:
    """Provisioned static power of one design, W."""
    m = int(hw["mem_technology_code"])
    idle_w_per_mm2 = node_value(tech, "idle_w_per_mm2", hw["process_nm"])
    return (idle_w_per_mm2 * area_ref(hw, tech)["die_area_mm2"]
            + float(tech["background_w_per_unit"][m]) * hw["n_mem_units"])


def tco_ref(system_cost_usd: float, avg_power_w: float, lifetime_years: float, usd_per_kwh: float, pue: float,
            hours_per_year: float = 8766.0) -> float:
    """USD per hour: linear depreciation plus facility energy."""
    capex_per_hour = system_cost_usd / (lifetime_years * hours_per_year)
    energy_per_hour = avg_power_w / 1000.0 * pue * usd_per_kwh
    return capex_per_hour + energy_per_hour


def usd_per_mtoken_ref(tco_usd_per_hour: float, decode_tokens_per_s: float) -> float:
    if decode_tokens_per_s <= 0:
        return math.inf
    return tco_usd_per_hour / (decode_tokens_per_s * 3600.0) * 1e6
