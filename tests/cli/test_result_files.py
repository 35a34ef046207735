"""Result files and plots (issue 9.4, 9.6): whole-number knobs stored as integers, a model column,
`fits` in every file, units; the front unmistakable, categories distinct, `dse plot` keeping the
study's colouring; explain's headers say their units; the max_seq_len warning (9.16)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import dse.results.plot as plot_module
from dse.cli.evaluate import EXPLAIN_LEGEND, EXPLAIN_VIEW
from dse.cli.main import main
from dse.explain import explain
from dse.loading import load_study
from dse.results.io import read_metadata
from dse.results.plot import (
    FRONT_COLOUR,
    INFEASIBLE_COLOUR,
    PALETTE,
    category_styles,
    default_color_by,
    front_figure,
)
from dse.results.tables import file_table

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "studies" / "quickstart.yaml")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qs") / "out"
    assert main(["run", QUICKSTART, "--quiet", "--n-trials", "80", "--output", str(folder)]) == 0
    return folder


# ---- Parquet (9.6) ----------------------------------------------------------------------------

def test_study_files_store_integers_a_model_column_and_fits(quickstart):
    for name in ("trials.parquet", "front.parquet"):
        df = pd.read_parquet(quickstart / name)
        index = "trial" if "trial" in df else "design_index"  # a search or a sweep (sampler auto)
        for col in ("batch", "in_len", "out_len", "nm_sparse", index):
            assert df[col].dtype == np.int64, (name, col, df[col].dtype)
        assert df["w_bits"].dtype == np.float64  # a float knob stays a float
        assert set(df["model"].astype(str)) == {"llama-2-7b"}
        assert (df["fits"] == (df["g_memory_bytes"] <= 0)).all()
        schema = pq.read_schema(quickstart / name)
        assert schema.field("in_len").metadata[b"unit"] == b"token"
        assert schema.field("batch").metadata[b"unit"] == b"1"
        assert schema.field("decode_tokens_per_j").metadata[b"unit"] == b"token/J"


def test_file_table_is_idempotent_and_keeps_fractional_values():
    study = load_study({"space": "quickstart", "model": "llama-2-7b"})
    df = pd.DataFrame({"trial": [0, 1], "batch": [1.0, 64.0], "in_len": [128.0, 128.5], "w_bits": [4.0, 16.0],
                       "g_memory_bytes": [-1.0, 1.0]})
    once = file_table(study, df)
    assert once["batch"].dtype == np.int64 and once["batch"].tolist() == [1, 64]
    assert once["in_len"].dtype == np.float64  # not whole: left as it is, never rounded
    assert once["fits"].tolist() == [True, False]
    assert list(once.columns[:2]) == ["trial", "model"]  # the platform is a knob of this space: no column added
    pd.testing.assert_frame_equal(file_table(study, once), once)


def test_eval_files_have_integers_and_fits(tmp_path):
    out = tmp_path / "x.parquet"
    assert main(["eval", "--platform", "h100-sxm", "--model", "llama-2-7b", "llama-2-70b", "--batch", "1", "64",
                 "--format", "parquet", "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert df["batch"].dtype == np.int64 and df["in_len"].dtype == np.int64
    assert df["fits"].tolist() == (df["g_memory_bytes"] <= 0).tolist()
    assert not df["fits"].all() and df["fits"].any()  # 70B at 16 bits does not fit one H100
    assert pq.read_schema(out).field("out_len").metadata[b"unit"] == b"token"
    csv = tmp_path / "x.csv"
    assert main(["eval", "--platform", "h100-sxm", "--model", "llama-2-7b", "--format", "csv",
                 "--out", str(csv)]) == 0
    text = csv.read_text()
    assert text.splitlines()[0].split(",")[-1] == "fits" and ",1,128,128," in text


def test_explain_headers_name_their_units(capsys):
    df = explain("llama-2-7b", "h100-sxm", batch=8)
    assert list(df.columns) == ["phase", "operator", "flop", "main_memory_bytes", "time_s", "time_frac", "bound",
                                "energy_j", "energy_frac"]
    headers = [h for _, h, _ in EXPLAIN_VIEW]
    assert "mb" not in headers and "energy_mj" not in headers
    assert {"GFLOP", "main_memory_MB", "time_ms", "energy_mJ"} <= set(headers)
    assert main(["explain", "--platform", "h100-sxm", "--model", "llama-2-7b"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == headers
    assert out.rstrip("\n").endswith(EXPLAIN_LEGEND) and "1e6 bytes" in EXPLAIN_LEGEND and "1e-3 J" in EXPLAIN_LEGEND


# ---- plots (9.4) ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 9, 18, 40, 63])
def test_categories_get_distinct_styles(n):
    styles = category_styles([f"p{i}" for i in range(n)])
    assert len(set(styles.values())) == n
    colours = {c for c, _ in styles.values()}
    assert FRONT_COLOUR not in colours and INFEASIBLE_COLOUR not in colours


def test_palette_keeps_away_from_the_front_and_the_infeasible_grey():
    def rgb(c: str) -> np.ndarray:
        return np.array(mcolors.to_rgb(c))

    for c in PALETTE:
        assert np.abs(rgb(c) - rgb(FRONT_COLOUR)).max() > 0.3
        r, g, b = rgb(c)
        assert max(r, g, b) - min(r, g, b) > 0.2, c  # not a grey


def test_a_front_of_more_than_two_objectives_is_not_joined_by_a_line():
    rng = np.random.default_rng(1)
    trials = pd.DataFrame({"x": rng.uniform(1, 100, 50), "y": rng.uniform(1, 100, 50), "z": rng.uniform(1, 100, 50),
                           "feasible": np.ones(50, dtype=bool)})
    fig = front_figure(trials, trials.head(7), [("x", True), ("y", True), ("z", False)])
    ax = fig.axes[0]
    assert not ax.lines
    assert ax.collections[-1].get_label() == "Pareto front (7; 3 objectives, the first two shown)"


def test_front_is_a_black_line_with_outlined_markers_on_top():
    rng = np.random.default_rng(0)
    n = 400
    trials = pd.DataFrame({"x": rng.uniform(1, 100, n), "y": rng.uniform(1, 100, n),
                           "platform": [f"p{i % 18}" for i in range(n)], "feasible": rng.random(n) > 0.1})
    front = trials[trials["feasible"]].nlargest(5, "x")
    fig = front_figure(trials, front, [("x", True), ("y", True)], color_by="platform")
    ax = fig.axes[0]
    line = ax.lines[-1]
    assert line.get_color() == FRONT_COLOUR and line.get_linestyle() == "-" and len(line.get_xdata()) == 5
    markers = ax.collections[-1]
    assert markers.get_label().startswith("Pareto front (5)")
    assert np.allclose(markers.get_facecolors()[0][:3], 1.0) and np.allclose(markers.get_edgecolors()[0][:3], 0.0)
    assert markers.get_zorder() > max(c.get_zorder() for c in ax.collections[:-1])
    groups = [c for c in ax.collections if c.get_label().startswith("p")]
    assert len(groups) == 18
    styles = {(tuple(np.round(c.get_facecolors()[0][:3], 3)), c.get_paths()[0].vertices.tobytes()) for c in groups}
    assert len(styles) == 18  # every category its own colour-marker pair
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_dse_plot_keeps_the_studys_colouring(quickstart, monkeypatch, capsys):
    trials = pd.read_parquet(quickstart / "trials.parquet")
    assert trials["platform"].nunique() > 1 and default_color_by(trials) == "platform"
    assert read_metadata(quickstart / "front.parquet")["color_by"] == "platform"
    seen = {}

    def fake(trials, front, objectives, path, *, title="", color_by=None, units=None):
        seen.update(color_by=color_by, objectives=objectives, path=path, units=units)
        return Path(path)

    monkeypatch.setattr(plot_module, "plot_front", fake)
    assert main(["plot", str(quickstart)]) == 0
    assert seen["color_by"] == "platform" and seen["path"] == quickstart / "front.png"
    assert seen["units"]["decode_tokens_per_s"] == "token/s"  # the units stored in the Parquet files
    assert main(["plot", str(quickstart), "--color-by", "w_bits", "--y", "ttft_s", "--out",
                 str(quickstart / "other.png")]) == 0
    assert seen["color_by"] == "w_bits" and seen["objectives"][1] == ("ttft_s", True)
    assert seen["objectives"][0][0] == "decode_tokens_per_s"


def test_front_png_axes_carry_units_and_zoom_past_far_infeasible_designs(quickstart, monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    drawn = []

    def spy(*args, **kwargs):
        fig = front_figure(*args, **kwargs)
        ax = fig.axes[0]
        drawn.append((ax.get_xlabel(), ax.get_ylabel(), ax.get_ylim(),
                      [t.get_text() for t in ax.get_legend().get_texts()]))
        return fig

    monkeypatch.setattr(plot_module, "front_figure", spy)
    assert main(["plot", str(quickstart), "--out", str(tmp_path / "a.png")]) == 0
    assert main(["plot", str(quickstart), "--y", "ppl_delta", "--out", str(tmp_path / "b.png")]) == 0
    (x1, y1, _, legend1), (x2, y2, (lo, hi), legend2) = drawn
    assert (x1, y1) == ("decode_tokens_per_s (token/s)", "decode_tokens_per_j (token/J)")
    assert "infeasible" in legend1  # tokens/s and tokens/J: nothing squashed, nothing zoomed
    assert (x2, y2) == ("decode_tokens_per_s (token/s)", "ppl_delta (dimensionless)")
    # infeasible designs reach ppl_delta 8 (and inf); the axis shows the feasible ones (<= 1.0) instead
    trials = pd.read_parquet(quickstart / "trials.parquet")
    feasible_max = trials.loc[trials["feasible"], "ppl_delta"].max()
    assert trials.loc[~trials["feasible"], "ppl_delta"].replace(np.inf, np.nan).max() > 4 * hi
    assert lo < 0 and feasible_max < hi < 1.1 * feasible_max + 0.05
    assert "infeasible (some off the axes)" in legend2
    front = pd.read_parquet(quickstart / "front.parquet")
    fig = front_figure(trials, front, [("decode_tokens_per_s", True), ("ppl_delta", False)])  # units: as stored
    try:
        assert fig.axes[0].get_ylabel() == "ppl_delta (dimensionless)"
        assert fig.axes[0].get_xlabel() == "decode_tokens_per_s (token/s)"
    finally:
        plt.close(fig)


def test_default_color_by():
    assert default_color_by(pd.DataFrame({"platform": ["a", "a"], "model": ["x", "y"]})) == "model"
    assert default_color_by(pd.DataFrame({"platform": ["a", "b"], "model": ["x", "y"]})) == "platform"
    assert default_color_by(pd.DataFrame({"batch": [1, 2]})) is None


# ---- max_seq_len (9.16) -------------------------------------------------------------------------

def test_eval_warns_beyond_the_cards_context(capsys):
    argv = ["eval", "--platform", "h100-sxm", "--model", "llama-2-7b", "--in-len", "128", "4000", "--out-len", "200"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3  # the table still comes
    assert err.startswith("warning: 1 of 2 designs of llama-2-7b have in_len + out_len up to 4200 tokens, "
                          "beyond the card's max_seq_len 4096")
    assert main(["eval", "--platform", "h100-sxm", "--model", "llama-2-7b", "--in-len", "3896", "--out-len",
                 "200"]) == 0
    assert capsys.readouterr().err == ""  # exactly at the limit: no warning


def test_explain_warns_beyond_the_cards_context(capsys):
    assert main(["explain", "--platform", "h100-sxm", "--model", "llama-2-7b", "--in-len", "8192"]) == 0
    assert "beyond the card's max_seq_len 4096" in capsys.readouterr().err
