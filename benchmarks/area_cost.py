"""Throughput of the area / cost / provisioned-power stage: ns per design on a 1e6-design batch.

    python benchmarks/area_cost.py [n_designs]

Prints the best of 5 runs for each function (a mixed batch: every class, memory technology
and node from 3 to 28 nm, automatic die split).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from dse.model.area import area_breakdown, resolve_params
from dse.model.cost import cost_metrics, device_cost_usd
from dse.model.static_power import static_power_w
from dse.spec.technology import load_technology


def batch(n: int, tech: dict) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "flop32_peak_flop_per_s": rng.uniform(1e12, 800e12, n), "flop16_peak_flop_per_s": rng.uniform(1e12, 2e15, n),
        "flop8_peak_flop_per_s": rng.uniform(0, 4e15, n), "flop4_peak_flop_per_s": np.zeros(n),
        "sram_bytes": rng.uniform(0, 500e6, n), "n_mem_units": rng.integers(0, 13, n).astype(float),
        "process_nm": rng.uniform(3, 28, n), "platform_class_code": rng.integers(0, 5, n),
        "mem_technology_code": rng.integers(0, len(tech["mem_names"]), n),
        "mem_capacity_bytes": rng.uniform(1e9, 3e11, n),
    }


def best_ns(fn, n: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / n * 1e9


def everything(hw: dict, tech: dict, power: np.ndarray, tokens: np.ndarray) -> dict:
    """Area, constraints, static power and the cost metrics with one parameter lookup (the wiring to use)."""
    params = resolve_params(hw, tech)
    area = area_breakdown(hw, tech, params)
    static = static_power_w(hw, tech, area["die_area_mm2"], params)
    return {**area, "static_power_w": static, **cost_metrics(hw, tech, {}, 8.0, power, tokens, area, params)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    tech = load_technology()
    hw = batch(n, tech)
    params = resolve_params(hw, tech)
    area = area_breakdown(hw, tech, params)
    power, tokens = np.full(n, 700.0), np.full(n, 3000.0)
    rows = {
        "resolve_params (node/memory lookup)": lambda: resolve_params(hw, tech),
        "area_breakdown (params given)": lambda: area_breakdown(hw, tech, params),
        "device_cost_usd (area, params given)": lambda: device_cost_usd(hw, tech, area, params),
        "static_power_w (area, params given)": lambda: static_power_w(hw, tech, area["die_area_mm2"], params),
        "cost_metrics (area, params given)": lambda: cost_metrics(hw, tech, {}, 8.0, power, tokens, area, params),
        "all of the above, one lookup": lambda: everything(hw, tech, power, tokens),
        "  same, one platform (scalars)": lambda: everything({**hw, "process_nm": 4.0, "platform_class_code": 0,
                                                              "mem_technology_code": 8}, tech, power, tokens),
    }
    print(f"{n:,} designs, best of 5")
    for name, fn in rows.items():
        print(f"  {name:38s} {best_ns(fn, n):7.1f} ns/design")


if __name__ == "__main__":
    main()
