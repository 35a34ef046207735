"""A space's memory technology reaches the cost stages: the registry code follows the knob."""

from __future__ import annotations

import numpy as np

from dse.loading import load_space, space_evaluator
from dse.spec.registry import MEMORY_TECHNOLOGIES

SPACE = {
    "platform": "h100-sxm",
    "model": "llama-2-7b",
    "knobs": {"mem_technology": {"choices": ["gddr6", "hbm3e", "lpddr5x"]}, "n_mem_units": {"choices": [4]}},
}


def test_memory_technology_sets_its_registry_code_and_changes_cost_area_and_static_power():
    space = load_space(SPACE)
    cols = space.columns_at(np.arange(space.size))
    expected = [MEMORY_TECHNOLOGIES.index(name) for name in ("gddr6", "hbm3e", "lpddr5x")]
    assert cols["mem_technology_code"].tolist() == expected
    met = space_evaluator(space)(cols)
    # 4 GDDR6 chips (x32 PHYs, 8 GB) vs 4 HBM3e stacks (1024-bit PHYs, 96 GB, interposer) vs 4 LPDDR5X
    # x64 interfaces: every silicon and cost figure differs (before the fix all three were priced as
    # the preset's HBM3)
    for name in ("die_area_mm2", "system_cost_usd", "provisioned_static_power_w"):
        assert len(set(np.round(met[name], 6))) == 3, name
    assert met["system_cost_usd"][1] > met["system_cost_usd"][0]  # HBM3e stacks cost more than GDDR6 chips
