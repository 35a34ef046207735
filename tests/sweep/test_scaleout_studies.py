"""The scale-out studies (issue 11 item 4) load, and their headlines (docs/scaleout.md) hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dse.spec.study import load_study

ROOT = Path(__file__).resolve().parents[2]


def _tables():
    spec = importlib.util.spec_from_file_location("scaleout_tables", ROOT / "docs" / "scaleout_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tables():
    return _tables()


@pytest.fixture(scope="module")
def dense(tables):
    return tables.grid("scaleout-llama3-70b")


@pytest.mark.parametrize("name", ["scaleout-llama3-70b", "scaleout-mixtral"])
def test_studies_load(name):
    st = load_study(name)
    assert {k.name for k in st.space.knobs} >= {"platform", "tp", "pp", "ep", "micro_batches", "batch"}
    assert any(c.metric == "n_devices" for c in st.constraints)


def test_physical_filter(dense):
    assert (dense["n_devices"] <= 8).all() and (dense["g_memory_bytes"] <= 0).all()
    assert (dense["batch"] % (dense["ep"] * dense["micro_batches"]) == 0).all()


def test_tp8_wins_decode_on_nvswitch(dense):
    for batch in (1, 8, 64):
        g = dense[(dense["platform"] == "hgx-h100-8") & (dense["batch"] == batch)]
        best = g.loc[g["decode_tokens_per_s"].idxmax()]
        assert (best.tp, best.pp) == (8, 1)


def test_pp_never_beats_tp_on_decode_but_does_on_slow_link_prefill(tables, dense):
    table = tables.tp_vs_pp(dense)
    tp_dec = table["decode tok/s tp / pp (mb)"].str.split(" / ").str[0].astype(float)
    pp_dec = table["decode tok/s tp / pp (mb)"].str.split(" / ").str[1].str.split(" ").str[0].astype(float)
    assert (pp_dec < tp_dec).all()
    ttft = table["TTFT s tp / pp"].str.split(" / ", expand=True).astype(float)
    l4 = (table["system"] == "l4-pcie-8") & (table["batch"] == 64) & (table["n"] == 8)
    assert (ttft.loc[l4, 1] < ttft.loc[l4, 0]).all()  # PP's prefill beats TP's over PCIe
    h100 = (table["system"] == "hgx-h100-8") & (table["batch"] == 8)
    assert (ttft.loc[h100, 0] < ttft.loc[h100, 1]).all()  # not over NVSwitch
