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


def test_spec_hash_follows_the_named_space_file_and_its_presets(tmp_path):
    """A study that only names its space file: editing that file (or pointing the space at
    another preset) changes the hash, so a resumed run cannot mix two spaces."""
    from dse.loading import load_study

    def hash_with(space_text: str) -> str:
        (tmp_path / "s.yaml").write_text(space_text)
        (tmp_path / "study.yaml").write_text("name: t\nspace: s.yaml\nmodel: llama-2-7b\n")
        return load_study(tmp_path / "study.yaml").spec_hash

    base = "platform: h100-sxm\nknobs:\n  batch: {choices: [1, 8]}\n"
    first = hash_with(base)
    assert hash_with(base) == first  # deterministic
    assert hash_with(base.replace("[1, 8]", "[1, 16]")) != first
    assert hash_with(base.replace("h100-sxm", "a100-sxm-80gb")) != first


def test_fixed_named_categoricals_are_written_by_name():
    """A study's fixed workload (or any fixed named categorical) reaches the result tables as its
    name, like a knob's choices do, not as the registry code."""
    from dse.loading import load_study

    st = load_study("datacenter-serving")
    params = st.space.params_at(np.arange(3))
    decoded = st.space.decode({**params, **st.space.columns(params)})
    assert decoded["workload"] == "splitwise-conv"
    assert set(decoded["quant_method"]) <= {"gptq", "awq", "smoothquant"}
