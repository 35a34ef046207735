"""Survey reproduction: the figure is written and non-trivial; disagreement rules on hand-made rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dse.results.io import write_parquet
from dse.spec.errors import SpecError
from dse.validation.survey import DEFAULT_SETTING, compute_predictions, load_points, preset_predictions, results_for
from dse.validation.survey_compare import REASONS, reason_counts, survey_disagreements
from dse.validation.survey_plot import survey_figure

PRESET = "a100-sxm-80gb"


def _png_ok(path) -> None:
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # axes, hundreds of markers, labels
    img = mpimg.imread(path)
    assert img.shape[0] > 600 and img.shape[1] > 900
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # not a blank canvas


@pytest.fixture(scope="module")
def bs1():
    return compute_predictions(1)


def test_compute_predictions_covers_every_preset_and_setting(bs1):
    trials, front = bs1
    assert len(trials) == 17 * 3 * 2 * 3 * 2 * 2  # survey-presets: 17 presets x 72 settings
    assert set(trials["batch"]) == {1}
    assert trials["feasible"].any() and not trials["feasible"].all()  # 16-bit 7B does not fit 8 GB FPGAs
    assert len(front) >= 1 and front["feasible"].all()
    presets = preset_predictions(trials)
    assert set(presets["kind"]) == {"default", "best"}
    assert presets.groupby("platform").size().eq(2).all()
    best = presets[presets["kind"] == "best"].set_index("platform")
    default = presets[presets["kind"] == "default"].set_index("platform")
    assert (best["decode_tokens_per_j"] >= default["decode_tokens_per_j"] - 1e-12).all()
    assert default.loc[PRESET, "setting"] == "w16a16kv16"
    assert default.loc["alveo-u280", "setting"] == "w8a16kv16"  # the widest weights that fit
    assert default["feasible"].all()


def test_figure_from_computed_predictions(tmp_path):
    path = survey_figure(None, 1, tmp_path / "bs1.png")
    _png_ok(path)


def test_figure_from_results_folder_and_batch_check(tmp_path, bs1):
    trials, front = bs1
    write_parquet(trials, tmp_path / "res" / "trials.parquet")
    write_parquet(front, tmp_path / "res" / "front.parquet")
    points = load_points().head(20)
    _png_ok(survey_figure(tmp_path / "res", 1, tmp_path / "fig.png", points=points))
    with pytest.raises(SpecError):
        survey_figure(tmp_path / "res", 8, tmp_path / "fig8.png")
    assert results_for(tmp_path / "res", 1) == tmp_path / "res"
    with pytest.raises(SpecError):
        results_for(tmp_path / "res", 8)


# ---- disagreement rules ------------------------------------------------------------------

def _predictions() -> pd.DataFrame:
    """Hand-made predictions for one preset: 100 tokens/s at 100 W (1 tokens/J; 0.25 at TDP),
    w4 at 200 tokens/s, 16-bit flagged as not fitting on a second preset."""
    base = {"platform": PRESET, **DEFAULT_SETTING, "decode_tokens_per_s": 100.0, "decode_power_w": 100.0,
            "decode_tokens_per_j": 1.0, "tdp_tokens_per_j": 0.25, "feasible": True}
    rows = [base,
            {**base, "w_bits": 8.0, "decode_tokens_per_s": 150.0, "decode_tokens_per_j": 1.5},
            {**base, "w_bits": 4.0, "decode_tokens_per_s": 200.0, "decode_tokens_per_j": 2.0},
            {**base, "nm_sparse": 1.0, "decode_tokens_per_s": 999.0},
            {**base, "platform": "alveo-u280", "feasible": False},
            {**base, "platform": "alveo-u280", "w_bits": 8.0, "decode_tokens_per_s": 50.0}]
    return pd.DataFrame(rows)


def _point(**kw) -> dict:
    row = {"platform_class": "gpu", "device": "NVIDIA A100", "work": "x", "method": "Operator Optimization",
           "decode_tokens_per_s": 100.0, "power_w": 100.0, "power_kind": "reported", "batch": 1,
           "model": np.nan, "w_bits": np.nan, "a_bits": np.nan, "model_evidence": np.nan, "bits_evidence": np.nan,
           "platform": PRESET}
    row.update(kw)
    row["tokens_per_j"] = row["decode_tokens_per_s"] / row["power_w"]
    return row


CASES = {
    "agrees": (_point(decode_tokens_per_s=80.0), ""),
    "tdp": (_point(power_w=400.0, power_kind="tdp"), "TDP vs measured power"),
    "model": (_point(model="llama-2-13b", decode_tokens_per_s=40.0), "model size differs"),
    "fast": (_point(method="Fast Decoding", decode_tokens_per_s=250.0, power_w=250.0),
             "fast decoding used (the survey studies run without spec_len)"),
    "multi": (_point(method="Heterogeneous Cooperation", device="A100+7xU280", decode_tokens_per_s=450.0,
                     power_w=450.0), "multi-device system"),
    "bits": (_point(method="Quantization", decode_tokens_per_s=300.0, power_w=300.0), "quantisation/bits unknown"),
    "power": (_point(power_w=300.0, power_kind="measured"), "measured/reported power differs"),
    "unknown": (_point(decode_tokens_per_s=30.0, power_w=30.0, model_evidence="Llama2-7B/13B?"), "unknown setup"),
    "tps_and_tdp": (_point(decode_tokens_per_s=30.0, power_w=400.0, power_kind="tdp"),
                    "unknown setup; TDP vs measured power"),
}


@pytest.fixture(scope="module")
def table():
    points = pd.DataFrame([p for p, _ in CASES.values()] + [_point(platform=np.nan)], index=[*CASES, "no_preset"])
    return survey_disagreements(points, _predictions()).set_index("row")


@pytest.mark.parametrize("case", list(CASES))
def test_disagreement_reason(table, case):
    expected = CASES[case][1]
    assert table.loc[case, "reason"] == expected
    assert bool(table.loc[case, "disagrees"]) == bool(expected)
    assert set(filter(None, expected.split("; "))) <= set(REASONS)


def test_points_without_preset_are_not_compared(table):
    assert "no_preset" not in table.index
    assert len(table) == len(CASES)


def test_ratios_are_like_for_like(table):
    tdp = table.loc["tdp"]
    assert math.isclose(tdp["ratio_tokens_per_s"], 1.0)
    assert math.isclose(tdp["ratio_tokens_per_j"], 0.25 / 0.25)  # our tokens/J at TDP vs the survey's
    assert math.isclose(tdp["ratio_tokens_per_j_modelled"], 1.0 / 0.25)  # the figure's comparison
    power = table.loc["power"]
    assert math.isclose(power["ratio_tokens_per_j"], 3.0)
    assert "300 W" in power["evidence"]
    assert "13B" in table.loc["unknown", "evidence"]
    assert table.iloc[0]["worst_abs_log2"] == table["worst_abs_log2"].max()  # worst first


def test_setting_matching():
    preds = _predictions()
    points = pd.DataFrame([_point(w_bits=4.0, a_bits=16.0), _point(w_bits=1.6), _point(platform="alveo-u280"),
                           _point(w_bits=16.0, a_bits=16.0)])
    out = survey_disagreements(points, preds).set_index("row").sort_index()
    assert out["setting"].tolist() == ["w4a16kv16", "w4a16kv16", "w8a16kv16", "w16a16kv16"]
    assert out.loc[0, "predicted_tokens_per_s"] == 200.0  # published bits used, dense (not the 2:4 row)
    assert "1.6 not in the study grid" in out.loc[1, "setting_note"]
    assert "does not fit" in out.loc[2, "setting_note"]
    assert out.loc[3, "setting_note"] == ""


def test_shipped_points_every_disagreement_has_a_reason(bs1):
    out = survey_disagreements(load_points(), bs1[0])
    assert len(out) == load_points()["platform"].notna().sum()
    bad = out[out["disagrees"]]
    assert len(bad) and bad["reason"].str.len().gt(0).all()
    assert (out.loc[~out["disagrees"], "reason"] == "").all()
    counts = reason_counts(out)
    assert list(counts.index) == list(REASONS) and counts["TDP vs measured power"] > 0
