"""Energy per FLOP by native width (dse.model.power.j_per_flop) and its fit to the shipped H200 probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dse.model import power
from dse.spec.registry import HARDWARE_BY_NAME
from dse.spec.units import PJ

PROBE = Path(__file__).resolve().parents[2] / "validation" / "gemm_precision_h200.csv"


@pytest.mark.parametrize("fixed", [0.0, 0.14, 0.5, 1.0])
def test_affine_in_width_through_the_16_bit_figure(fixed):
    hw = {"flop16_energy_pj_per_flop": 0.85, "flop_energy_fixed_frac": fixed}
    e = power.j_per_flop(hw, np.array([4.0, 8.0, 16.0, 32.0])) / (0.85 * PJ)
    assert e[2] == pytest.approx(1.0, rel=1e-15)
    assert e[1] == pytest.approx(fixed + (1.0 - fixed) / 2.0, rel=1e-12)
    assert np.all(np.diff(e) >= 0.0)  # never cheaper at a wider width
    assert e[0] >= 0.25 - 1e-12  # a fixed share never makes a narrow FLOP cheaper than the linear rule


def test_default_fixed_share_is_the_probe_fit():
    """The registry default is 2 x (median FP8 / BF16 energy per FLOP over the probe's shapes) - 1."""
    df = pd.read_csv(PROBE)
    pj = df.pivot_table(index=["case", "m"], columns="dtype", values="pj_per_flop")
    assert len(pj) >= 19 and pj.notna().all().all()
    fitted = 2.0 * float((pj["fp8"] / pj["bf16"]).median()) - 1.0
    assert HARDWARE_BY_NAME["flop_energy_fixed_frac"].default == pytest.approx(fitted, abs=0.005)
    # the 16-bit figure the H100/H200 presets carry (0.85 pJ/FLOP) is what the same probe reads at BF16
    assert float(pj["bf16"].median()) == pytest.approx(0.85, rel=0.03)


def test_integer_weight_gemms_pay_the_measured_ratio():
    """SmoothQuant W8A8 runs INT8 GEMMs: on the H200 preset (int_op_energy_ratio 1.17, from
    validation/gemm_triton_h200.csv) its power-capped prefill is slower than FP8's; where the ratio
    is 1 (MI300X preset, FP8 and INT8 on the same units) and with 16-bit activations (weight-only)
    the method changes nothing (the A100 has no FP8 units: tests/model/test_fp8_native.py)."""
    import dse

    design = {"w_bits": 8, "a_bits": 8, "kv_bits": 8, "batch": 64, "in_len": 2048, "out_len": 64}

    def ttft(platform, method, **extra):
        out = dse.evaluate({**design, **extra, "quant_method": method}, model="llama-3-70b", platform=platform)
        return float(out["ttft_s"].iloc[0])

    df = pd.read_csv(PROBE.with_name("gemm_triton_h200.csv"))  # best INT8 kernel over best FP8 kernel, per shape
    pj = df.pivot_table(index=["case", "m"], columns="dtype", values="pj_per_flop")
    ratio = float((pj[["int8", "int8-triton"]].min(axis=1) / pj[["fp8", "fp8-triton"]].min(axis=1)).median())
    assert load_ratio("h200-sxm") == pytest.approx(ratio, abs=0.01)
    capped = ttft("h200-sxm", "smoothquant") / ttft("h200-sxm", "fp8")
    assert 1.1 < capped <= ratio + 1e-9  # compute-bound and at the cap: time follows the GEMM energy
    assert ttft("mi300x", "smoothquant") == ttft("mi300x", "fp8")
    assert ttft("h200-sxm", "smoothquant", a_bits=16) == ttft("h200-sxm", "awq", a_bits=16)


def load_ratio(platform):
    from dse.spec.presets import load_platform

    return load_platform(platform).fields["int_op_energy_ratio"]
