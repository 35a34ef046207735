"""Validation: errors on hand-made rows, skipped rows with reasons, survey/TDP handling, outputs, shipped data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import dse
from dse.spec.errors import SpecError
from dse.validation.measure import COLUMNS as MEASURE_COLUMNS
from dse.validation.validate import (
    MEASURED_METRICS,
    SETS,
    load_set,
    measurement_rows,
    validate,
    validation_dir,
)
from tests.test_calibrate import write_toy_preset

DESIGN = {"model": "llama-2-7b", "in_len": 128, "out_len": 64, "w_bits": 16, "a_bits": 16, "kv_bits": 16}


@pytest.fixture()
def toy_path(tmp_path):
    return write_toy_preset(tmp_path)


def predicted(toy_path: str, **design) -> pd.Series:
    return dse.evaluate({**DESIGN, **design}, platform=toy_path).iloc[0]


def test_errors_are_computed_against_the_model(toy_path):
    p1, p8, p32 = (predicted(toy_path, batch=b) for b in (1, 8, 32))
    rows = pd.DataFrame([
        {**DESIGN, "platform": toy_path, "batch": 1, "decode_tokens_per_s": p1["decode_tokens_per_s"] * 1.25,
         "ttft_s": p1["ttft_s"] * 0.8},
        {**DESIGN, "platform": toy_path, "batch": 8, "decode_tokens_per_s": p8["decode_tokens_per_s"] / 1.25},
        {**DESIGN, "platform": toy_path, "batch": 32, "decode_tokens_per_s": p32["decode_tokens_per_s"]},
    ])
    report = validate(rows)
    comp = report.comparisons.set_index(["row", "metric"])
    assert comp.loc[(0, "decode_tokens_per_s"), "error_pct"] == pytest.approx(-20.0)
    assert comp.loc[(0, "ttft_s"), "error_pct"] == pytest.approx(25.0)
    assert comp.loc[(1, "decode_tokens_per_s"), "error_pct"] == pytest.approx(25.0)
    assert comp.loc[(2, "decode_tokens_per_s"), "error_pct"] == pytest.approx(0.0, abs=1e-9)
    assert comp.loc[(1, "decode_tokens_per_s"), "log_ratio"] == pytest.approx(math.log(1.25))
    summary = report.summary.set_index(["metric", "platform_class"])
    dec = summary.loc[("decode_tokens_per_s", "all")]
    assert dec["n"] == 3
    assert dec["mape_pct"] == pytest.approx((20.0 + 25.0 + 0.0) / 3)
    assert dec["median_abs_log_error"] == pytest.approx(math.log(1.25))
    assert dec["gmean_ratio"] == pytest.approx(1.0)
    assert dec["spearman_rho"] == pytest.approx(1.0)
    assert summary.loc[("decode_tokens_per_s", "gpu"), "n"] == 3
    assert math.isnan(summary.loc[("ttft_s", "all"), "spearman_rho"])  # one point: no rank correlation
    assert report.skipped.empty


def test_skipped_rows_are_listed_with_their_reason(toy_path):
    good = {**DESIGN, "platform": toy_path, "batch": 1, "decode_tokens_per_s": 100.0}
    rows = pd.DataFrame([
        good,
        {**good, "platform": "h100-pcie"},
        {**good, "platform": "", "device": "NVIDIA V100"},
        {**good, "model": "gpt-j-6b"},
        {**good, "out_len": np.nan},
        {**good, "batch": 0},
        {**good, "decode_tokens_per_s": np.nan},
    ])
    report = validate(rows)
    reasons = report.skipped.set_index("row")["reason"]
    assert reasons.to_dict() == {
        1: "no preset 'h100-pcie'", 2: "no preset for device 'NVIDIA V100'", 3: "no model card 'gpt-j-6b'",
        4: "out_len not given", 5: "batch must be >= 1", 6: "no measured metric",
    }
    assert set(report.comparisons["row"]) == {0}
    assert "skipped 6 rows" in report.to_text()


def test_tdp_rows_compare_tdp_tokens_per_j_and_tpot_becomes_decode_speed(toy_path):
    p = predicted(toy_path, batch=1)
    rows = pd.DataFrame([
        {**DESIGN, "platform": toy_path, "batch": 1, "tpot_s": p["tpot_s"], "decode_power_w": 700.0,
         "decode_tokens_per_j": p["decode_tokens_per_s"] / 700.0, "power_kind": "tdp"},
        {**DESIGN, "platform": toy_path, "batch": 1, "decode_power_w": p["decode_power_w"] * 2,
         "decode_tokens_per_j": p["decode_tokens_per_j"], "power_kind": "measured"},
    ])
    comp = validate(rows).comparisons.set_index(["row", "metric"])["error_pct"]
    assert set(comp.loc[0].index) == {"decode_tokens_per_s", "tdp_tokens_per_j"}
    assert comp.loc[(0, "decode_tokens_per_s")] == pytest.approx(0.0, abs=1e-9)
    assert comp.loc[(0, "tdp_tokens_per_j")] == pytest.approx(0.0, abs=1e-9)  # toy TDP is 700 W
    assert comp.loc[(1, "decode_power_w")] == pytest.approx(-50.0)
    assert comp.loc[(1, "decode_tokens_per_j")] == pytest.approx(0.0, abs=1e-9)


def test_reads_the_dse_measure_format(toy_path):
    p = predicted(toy_path, batch=2)
    values = {"platform": toy_path, "gpu_name": "NVIDIA H100 80GB HBM3", **DESIGN, "batch": 2, "idle_power_w": 70.0,
              "source": "dse measure", "energy_method": "nvml", **{m: p[m] for m in MEASURE_COLUMNS if m in p}}
    rows = pd.DataFrame([{c: values.get(c, np.nan) for c in MEASURE_COLUMNS + ("energy_method",)}])
    comp = validate(rows).comparisons
    assert set(comp["metric"]) == {"decode_tokens_per_s", "ttft_s", "decode_power_w", "decode_tokens_per_j"}
    assert comp["error_pct"].abs().max() < 1e-9


def test_survey_points_get_the_stated_assumptions():
    survey = pd.DataFrame([{"platform_class": "gpu", "device": "X", "work": "w", "method": "m", "platform": "p",
                            "decode_tokens_per_s": 50.0, "power_w": 400.0, "tokens_per_j": 0.125,
                            "power_kind": "tdp", "batch": 1, "model": None, "w_bits": 4}])
    rows = measurement_rows(survey)
    assert rows.loc[0, ["model", "in_len", "out_len"]].tolist() == ["llama-2-7b", 128.0, 128.0]
    assert bool(rows.loc[0, "model_assumed"])
    assert rows.loc[0, "tdp_tokens_per_j"] == 0.125
    assert np.isnan(rows.loc[0, "decode_tokens_per_j"]) and np.isnan(rows.loc[0, "decode_power_w"])
    assert measurement_rows(rows).equals(rows)  # idempotent


@pytest.mark.parametrize("drop, rule", [("model", "required column missing"), ("decode_tokens_per_s", "no measured")])
def test_bad_input_raises_spec_error(toy_path, drop, rule):
    rows = pd.DataFrame([{**DESIGN, "platform": toy_path, "batch": 1, "decode_tokens_per_s": 1.0}]).drop(columns=drop)
    with pytest.raises(SpecError, match=rule):
        validate(rows)


def test_shipped_sets_are_sourced_and_every_row_is_accounted_for():
    assert (validation_dir() / SETS["published"]).is_file()
    for name in ("published", "survey"):
        rows = load_set(name)
        assert rows["source"].map(lambda s: isinstance(s, str) and s.strip() != "").all(), name
        assert rows[[m for m in MEASURED_METRICS if m in rows]].notna().any(axis=1).all(), name
        report = validate(rows)
        accounted = set(report.comparisons["row"]) | set(report.skipped["row"])
        assert accounted == set(range(len(rows))), name
    survey = load_set("survey")
    assert len(survey) == 180 and (survey["batch"] == 1).all()
    assert set(survey["power_kind"]) <= {"tdp", "measured", "reported", "accelerator"}
    published = load_set("published")
    for bits in ("w_bits", "a_bits", "kv_bits"):
        assert published[bits].between(1, 32).all()
