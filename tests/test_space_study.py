"""Spaces: loading, derived fields, conditions, enumeration (searches: tests/search/)."""

from __future__ import annotations

import numpy as np
import pytest

from dse.loading import load_space
from tests.conftest import SMALL_SPACE

SPACE = SMALL_SPACE


def test_space_size_units_derived_and_mixed_radix():
    space = load_space(SPACE)
    assert space.size == 3 * 4 * 3 * 2 * 2 * 4
    knob = {k.name: k for k in space.knobs}["flop16_peak_flop_per_s"]
    assert knob.values().tolist() == [100e12, 400e12, 700e12, 1000e12]  # TFLOP/s converted to SI
    cols = space.columns_at(np.arange(space.size))
    assert np.allclose(cols["flop8_peak_flop_per_s"], 2 * cols["flop16_peak_flop_per_s"])
    # the last knob varies fastest
    assert cols["flop16_peak_flop_per_s"][:4].tolist() == knob.values().tolist()


def test_memory_technology_table_and_conditional_knob():
    space = load_space(SPACE)
    params = {"mem_technology": np.array([0.0, 1.0, 2.0]), "n_mem_units": np.array([4.0, 4.0, 4.0]),
              "batch": np.ones(3), "w_bits": np.full(3, 16.0), "pim_offload": np.full(3, 2.0),
              "flop16_peak_flop_per_s": np.full(3, 1e14)}
    cols = space.columns(params)
    table = space.technologies
    assert cols["mem_bw_bytes_per_s"][0] == pytest.approx(4 * table["hbm3"]["bw_per_unit_bytes_per_s"])
    assert cols["mem_bw_bytes_per_s"][1] == pytest.approx(4 * table["gddr6x"]["bw_per_unit_bytes_per_s"])
    assert cols["mem_energy_pj_per_bit"][2] == table["hbm2-pim"]["energy_pj_per_bit"]
    assert cols["pim_offload"].tolist() == [0.0, 0.0, 2.0]  # only the PIM-capable memory keeps the knob
    assert cols["pim_peak_flop_per_s"][2] > 0 and cols["pim_peak_flop_per_s"][0] == 0
