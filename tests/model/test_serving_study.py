"""The datacenter serving studies (issue 12 item 5) load, and their headlines (docs/serving.md
section 7) hold on a slice of the space around the fronts (the exhaustive runs take ~7 s each:
``python -m dse run studies/datacenter-serving.yaml``)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import dse
from dse.spec.study import load_study

PLATFORMS = ("hgx-h100-8", "hgx-h200-8", "hgx-a100-8", "mi300x-8", "hls-gaudi2-8", "l4-pcie-8", "rtx4090-pcie-8",
             "rtxpro6000-pcie-8", "tpu-v5e-pod")
SPLITS = ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4), (4, 1), (4, 2), (8, 1))  # (tp, pp), tp x pp <= 8


@pytest.mark.parametrize("name", ["datacenter-serving", "datacenter-serving-tight"])
def test_studies_load(name):
    st = load_study(name)
    assert st.space.serves
    assert {k.name for k in st.space.knobs} >= {"platform", "tp", "pp", "token_budget", "max_seqs", "w_bits",
                                                 "kv_bits", "quant_method", "spec_len"}
    assert [o[0] for o in st.objectives] == ["goodput_req_per_s", "serving_tokens_per_j", "serving_usd_per_mtoken"]
    assert any(c.metric == "ppl_delta" and c.max == 0.5 for c in st.constraints)


def _slice(ttft_slo_s: float, tpot_slo_s: float) -> pd.DataFrame:
    """Every system and (tp, pp) split (dp = 8 / (tp pp)) with FP8 weights and activations, KV 4/8
    bit, three token budgets, three sequence limits, with and without 2 draft tokens: the feasible
    designs."""
    rows = [dict(platform=p, tp=tp, pp=pp, dp=8 // (tp * pp), token_budget=tb, max_seqs=ms, kv_bits=kv, spec_len=sl)
            for p, (tp, pp), tb, ms, kv, sl in itertools.product(PLATFORMS, SPLITS, (4096, 8192, 16384),
                                                                 (512, 1024, 2048), (4, 8), (0, 2))]
    d = pd.DataFrame(rows).assign(w_bits=8.0, a_bits=8.0, quant_method="smoothquant", workload="splitwise-conv",
                                  ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, batch=1.0, in_len=1024.0, out_len=256.0)
    out = pd.concat([d, dse.evaluate(d, model="llama-3-70b").drop(columns=d.columns, errors="ignore")], axis=1)
    ok = ((out["ppl_delta"] <= 0.5) & (out["goodput_req_per_s"] >= 0.001) & (out["g_memory_bytes"] <= 0)
          & (out["c_link"] <= 0))
    return out[ok]


def _best(df: pd.DataFrame, metric: str, largest: bool = True) -> pd.Series:
    return df.loc[df[metric].idxmax() if largest else df[metric].idxmin()]


def test_chat_tier_headline():
    """TTFT <= 2 s, TPOT <= 100 ms: HGX H100 at tp 1 x pp 2 (4 replicas) is cheapest per token and
    most tokens per joule, within a few % of the most requests/s (H200 at tp 1 x pp 2); MI300X,
    Gaudi 2, A100 follow at lower goodput. Pipelines rescue the RTX 4090 box (all-reduces through
    host memory) and lose on the prompt-heavy trace where tensor parallelism is cheap (Gaudi 2)."""
    df = _slice(2.0, 0.1)
    cheap, frugal, most = (_best(df, "serving_usd_per_mtoken", False), _best(df, "serving_tokens_per_j"),
                           _best(df, "goodput_req_per_s"))
    assert (cheap["platform"], cheap["tp"], cheap["pp"]) == ("hgx-h100-8", 1, 2)
    assert frugal["platform"] == "hgx-h100-8" and most["platform"] in ("hgx-h200-8", "hgx-h100-8")
    per_platform = df.groupby("platform")["goodput_req_per_s"].max()
    assert per_platform["hgx-h200-8"] / per_platform["hgx-h100-8"] == pytest.approx(1.0, abs=0.05)
    assert per_platform["mi300x-8"] > per_platform["hls-gaudi2-8"] > per_platform["hgx-a100-8"]
    split = df.groupby(["platform", df["pp"] > 1])["goodput_req_per_s"].max()
    assert split["rtx4090-pcie-8", True] > 4.0 * split["rtx4090-pcie-8", False]
    assert split["hls-gaudi2-8", False] > split["hls-gaudi2-8", True]
    assert np.all(per_platform[["l4-pcie-8", "rtx4090-pcie-8"]] < 0.5 * per_platform["hgx-h100-8"])


def test_tight_tier_headline():
    """TTFT <= 0.5 s, TPOT <= 40 ms: HGX H100 at tp 2 x 4 with 2 draft tokens wins all three; tight
    TTFT leaves no room for a pipeline's prefill stall on the NVSwitch boxes."""
    df = _slice(0.5, 0.04)
    for metric, largest in (("goodput_req_per_s", True), ("serving_tokens_per_j", True),
                            ("serving_usd_per_mtoken", False)):
        best = _best(df, metric, largest)
        assert (best["platform"], best["tp"], best["pp"], best["spec_len"]) == ("hgx-h100-8", 2, 1, 2), metric
    split = df.groupby(["platform", df["pp"] > 1])["goodput_req_per_s"].max()
    for platform in ("hgx-h100-8", "hgx-h200-8", "hgx-a100-8"):
        assert split[platform, False] > split[platform, True], platform
