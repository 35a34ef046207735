"""``dse validate|calibrate|measure|plot --survey`` through the command line (moved here from the
domain tests when the argparse glue left dse/validation)."""

from __future__ import annotations

import pandas as pd
import pytest

import dse
from dse.cli import validation as cli_validation
from dse.cli.main import main
from dse.results.io import read_metadata
from tests.test_calibrate import TRUTH, synthetic, write_toy_preset
from tests.test_survey import _png_ok
from tests.test_validate import DESIGN


@pytest.fixture()
def toy_path(tmp_path):
    return write_toy_preset(tmp_path)


def test_validate_writes_parquet_and_plot(toy_path, tmp_path, capsys):
    p = dse.evaluate({**DESIGN, "batch": 4}, platform=toy_path).iloc[0]
    csv = tmp_path / "rows.csv"
    pd.DataFrame([{**DESIGN, "platform": toy_path, "batch": 4, "decode_tokens_per_s": p["decode_tokens_per_s"],
                   "source": "hand-made"},
                  {**DESIGN, "platform": "nowhere", "batch": 1, "decode_tokens_per_s": 1.0, "source": "x"}]).to_csv(
        csv, index=False)
    out = tmp_path / "out"
    assert main(["validate", "--set", str(csv), "--out", str(out)]) == 0
    assert "no preset 'nowhere'" in capsys.readouterr().out
    table = pd.read_parquet(out / "validation.parquet")
    assert table["metric"].tolist() == ["decode_tokens_per_s"] and table["set"].tolist() == ["rows"]
    meta = read_metadata(out / "validation.parquet")
    assert meta["skipped"][0]["reason"] == "no preset 'nowhere'"
    assert meta["summary"][0]["n"] == 1
    assert (out / "validation.png").read_bytes()[:4] == b"\x89PNG"


def test_calibrate_fits_selected_rows_and_reports_held_out(tmp_path, capsys):
    toy = dse.load_platform(write_toy_preset(tmp_path))
    csv = tmp_path / "m.csv"
    synthetic(toy.with_fields(**TRUTH)).to_csv(csv, index=False)
    out = tmp_path / "cal.yaml"
    argv = ["calibrate", "--platform", toy.path, "--measurements", str(csv)]
    assert main([*argv, "--rows", "0-2", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held-out rows (8)" in text and "decode_tokens_per_j" in text
    assert dse.load_platform(out).name == "toy-gpu-calibrated"
    assert main([*argv, "--rows", "12", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "rows are 0..11" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_row_selection():
    assert cli_validation.row_selection(["0-2", "5", "1,7"], 8) == [0, 1, 2, 5, 7]
    with pytest.raises(dse.SpecError, match="must be an index or a range"):
        cli_validation.row_selection(["a"], 8)


def test_survey_figure_glue(tmp_path, capsys):
    assert main(["plot", "--survey", "--batch", "8", "--out", str(tmp_path)]) == 0
    # batch 8: no published points (they are batch 1), drawn as grey reference only
    _png_ok(tmp_path / "survey-bs8.png")
    assert not (tmp_path / "survey-bs1.png").exists()
    table = pd.read_csv(tmp_path / "survey-disagreements.csv")
    assert {"ratio_tokens_per_s", "ratio_tokens_per_j", "reason", "evidence"} <= set(table.columns)
    assert "survey-disagreements.csv" in capsys.readouterr().out


def test_survey_defaults():
    from dse.cli.main import build_parser

    args = build_parser().parse_args(["plot", "--survey"])
    assert args.out is None and args.batch == [1, 8] and args.results is None


def test_measure_arguments():
    from dse.cli.main import build_parser

    args = build_parser().parse_args(["measure", "--model", "llama-2-7b", "llama-3-8b", "--batch", "1", "8",
                                      "--in-len", "128", "2048", "--out-len", "128", "--out", "m.csv",
                                      "--repeats", "3"])
    assert args.model == ["llama-2-7b", "llama-3-8b"]
    assert args.batch == [1, 8] and args.in_len == [128, 2048] and args.out_len == [128]
    assert args.out == "m.csv" and args.repeats == 3 and args.device == "0"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["measure", "--batch", "1", "--out", "m.csv"])  # --model is required
    with pytest.raises(SystemExit):
        build_parser().parse_args(["measure", "--model", "x", "--batch", "0", "--out", "m.csv"])


def test_help_constants_match_the_domain_modules():
    """The CLI states these without importing pandas/SciPy; they must not drift from the domain's."""
    from dse.validation import calibration, measure, validate

    assert cli_validation.VALIDATION_SETS == tuple(validate.SETS)
    assert cli_validation.CALIBRATION_DEFAULT_FIT == calibration.DEFAULT_FIT
    assert cli_validation.MEASURE_DEFAULT_REPEATS == measure.DEFAULT_REPEATS


def test_measure_without_torch_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    out = tmp_path / "m.csv"
    assert main(["measure", "--model", "llama-2-7b", "--out", str(out), "--heat-s", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "PyTorch" in err and err.count("\n") == 1
    assert not out.exists()
