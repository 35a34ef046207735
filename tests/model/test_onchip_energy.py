"""On-chip energy rule R-ONCHIP-P: closed forms, scalar reference, properties, the GPU fit, the presets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dse.model import onchip_energy_reference as ref
from dse.model.onchip_energy import (
    ARCHITECTURES,
    default_arch_code,
    logic_scale,
    onchip_energy_pj_per_bit,
    onchip_terms,
    path_side_mm,
    wire_pj_per_bit_mm,
)
from dse.spec.onchip_table import default_path, load_onchip_table
from dse.spec.presets import builtin_names, load_platform, read_yaml
from dse.spec.registry import MEMORY_TECHNOLOGIES, PLATFORM_CLASSES
from dse.testing.conformance import assert_matches_reference, assert_monotone
from dse.validation.onchip_presets import RULE, preset_onchip

TABLE = load_onchip_table()
GPU, CPU, ASIC, FPGA = (ARCHITECTURES.index(a) for a in ("gpu", "cpu", "asic", "fpga"))
HBM3, DDR5 = MEMORY_TECHNOLOGIES.index("hbm3"), MEMORY_TECHNOLOGIES.index("ddr5")


def _vector(batch: dict) -> dict:
    return onchip_terms(TABLE, batch["process_nm"], batch["mem_code"], batch["arch_code"], batch["side_mm"],
                        batch["d2d_pj_per_bit"])


def _random(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"process_nm": rng.choice([3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 12.0, 16.0, 22.0, 28.0, 45.0], n),
            "mem_code": rng.integers(0, len(MEMORY_TECHNOLOGIES), n).astype(float),
            "arch_code": rng.integers(0, len(ARCHITECTURES), n).astype(float),
            "side_mm": rng.uniform(3.0, 60.0, n), "d2d_pj_per_bit": rng.choice([0.0, 0.05, 0.5, 2.0], n)}


def test_h100_by_hand():
    """interface 0.5 + 0.076 pJ/bit/mm x 0.9 x sqrt(814) mm + 10 pJ/bit x 1.3/1.8 = 9.67 pJ/bit."""
    expected = 0.5 + 0.076 * 0.9 * math.sqrt(814.0) + 10.0 * 1.3 / 1.8
    got = onchip_energy_pj_per_bit(TABLE, 4.0, HBM3, GPU, path_side_mm([814.0]))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(9.67, abs=0.01)


def test_epyc_by_hand():
    """DDR5 4.0 + 0.076 x 1.0 x (sqrt(397) + sqrt(66.3)) + one organic crossing 2.0 + 5.0 x 1.5/1.8."""
    expected = 4.0 + 0.076 * (math.sqrt(397.0) + math.sqrt(66.3)) + 2.0 + 5.0 * 1.5 / 1.8
    got = onchip_energy_pj_per_bit(TABLE, 5.0, DDR5, CPU, path_side_mm([397.0, 66.3]), 2.0)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_node_interpolation_between_rows():
    """Log-log between table rows, held outside them: 16 nm wire 0.090, 12 nm between 10 and 16 nm."""
    assert float(wire_pj_per_bit_mm(TABLE, 16.0)) == pytest.approx(0.090)
    w12 = float(wire_pj_per_bit_mm(TABLE, 12.0))
    t = math.log(12 / 10) / math.log(16 / 10)
    assert w12 == pytest.approx(math.exp((1 - t) * math.log(0.076) + t * math.log(0.090)))
    assert float(wire_pj_per_bit_mm(TABLE, 2.0)) == pytest.approx(0.076)  # held below the first row
    assert float(logic_scale(TABLE, 7.0)) == pytest.approx(1.0)


def test_vectorised_matches_scalar_reference():
    batch = _random(300)

    def scalar(row: dict) -> dict:
        areas = [row["side_mm"] ** 2]  # one die of that side
        return {"total": ref.onchip_energy_pj_per_bit(TABLE, row["process_nm"], int(row["mem_code"]),
                                                      int(row["arch_code"]), areas, row["d2d_pj_per_bit"])}

    assert_matches_reference(_vector, scalar, batch, rtol=1e-12, outputs=["total"])


def test_multi_die_path_in_reference():
    areas = [370.0, 115.0]
    vec = onchip_energy_pj_per_bit(TABLE, 5.0, HBM3, GPU, path_side_mm(areas), 0.425)
    assert float(vec) == pytest.approx(ref.onchip_energy_pj_per_bit(TABLE, 5.0, HBM3, GPU, areas, 0.425), rel=1e-12)


@pytest.mark.parametrize("field", ["side_mm", "process_nm", "d2d_pj_per_bit"])
def test_more_distance_older_node_or_more_crossings_never_cost_less(field):
    batch = _random(200, seed=1)
    batch["d2d_pj_per_bit"] = batch["d2d_pj_per_bit"] + 0.1
    assert_monotone(_vector, batch, field, 1.7, "total", direction=+1)


def test_terms_are_positive_and_sum():
    out = _vector(_random(100, seed=2))
    for name in ("interface", "wire", "load"):
        assert np.all(out[name] > 0)
    np.testing.assert_allclose(out["total"], out["interface"] + out["wire"] + out["d2d"] + out["load"])


def test_architecture_ordering_at_equal_inputs():
    """Same node, memory and die: a SIMT GPU load path costs most, a scratchpad ASIC least."""
    values = {a: float(onchip_energy_pj_per_bit(TABLE, 7.0, HBM3, i, 25.0)) for i, a in enumerate(ARCHITECTURES)}
    assert values["gpu"] > values["cpu"] > values["asic"]
    assert values["fpga"] > values["asic"]  # same logic, costlier routing


def test_default_architecture_per_class():
    codes = default_arch_code(TABLE, np.arange(len(PLATFORM_CLASSES)))
    assert [ARCHITECTURES[c] for c in codes] == ["gpu", "cpu", "fpga", "asic", "gpu"]


def test_gpu_load_path_is_the_documented_fit():
    """E_load(gpu) reproduces the H100/H200 GEMV fit of spaces/onchip_energy.yaml within 1%.

    Board power above idle per DRAM bit: H100 (494 - 119.1) W / (2.85e12 B/s x 8) = 16.45 pJ/bit,
    H200 13.43 (benchmarks/onchip_energy_probe.py); minus DRAM (5.0 / 4.5), SRAM 0.44, FLOPs 0.106,
    the rule's interface and wires; at 7 nm."""
    h100 = (494.0 - 119.1) / (2.85e12 * 8) * 1e12
    assert h100 == pytest.approx(16.45, abs=0.01)
    onchip = np.mean([h100 - 5.0 - 0.44 - 0.106, 13.43 - 4.5 - 0.44 - 0.106])
    load_4nm = onchip - 0.5 - 0.076 * 0.9 * math.sqrt(814.0)
    assert TABLE["load_pj_per_bit"][GPU] == pytest.approx(load_4nm * 1.8 / 1.3, rel=0.01)


def test_a100_check_against_antepara():
    """Independent check: a DRAM-sourced bit on the A100 costs 13.11 + 4.71 + 1.59 = 19.41 pJ/bit (Antepara
    et al., SC'25); the rule + HBM2e 6.0 + SRAM 2 x 0.3 is within 5%."""
    rule = float(onchip_energy_pj_per_bit(TABLE, 7.0, MEMORY_TECHNOLOGIES.index("hbm2e"), GPU, math.sqrt(826.0)))
    assert rule + 6.0 + 0.6 == pytest.approx(19.41, rel=0.05)


def test_every_number_has_a_source():
    raw = read_yaml(default_path())
    src = raw["sources"]
    for mem in MEMORY_TECHNOLOGIES:
        assert src["memory_interface_pj_per_bit"][mem].strip()
    for arch in ARCHITECTURES:
        for col in ("path_factor", "route_factor", "load_pj_per_bit"):
            assert src["architectures"][arch][col].strip()
    for name in raw["presets"]:
        assert src["presets"][name].strip()


def test_presets_carry_the_rule():
    """Every preset in the table stores round(rule, 1) and says where it comes from."""
    for name in TABLE["presets"]:
        r = preset_onchip(name, TABLE)
        plat = load_platform(name)
        assert plat.fields["onchip_energy_pj_per_bit"] == pytest.approx(round(r["total"], 1), abs=1e-9), name
        assert plat.sources["onchip_energy_pj_per_bit"].startswith(f"model: {RULE}"), name


def test_no_device_preset_is_left_out():
    """Every device preset (no ``base:``) has an on-chip value from the rule, except the calibrated H100 fit."""
    for name in builtin_names("platforms"):
        plat = load_platform(name)
        if plat.base or name == "h100-sxm-calibrated":
            continue
        assert name in TABLE["presets"], f"{name}: add it to spaces/onchip_energy.yaml presets"
        assert plat.fields["onchip_energy_pj_per_bit"] > 0
