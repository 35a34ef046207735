"""Hostile command lines (issue 9.12): each gives one line ``error: ...``, exit 2, no traceback,
and writes nothing (spec-file inputs are the corpus in tests/bad_specs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dse.cli.main import main
from tests.conftest import read_only_folder

EVAL = ["eval", "--platform", "h100-sxm", "--model", "llama-2-7b"]
EXPLAIN = ["explain", "--platform", "h100-sxm", "--model", "llama-2-7b"]
STUDY = "studies/quickstart.yaml"
ROOT = Path(__file__).resolve().parents[2]




def run_bad(argv: list[str], capsys, *expected: str) -> str:
    """Run ``dse argv``; assert the one-line error contract; return the line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    """Work in an empty folder (the study files resolve through the checkout's absolute path)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _study() -> str:
    return str(ROOT / STUDY)


# ---- output paths ---------------------------------------------------------------------------------

def test_eval_out_in_a_missing_folder_creates_nothing(capsys, tmp_path):
    target = Path("/nonexistent-dse-test") / "x.csv"
    run_bad([*EVAL, "--format", "csv", "--out", str(target)], capsys, "folder does not exist")
    assert not target.parent.exists()
    nested = tmp_path / "a" / "b" / "x.csv"
    run_bad([*EVAL, "--out", str(nested)], capsys, "folder does not exist")
    assert not (tmp_path / "a").exists()


def test_eval_out_at_a_folder(capsys, tmp_path):
    run_bad([*EVAL, "--out", str(tmp_path)], capsys, "is a folder")
    assert not any(tmp_path.iterdir())


def test_eval_out_in_a_read_only_folder(capsys, tmp_path):
    folder = read_only_folder(tmp_path)
    run_bad([*EVAL, "--format", "parquet", "--out", str(folder / "x.parquet")], capsys, "not writable")
    assert not (folder / "x.parquet").exists()


def test_eval_out_with_nul_or_a_huge_name(capsys, tmp_path):
    run_bad([*EVAL, "--out", str(tmp_path / "a\0b.csv")], capsys, "without NUL")
    run_bad([*EVAL, "--out", str(tmp_path / ("x" * 5000))], capsys, "too long")
    assert not any(tmp_path.iterdir())


def test_run_output_that_is_a_file(capsys, in_tmp):
    (in_tmp / "taken").write_text("not a folder")
    run_bad(["run", _study(), "--quiet", "--output", "taken"], capsys, "--output", "is a file")
    run_bad(["run", _study(), "--quiet", "--output", "taken/sub"], capsys, "is a file")
    assert sorted(p.name for p in in_tmp.iterdir()) == ["taken"]


def test_run_output_in_a_read_only_folder(capsys, in_tmp):
    folder = read_only_folder(in_tmp)
    run_bad(["run", _study(), "--quiet", "--output", str(folder / "s")], capsys, "not writable")
    assert not (folder / "s").exists()


def test_run_storage_that_is_a_folder(capsys, in_tmp):
    (in_tmp / "store.journal").mkdir()
    run_bad(["run", _study(), "--quiet", "--output", "out", "--storage", "store.journal"], capsys, "--storage",
            "is a folder")
    assert not (in_tmp / "out").exists()


def test_spec_storage_that_is_a_folder(capsys, in_tmp):
    (in_tmp / "results" / "d.journal").mkdir(parents=True)
    (in_tmp / "st.yaml").write_text("space: quickstart\nmodel: llama-2-7b\nsampler: nsga2\n"
                                    "storage: results/d.journal\nbudget: {n_trials: 10}\n")
    run_bad(["run", "st.yaml", "--quiet", "--output", "out"], capsys,
            "st.yaml: storage: results/d.journal: is a folder")
    assert not (in_tmp / "out").exists() and not any((in_tmp / "results" / "d.journal").iterdir())


def test_stale_after_default_is_the_search_layers():
    from dse.cli.studies import STALE_AFTER_S
    from dse.search.budget import STALE_AFTER_S as SEARCH_DEFAULT

    assert STALE_AFTER_S == SEARCH_DEFAULT


@pytest.mark.parametrize("argv, expected", [
    (["run", STUDY, "--n-trials", "0"], "must be >= 1"),
    (["run", STUDY, "--n-trials", "-5"], "must be >= 1"),
    (["run", STUDY, "--workers", "0"], "must be >= 1"),
    (["run", STUDY, "--stale-after", "0"], "must be a finite number > 0"),
    (["run", STUDY, "--stale-after", "inf"], "must be a finite number > 0"),
    (["sweep", STUDY, "--backend", "foo"], "invalid choice: 'foo'"),
    (["sweep", STUDY, "--n-trials", "5"], "unrecognized arguments: --n-trials"),  # a sweep has no budget
    (["sweep", STUDY, "--workers", "2"], "unrecognized arguments: --workers"),
    (["sweep", STUDY, "--storage", "x.journal"], "unrecognized arguments: --storage"),
    (["sweep", STUDY, "--shard", "4/4", "--output", "o"], "must be I/N with 0 <= I < N"),
    (["sweep", STUDY, "--n-jobs", "0", "--output", "o"], "must be >= 1, or negative"),
    (["sweep", STUDY, "--scheduler", "tcp://h:1", "--output", "o"], "needs --backend dask"),
    (["front", "results/none", "--top", "0"], "must be >= 1"),
])
def test_flags_out_of_range(argv, expected, capsys, in_tmp):
    argv = [_study() if a == STUDY else a for a in argv]
    run_bad(argv, capsys, expected)
    assert not any(in_tmp.iterdir())


# ---- explain and eval ---------------------------------------------------------------------------------

def test_explain_zero_bandwidth_is_an_error_not_a_division(capsys):
    run_bad([*EXPLAIN, "--set", "mem_bw_bytes_per_s=0"], capsys, "--set: mem_bw_bytes_per_s: must be > 0")


@pytest.mark.parametrize("extra, expected", [
    (["--set", "mem_energy_pj_per_bit=1e308"], "mem_energy_pj_per_bit: must be <= 1000"),
    (["--set", "static_power_w=800"], "--set: tdp_w: must exceed static_power_w"),
    (["--set", "mem_bw_bytes_per_s=nan"], "mem_bw_bytes_per_s: must be finite"),
    (["--set", "mem_bw_tb_per_s=3"], "--set: mem_bw_tb_per_s: unknown hardware field"),
    (["--set", "mem_bw_bytes_per_s"], "must be FIELD=VALUE"),
    (["--set", "tdp_w=abc"], "--set: tdp_w: must be a number"),
    (["--w-bits", "40"], "w_bits: must be in [1, 32]"),
    (["--batch", "1.5"], "'1.5' is not a whole number"),
    (["--spec-accept-frac", "1e400"], "is not a finite number"),
    (["--nm-sparse", "2"], "nm_sparse: must be in [0, 1]"),
])
@pytest.mark.parametrize("command", [EVAL, EXPLAIN])
def test_explain_makes_the_checks_eval_makes(command, extra, expected, capsys):
    run_bad([*command, *extra], capsys, expected)


def test_explain_explains_every_design(capsys):
    assert main([*EXPLAIN, "--batch", "1", "8"]) == 0
    out = capsys.readouterr().out
    titles = [line for line in out.splitlines() if line.startswith("llama-2-7b on h100-sxm:")]
    assert len(titles) == 2 and "batch=1," in titles[0] and "batch=8," in titles[1]
    assert out.count("main_memory_MB") == 3  # two headers and the legend
    run_bad([*EXPLAIN, "--batch", *map(str, range(1, 9)), "--w-bits", *map(str, range(1, 10))], capsys,
            "explains at most 64 designs")


# ---- plot and front ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def study_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study") / "qs"
    assert main(["run", str(ROOT / STUDY), "--quiet", "--n-trials", "60", "--output", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("extra, expected", [
    (["--x", "nope"], "--x: unknown column"),
    (["--y", "tokens_per_jj"], "--y: unknown column; did you mean 'tokens_per_j'?"),
    (["--x", "platform"], "--x: unknown column"),  # not numeric
    (["--color-by", "nonexistent"], "--color-by: unknown column"),
])
def test_plot_rejects_unknown_columns(study_folder, extra, expected, capsys):
    before = (study_folder / "front.png").stat().st_mtime_ns
    run_bad(["plot", str(study_folder), *extra], capsys, expected)
    assert (study_folder / "front.png").stat().st_mtime_ns == before


def test_plot_survey_with_a_path_and_a_missing_folder(study_folder, capsys, tmp_path):
    run_bad(["plot", str(study_folder), "--survey"], capsys, "not with --survey")
    run_bad(["plot", str(tmp_path / "none")], capsys, "file not found")


def test_front_unknown_columns(study_folder, capsys):
    run_bad(["front", str(study_folder), "--sort", "nope"], capsys, "--sort: unknown column")
    run_bad(["front", str(study_folder), "--columns", "batch", "nope"], capsys, "--columns: unknown column")


def test_categorical_knobs_take_their_names(capsys):
    """`--quant-method awq` and `--workload sharegpt-vllm-paper` work as in YAML and the API (codes
    too); a misspelt name is a one-line error naming the choices; the table shows the names, and the
    serving stage's columns once a serving knob is set."""
    assert main([*EVAL, "--w-bits", "4", "--quant-method", "gptq", "3"]) == 0
    out = capsys.readouterr().out
    assert "gptq" in out and "awq" in out and "ppl_delta" in out and "srv_tok/s" not in out
    assert main([*EVAL, "--workload", "sharegpt-vllm-paper"]) == 0
    out = capsys.readouterr().out
    assert "srv_tok/s" in out and "goodput_req/s" in out
    run_bad([*EVAL, "--quant-method", "awk"], capsys, "'awk' is not one of rtn", "did you mean 'awq'")
