"""A design slowed down to its power cap draws exactly ``tdp_w``: it meets ``decode_power_w <= tdp_w``.

Computed as decode energy / decode time, a capped design's power read up to 2 ulps above the cap
(15.000000000000002 W on the 15 W edge SoC: 24,230 of the edge space's 115,200 designs), and the
``edge-7b-15w`` study's ``decode_power_w <= 15`` constraint dropped two front points by 2e-15 W.
"""

from __future__ import annotations

import numpy as np
import pytest

import dse
from dse.model.pipeline import evaluate_arrays
from dse.results.tables import design_table
from dse.spec.presets import load_model, load_platform
from dse.spec.registry import KNOB_DEFAULTS


def test_edge_designs_at_the_cap_meet_the_power_constraint():
    """The two W8A8 QuaRot designs (two LPDDR5X interfaces, 5 TFLOP/s + 4x or 2x INT8, KV8 or KV4,
    batch 16) that read 15.000000000000002 W are at the cap and feasible."""
    study = dse.load_study("studies/edge-7b-15w.yaml")
    cats = study.space.categories()
    two = np.ones(2)
    params = {"mem_technology": two * cats["mem_technology"].index("lpddr5x"), "n_mem_units": 2 * two,
              "flop16_peak_flop_per_s": 5e12 * two, "flop8_x": np.array([4.0, 2.0]), "batch": 16 * two,
              "w_bits": 8 * two, "a_bits": 8 * two, "kv_bits": np.array([8.0, 4.0]),
              "quant_method": two * cats["quant_method"].index("quarot"), "nm_sparse": 0 * two}
    df = design_table(study, params)
    assert (df["decode_power_w"] == 15.0).all(), df["decode_power_w"].tolist()
    assert (df["c_decode_power_w_max"] <= 0).all()
    assert df["feasible"].all()


@pytest.mark.parametrize("parallel", [False, True])
def test_capped_power_is_never_above_tdp(parallel):
    """Random one-device designs under tight caps, dp replicas of them: decode power <= dp x TDP
    exactly, equal to it where capped; ``parallel``: the same through the parallel path (a batch
    where some designs shard, tp = 2, checked on the others)."""
    rng = np.random.default_rng(0)
    n = 4096
    hw = {**load_platform("jetson-agx-orin-64gb").fields}
    m = load_model("llama-2-7b").fields
    tdp = rng.choice([7.0, 10.0, 15.0, 15.3, 30.0, 41.7, 60.0], n)
    static = tdp * rng.uniform(0.05, 0.9, n)
    k = {**KNOB_DEFAULTS, "batch": rng.choice([1.0, 4.0, 16.0, 64.0], n), "w_bits": rng.choice([4.0, 8.0, 16.0], n),
         "a_bits": rng.choice([8.0, 16.0], n), "kv_bits": rng.choice([4.0, 8.0, 16.0], n),
         "in_len": rng.integers(16, 2048, n).astype(float), "out_len": rng.integers(16, 512, n).astype(float),
         "dp": rng.choice([1.0, 2.0, 3.0], n), "tp": rng.choice([1.0, 2.0], n) if parallel else 1.0}
    out = evaluate_arrays(m, k, {**hw, "tdp_w": tdp, "static_power_w": static})
    one = k["tp"] == 1.0
    cap = (k["dp"] * tdp)[one]
    assert np.all(out["decode_power_w"][one] <= cap)
    at_cap = out["decode_power_w"][one] == cap
    assert 0.1 < at_cap.mean() < 0.9  # both regimes are exercised
