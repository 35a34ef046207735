"""`dse report`: one self-contained HTML page of a study's results (the front's rows, objective
names and units, embedded plots, well-formed markup), and every bad input one line, exit 2,
nothing written."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dse.cli.main import main
from dse.results.report import ReportData, load_report, render_report
from tests.conftest import read_only_folder

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "studies" / "quickstart.yaml")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SEARCH_STUDY = """\
name: qs-search
description: random search over the quickstart space <two objectives>
space: quickstart
model: llama-2-7b
objectives: [decode_tokens_per_s, decode_tokens_per_j]
constraints: [{metric: ttft_s, max: 1.0}]
sampler: random
budget: {n_trials: 30}
batch_size: 10
seed: 3
"""


class Page(HTMLParser):
    """Checks nesting (every non-void element closed in order) and collects what a test looks at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.headers: list[str] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        for key in ("src", "href"):
            if key in attrs and tag != "img" or (tag == "link" and attrs.get("rel") == "stylesheet"):
                self.external.append(f"{tag} {attrs}")
        if tag in ("th", "td"):
            self._in, self.current = tag, ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == self._in:
            (self.headers if tag == "th" else self.cells).append(self.current.strip())
            self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in:
            self.current += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert text.startswith("<!DOCTYPE html>")
    assert not page.errors and not page.stack, (page.errors, page.stack)
    return page


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The README's quickstart (an exhaustive sweep, three objectives)."""
    folder = tmp_path_factory.mktemp("qs") / "out"
    assert main(["run", QUICKSTART, "--quiet", "--output", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A random search (two objectives, an Optuna journal)."""
    base = tmp_path_factory.mktemp("search")
    (base / "study.yaml").write_text(SEARCH_STUDY)
    assert main(["run", str(base / "study.yaml"), "--quiet", "--output", str(base / "out")]) == 0
    return base / "out"


def _report(folder: Path, capsys, *extra: str) -> tuple[Path, str]:
    out = folder.parent / f"{folder.name}-report.html"
    assert main(["report", str(folder), "-o", str(out), *extra]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    return out, out.read_text(encoding="utf-8")


def test_report_of_a_sweep_holds_the_front_units_and_plots(quickstart, capsys):
    _, text = _report(quickstart, capsys)
    page = parse(text)
    front = pd.read_parquet(quickstart / "front.parquet")
    headers = " ".join(page.headers)
    for name, unit in (("decode_tokens_per_s", "token/s"), ("decode_tokens_per_j", "token/J"), ("ppl_delta", ""),
                       ("system_cost_usd", "USD")):
        assert name + unit in headers, name  # the header cell holds the name and, below it, the unit
    cells = set(page.cells)
    for index in front["design_index"]:
        assert str(index) in cells
    for value in front["decode_tokens_per_s"]:
        assert f"{value:.4g}" in cells
    assert len(page.images) == 6  # four objectives: six pairwise panels
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in page.images)
    assert not page.external and "http://" not in text and "https://" not in text
    words = "".join(page.text)
    for phrase in ("quickstart", "7,680 evaluated", "auto → exhaustive", "c_ttft_s_max", "ttft_s ≤ 1.0",
                   "designs/s", "Highest decode_tokens_per_s", "Lowest ppl_delta"):
        assert phrase in words, phrase


def test_report_of_a_search_with_top_and_the_default_path(search, capsys):
    assert main(["report", str(search), "--top", "3"]) == 0
    out = search / "report.html"
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    assert len(page.images) == 1  # two objectives: one plot
    trials = pd.read_parquet(search / "trials.parquet")
    words = "".join(page.text)
    assert f"{len(trials):,} evaluated" in words and "random" in words and "trials from" in words
    assert "<two objectives>" in words and "<two objectives>" not in text  # escaped
    assert sum(1 for h in page.headers if h.startswith("trial")) == 1 + 2  # the front table and 2 top tables
    assert not list(search.glob(".report.html.*"))  # no temporary file left


def test_report_of_a_study_spec_finds_its_output_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("study.yaml").write_text(SEARCH_STUDY.replace("n_trials: 30", "n_trials: 10"))
    assert main(["report", "study.yaml"]) == 2
    assert "no results yet" in capsys.readouterr().err
    assert main(["run", "study.yaml", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", "study.yaml", "-o", "r.html"]) == 0
    assert "qs-search" in Path("r.html").read_text(encoding="utf-8")


def test_render_escapes_names_and_draws_pairwise_panels():
    rng = np.random.default_rng(0)
    n = 200
    trials = pd.DataFrame({"trial": np.arange(n), "platform": rng.choice(["a<b", "c&d"], n),
                           "batch": rng.integers(1, 64, n), **{f"m{i}": rng.uniform(1, 10, n) for i in range(4)},
                           "c_x_max": rng.uniform(-1, 1, n)})
    trials["feasible"] = trials["c_x_max"] <= 0
    front = trials[trials["feasible"]].head(5)
    meta = {"study": "<script>alert(1)</script>", "objectives": [[f"m{i}", i % 2 == 0] for i in range(4)],
            "spec": {"constraints": [{"metric": "x", "max": 0}]}, "sampler": "nsga2", "color_by": "platform"}
    text = render_report(ReportData(Path("x"), front, trials, meta, {"m0": "W"}), top=2)
    page = parse(text)
    assert "<script>alert" not in text and "a&lt;b" in text
    assert len(page.images) == 6  # 4 objectives: 6 pairs
    assert "m0W" in " ".join(page.headers)



def test_plot_axes_carry_units_and_zoom_past_far_infeasible_designs():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dse.results.plot import axis_label, zoom_to_feasible

    assert axis_label("decode_tokens_per_s", {"decode_tokens_per_s": "token/s"}) == "decode_tokens_per_s (token/s)"
    assert axis_label("ppl_delta", {"ppl_delta": "1"}) == "ppl_delta (dimensionless)"
    fig, ax = plt.subplots()
    try:
        ax.scatter([0, 1, 2, 3], [0.0, 0.4, 8.0, 5.0])  # the last two: infeasible outliers
        assert zoom_to_feasible(ax, "y", np.array([0.0, 0.4, np.inf]))
        lo, hi = ax.get_ylim()
        assert lo < 0.0 and 0.4 < hi < 0.5
        assert not zoom_to_feasible(ax, "x", np.array([0.0, 3.0]))  # feasible designs span the axis
    finally:
        plt.close(fig)

# ---- bad inputs: one line, exit 2, nothing written ------------------------------------------------



def run_bad(argv: list[str], capsys, expected: str) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err, err


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(search, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    journal_only = tmp_path / "stopped"
    journal_only.mkdir()
    (journal_only / "optuna.journal").write_text("")
    plain = tmp_path / "plain"
    plain.mkdir()
    pd.DataFrame({"a": [1.0]}).to_parquet(plain / "front.parquet")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "front.parquet").write_text("not parquet")
    before = sorted(p.name for p in search.iterdir())
    cases = [
        ([str(tmp_path / "missing")], "no such results folder or study file"),
        ([str(tmp_path / "missing.yaml")], "no such results folder or study file"),
        (["no-such-study"], "unknown name"),
        ([str(empty)], "not a study output folder"),
        ([str(journal_only)], "no results yet"),
        ([str(plain)], "no dse.objectives"),
        ([str(broken)], "cannot read table"),
        ([str(search), "-o", str(tmp_path / "none" / "r.html")], "folder does not exist"),
        ([str(search), "-o", str(tmp_path)], "is a folder"),
        ([str(search), "-o", str(read_only_folder(tmp_path) / "r.html")], "not writable"),
        ([str(search), "--top", "0"], "must be >= 1"),
    ]
    for argv, expected in cases:
        run_bad(["report", *argv], capsys, expected)
    for folder in (empty, journal_only, plain, broken):
        assert not (folder / "report.html").exists()
    assert sorted(p.name for p in search.iterdir()) == before
    assert not (tmp_path / "none").exists()


def test_load_report_accepts_a_file_in_the_folder(search):
    data = load_report(search / "front.parquet")
    assert data.folder == search and data.study is not None and not data.notes
    assert data.units["decode_tokens_per_s"] == "token/s"
