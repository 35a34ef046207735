"""dse validate: PIM-system rows run with PIM; accelerator-only power is not compared with board power."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dse.validation.validate import PIM_ROW_OFFLOAD, load_set, measurement_rows, pim_offload_of, validate


def test_pim_offload_of_rows():
    designs = pd.DataFrame({"platform": ["gddr6-aim", "h100-sxm", "gddr6-aim"], "pim_offload": [np.nan, np.nan, 0.0]})
    classes = pd.Series(["pim", "gpu", "PIM"])
    assert pim_offload_of(designs, classes).tolist() == [PIM_ROW_OFFLOAD, 0.0, 0.0]  # a given value wins
    no_column = pd.DataFrame({"platform": ["gddr6-aim"]})
    assert pim_offload_of(no_column, pd.Series(["pim"])).tolist() == [PIM_ROW_OFFLOAD]


def test_survey_aimx_row_is_predicted_with_pim():
    rows = load_set("survey")
    aimx = rows[rows["platform"].astype(str).eq("gddr6-aim")]
    assert len(aimx) == 1
    comp = validate(aimx).comparisons
    tps = comp[comp["metric"] == "decode_tokens_per_s"].iloc[0]
    assert tps["pim_offload"] == PIM_ROW_OFFLOAD
    assert tps["measured"] == 330.0
    assert tps["predicted"] == pytest.approx(330.0, rel=0.25)  # 25.7 tokens/s before PIM rows ran on PIM


def test_accelerator_power_is_not_compared():
    rows = pd.DataFrame({"platform": ["versal-vck190"], "model": ["llama-2-7b"], "batch": [1], "in_len": [128],
                         "out_len": [128], "decode_tokens_per_s": [3.61], "decode_power_w": [2.49],
                         "decode_tokens_per_j": [1.45], "power_kind": ["accelerator"]})
    out = measurement_rows(rows)
    assert np.isnan(out["decode_power_w"].iloc[0]) and np.isnan(out["decode_tokens_per_j"].iloc[0])
    assert set(validate(rows).comparisons["metric"]) == {"decode_tokens_per_s"}


def test_lightmamba_vck190_rows_are_accelerator_power():
    survey = pd.read_csv(__import__("dse.validation.validate", fromlist=["validation_dir"]).validation_dir()
                         / "survey_points.csv")
    rows = survey[(survey["device"] == "VCK190") & (survey["work"] == "LightMamba")]
    assert len(rows) == 2 and set(rows["power_kind"]) == {"accelerator"}
