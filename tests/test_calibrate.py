"""Calibration: recovers known parameters from synthetic measurements, writes a loadable preset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dse
from dse.spec.errors import SpecError
from dse.validation.calibration import calibrate, compare

TOY_PRESET = """\
name: toy-gpu
description: "synthetic H100-like GPU for tests"
platform_class: gpu
flop32_peak_tflop_per_s: 495
flop16_peak_tflop_per_s: 989
flop8_peak_tflop_per_s: 1979
flop16_energy_pj_per_flop: 0.6
mem_bw_tb_per_s: 3.35
mem_capacity_gb: 80
mem_energy_pj_per_bit: 4.0
sram_bytes: 50000000
sram_energy_pj_per_bit: 0.3
static_power_w: 100
tdp_w: 700
compute_eff_frac: 0.6
mem_bw_eff_frac: 0.8
kernel_overhead_us: 3
sources:
"""
TRUTH = {"compute_eff_frac": 0.45, "mem_bw_eff_frac": 0.65, "kernel_overhead_s": 5e-6, "static_power_w": 130.0,
         "mem_energy_pj_per_bit": 5.5, "flop16_energy_pj_per_flop": 0.9}
# 12 cases in the spirit of the H100 acceptance test: the first 4 are fitted, the other 8 predicted
CASES = pd.DataFrame([
    ("llama-3.2-1b", 1, 128, 128), ("llama-2-7b", 1, 512, 256), ("llama-2-7b", 64, 1024, 128),
    ("llama-3-8b", 16, 2048, 128), ("llama-2-7b", 8, 128, 128), ("llama-2-7b", 32, 512, 128),
    ("llama-3-8b", 1, 128, 512), ("llama-3-8b", 4, 1024, 256), ("llama-3.2-1b", 64, 512, 128),
    ("mistral-7b", 2, 256, 128), ("llama-2-13b", 1, 128, 128), ("llama-2-13b", 16, 512, 128),
], columns=["model", "batch", "in_len", "out_len"])
MEASURED = ("ttft_s", "tpot_s", "decode_tokens_per_s", "decode_power_w", "decode_tokens_per_j")


def write_toy_preset(folder) -> str:
    """A synthetic preset YAML (with a source for every key) in ``folder``; returns its path."""
    keys = [line.split(":")[0] for line in TOY_PRESET.splitlines()[3:-1]]
    text = TOY_PRESET + "".join(f'  {k}: "synthetic test value"\n' for k in keys)
    path = folder / "toy-gpu.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture()
def toy(tmp_path):
    return dse.load_platform(write_toy_preset(tmp_path))


def synthetic(platform, noise_frac: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Measurement rows of CASES produced by ``platform``, with multiplicative noise."""
    pred = dse.evaluate(CASES, platform=platform)
    rng = np.random.default_rng(seed)
    rows = CASES.assign(platform="h100-sxm", w_bits=16.0, a_bits=16.0, kv_bits=16.0, source="synthetic")
    for metric in MEASURED:
        rows[metric] = pred[metric] * (1.0 + noise_frac * rng.standard_normal(len(rows)))
    return rows


def test_calibrates_on_four_cases_and_predicts_the_other_eight(toy):
    measurements = synthetic(toy.with_fields(**TRUTH))
    result = calibrate(toy, measurements.iloc[:4], label="synthetic.csv")
    held = compare(result.platform, measurements.iloc[4:])
    mape = held.assign(abs_err=held["error_pct"].abs()).groupby("metric")["abs_err"].mean()
    assert mape["decode_tokens_per_s"] < 10.0  # the H100 acceptance thresholds
    assert mape["decode_tokens_per_j"] < 15.0
    assert mape.max() < 5.0  # with 1 % noise the fit is far tighter than the thresholds
    fitted = result.params["value"]
    assert fitted["mem_bw_eff_frac"] == pytest.approx(TRUTH["mem_bw_eff_frac"], rel=0.05)
    assert fitted["compute_eff_frac"] == pytest.approx(TRUTH["compute_eff_frac"], rel=0.05)
    assert result.params["fitted"].all()
    assert result.rms_error_pct < 3.0


def test_exact_data_recovers_every_parameter(toy):
    truth = toy.with_fields(**TRUTH)
    result = calibrate(toy, synthetic(truth, noise_frac=0.0))
    for name, value in TRUTH.items():
        assert result.params.loc[name, "value"] == pytest.approx(value, rel=0.03), name
    assert result.residuals["error_pct"].abs().max() < 0.5


def test_written_yaml_loads_and_evaluates(toy, tmp_path):
    result = calibrate(toy, synthetic(toy.with_fields(**TRUTH)).iloc[:4], name="toy-cal", label="synthetic.csv")
    path = result.to_yaml(tmp_path / "cal.yaml")
    loaded = dse.load_platform(path)
    assert loaded.name == "toy-cal"
    for name in TRUTH:
        assert loaded.fields[name] == pytest.approx(result.platform.fields[name], rel=1e-5)
    assert loaded.fields["mem_bw_bytes_per_s"] == toy.fields["mem_bw_bytes_per_s"]
    assert "fitted by dse calibrate to 4 rows of synthetic.csv" in loaded.sources["kernel_overhead_us"]
    assert loaded.sources["mem_bw_tb_per_s"] == "synthetic test value"
    out = dse.evaluate({"batch": [1, 8]}, model="llama-2-7b", platform=path)
    assert (out["decode_tokens_per_s"] > 0).all()


def test_unidentifiable_parameters_are_kept_with_a_warning(toy):
    rows = synthetic(toy.with_fields(**TRUTH))
    speed_only = rows[rows["batch"] == 1].drop(columns=["ttft_s", "decode_power_w", "decode_tokens_per_j"])
    result = calibrate(toy, speed_only)
    params = result.params
    for name in ("static_power_w", "mem_energy_pj_per_bit", "flop16_energy_pj_per_flop", "compute_eff_frac"):
        assert not params.loc[name, "fitted"], name
        assert params.loc[name, "value"] == toy.fields[name]
        assert any(w.startswith(name) for w in result.warnings), name
    assert params.loc["mem_bw_eff_frac", "fitted"]


@pytest.mark.parametrize("platform, rows, fit, rule", [
    ("no-such-gpu", None, None, "unknown name"),
    (None, lambda r: r.drop(columns="model"), None, "required column missing"),
    (None, lambda r: r[["model", "batch", "in_len", "out_len"]], None, "no measured metric"),
    (None, None, ["mem_bw_eff"], "not a fittable field"),
    (None, lambda r: r.assign(in_len=np.nan), None, "design value missing"),
])
def test_bad_input_raises_spec_error(toy, platform, rows, fit, rule):
    data = synthetic(toy).iloc[:3]
    kwargs = {"fit": fit} if fit else {}
    with pytest.raises(SpecError, match=rule):
        calibrate(platform or toy, rows(data) if rows else data, **kwargs)
