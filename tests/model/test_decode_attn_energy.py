"""Decode attention's energy over the per-byte and per-FLOP rule (dse.model.power.decode_attn_energy_ratio)
and its fit to the shipped H200 probe (validation/decode_parts_h200.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dse
from dse.explain import explain
from dse.model import power

PROBE = Path(__file__).resolve().parents[2] / "validation" / "decode_parts_h200.csv"


def _measured_over_rule() -> pd.DataFrame:
    """Per probe case: the attention part's energy beyond idle over the rule's for its bytes and FLOPs."""
    hw = dse.load_platform("h200-sxm").fields
    j_byte, j_flop = power.j_per_dram_byte(hw), power.j_per_flop(hw, 16.0)
    df = pd.read_csv(PROBE)
    attn = df[df["part"] == "attn"].copy()
    rows = []
    for _, r in attn.iterrows():
        m = dse.load_model(r["model"]).fields
        layers, b, ctx = r["layers"], r["batch"], r["context"]
        kv_read = 2 * layers * m["n_kv_heads"] * m["head_dim"] * b * ctx * 2
        act = layers * b * m["head_dim"] * (2 * m["n_heads"] + 4 * m["n_kv_heads"]) * 2  # q, o, new K/V
        flop = 4 * layers * m["n_heads"] * m["head_dim"] * b * ctx
        rows.append({"model": r["model"], "batch": b, "rows": m["n_heads"] / m["n_kv_heads"],
                     "ratio": r["dynamic_j"] / ((kv_read + act) * j_byte + flop * j_flop)})
    return pd.DataFrame(rows)


def test_preset_ratio_is_the_probe_fit():
    """h200-sxm's ratio is the median over the grouped-query cases (4 and 8 rows per KV head, batch >= 16,
    where the attention streams at 2.2-3.7 TB/s); one row per KV head (MHA) measures about the quarter of
    the excess that the rule gives it."""
    fit = _measured_over_rule()
    fit = fit[fit["batch"] >= 16]
    grouped, mha = fit[fit["rows"] >= 4], fit[fit["rows"] == 1]
    assert len(grouped) == 8 and len(mha) == 4
    r = dse.load_platform("h200-sxm").fields["decode_attn_energy_ratio"]
    assert r == pytest.approx(float(grouped["ratio"].median()), abs=0.005)
    one_row = 1.0 + (r - 1.0) / power.DECODE_ATTN_FULL_ROWS
    assert one_row == pytest.approx(float(mha["ratio"].median()), abs=0.05)
    assert mha["ratio"].max() < grouped["ratio"].min()  # the row dependence is in the data, not assumed


def test_ratio_scales_with_query_rows_up_to_four():
    hw = {"decode_attn_energy_ratio": 1.44}
    mha, gqa4, gqa8 = ({"n_heads": 32.0, "n_kv_heads": kv} for kv in (32.0, 8.0, 4.0))
    assert power.decode_attn_energy_ratio(hw, mha, 1.0) == pytest.approx(1.11)
    assert power.decode_attn_energy_ratio(hw, mha, 3.0) == pytest.approx(1.33)  # verifying 2 draft tokens
    assert power.decode_attn_energy_ratio(hw, gqa4, 1.0) == pytest.approx(1.44)
    assert power.decode_attn_energy_ratio(hw, gqa8, np.array([1.0, 5.0])) == pytest.approx([1.44, 1.44])
    assert power.decode_attn_energy_ratio({"decode_attn_energy_ratio": 1.0}, gqa4, 1.0) == 1.0


def test_only_decode_attention_energy_moves():
    """On an H200 below its power cap the ratio adds (ratio - 1) x decode attention's rule energy to the
    decode phase and changes no time; prefill is untouched."""
    design = {"batch": 8, "in_len": 2048, "out_len": 128}
    plain = dse.load_platform("h200-sxm").with_fields(decode_attn_energy_ratio=1.0)
    base = dse.evaluate(design, model="llama-3-8b", platform=plain).iloc[0]
    new = dse.evaluate(design, model="llama-3-8b", platform="h200-sxm").iloc[0]
    assert new["decode_power_w"] < 700.0  # not capped: the time is the same
    assert new["tpot_s"] == base["tpot_s"] and new["ttft_s"] == base["ttft_s"]
    rows = explain("llama-3-8b", plain, **design).set_index(["phase", "operator"])
    attn_j = rows.loc[("decode", "attn"), "energy_j"]
    decode_s = base["tpot_s"] * design["out_len"]
    added_w = (new["decode_power_w"] - base["decode_power_w"]) * decode_s
    assert added_w == pytest.approx(0.44 * attn_j, rel=1e-9)
