"""Golden test: ``dse validate --set serving`` (validation/serving_published.csv, issue 12) predicts
every published serving row, TP1 on device presets and the TP2/TP4 and pipeline (PP1-PP8 over
PCIe) rows on system presets with links, and its errors stay where they were pinned.

The presets are uncalibrated for serving and the published stacks (TensorRT-LLM, vLLM) carry
host overheads the GPU model leaves out, so the errors are large and signed (model optimistic):
``docs/serving.md`` section 4 gives each point's reasons. Tolerances: the pinned median and max
|error| of each group, +-3 points (energy/power constants of the presets move the power-capped
rows a little) so that a physics change that moves them is seen and re-pinned on purpose; the
rank order of the 52 TensorRT-LLM points is asserted as a claim (Spearman >= 0.95). The RTX PRO
6000 rows (NVFP4, TP1 x PP1-8 on PCIe) are the most optimistic: the efficiencies are transferred
from BF16 H100 GEMMs, and the model's pipelines scale almost linearly to 8 stages where the
published ones reach 3.6-4.6x (docs/serving.md section 4).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from dse.validation.validate import load_set, validate

SLACK = 0.03
# group -> (rows, median |error|, max |error|) when pinned (error = predicted / published - 1)
PINNED = {
    "trtllm-tp1": (30, 0.090, 0.190),  # 0.134 / 0.239 before decode_attn_energy_ratio; 0.162 / 0.384 before FP8
    # cost 0.568 of BF16 per FLOP (flop_energy_fixed_frac)
    "trtllm-tp2": (10, 0.190, 0.243),  # 0.221 / 0.348 before the ratio, 0.289 / 0.386 before the FP8 energy;
    # 0.344 / 0.429 before the 16-bit residual stream
    "trtllm-rtx-pp1": (3, 0.465, 0.519),
    "trtllm-rtx-pp": (9, 0.597, 2.149),  # 0.753 / 1.675 before the pipeline stall and per-pass launches
    "vllm-tp4": (3, 2.465, 2.665),  # 2.533 / 2.737 before decode_attn_energy_ratio
    "vllm-light-tpot": (1, 0.454, 0.454),
}


@pytest.fixture(scope="module")
def comparisons() -> pd.DataFrame:
    rows = load_set("serving")
    report = validate(rows)
    assert report.skipped.empty, report.skipped
    comp = report.comparisons.copy()
    stack = rows.loc[comp["row"], "stack"].to_numpy()
    trt = pd.Series(stack).str.startswith("TensorRT").to_numpy()
    rtx = (comp["platform"] == "rtxpro6000-pcie-8").to_numpy()
    pp = comp["pp"].fillna(1.0).to_numpy()
    comp["group"] = np.where(rtx, np.where(pp > 1, "trtllm-rtx-pp", "trtllm-rtx-pp1"),
                             np.where(trt, np.where(comp["tp"] == 1, "trtllm-tp1", "trtllm-tp2"),
                                      np.where(comp["metric"] == "tpot_p90_s", "vllm-light-tpot", "vllm-tp4")))
    comp["error"] = comp["error_pct"] / 100.0
    return comp


def test_every_published_row_is_predicted(comparisons):
    rows = load_set("serving")
    assert len(rows) == 56 and len(comparisons) == 56
    assert sorted(comparisons["row"]) == list(range(56))
    assert set(comparisons["tp"]) == {1, 2, 4}
    multi = comparisons[comparisons["tp"] > 1]
    assert set(multi["platform"]) == {"hgx-h100-8", "hgx-a100-8"}  # system presets with links
    assert (comparisons["metric"] == "serving_tokens_per_s").sum() == 55
    assert sorted(comparisons["pp"].fillna(1.0).unique()) == [1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize("group", sorted(PINNED))
def test_errors_stay_pinned(comparisons, group):
    n, median, worst = PINNED[group]
    e = np.abs(comparisons.loc[comparisons["group"] == group, "error"].to_numpy())
    assert len(e) == n
    assert np.median(e) == pytest.approx(median, abs=SLACK)
    assert e.max() == pytest.approx(worst, abs=SLACK)


def test_signs_and_ranks(comparisons):
    """The model is optimistic on most TensorRT-LLM rows (host overheads, engine scheduling policy,
    finite runs: none in the model) and on every offline vLLM row, and ranks the 52 TensorRT-LLM
    points as published; it is fast on the light-load TPOT (pre-0.6 vLLM host time). Since
    decode_attn_energy_ratio (PyTorch's FlashAttention-2 decode energy, 1.44x the rule, on every GPU
    preset) 13 of the 52 read slow, 8 of them by 5-11%: the H200's power-capped FP8 rows with long
    outputs, where TensorRT-LLM's own decode-attention kernels seem to cost less than PyTorch's."""
    trt = comparisons[comparisons["group"].str.startswith("trtllm")]
    assert (trt["error"] > -0.12).all() and (trt["error"] > 0.0).mean() >= 0.7
    slow = trt[trt["error"] < -0.05]
    assert set(slow["platform"]) == {"h200-sxm"} and (slow["w_bits"] == 8.0).all()
    assert spearmanr(trt["measured"], trt["predicted"])[0] >= 0.95
    assert (comparisons.loc[comparisons["group"] == "vllm-tp4", "error"] > 1.0).all()
    assert (comparisons.loc[comparisons["group"] == "vllm-light-tpot", "error"] < 0.0).all()
