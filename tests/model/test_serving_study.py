"""The datacenter serving studies (issue 12 item 5) load, and their headlines (docs/serving.md
section 7) hold on slices of the space around the fronts (the exhaustive runs take ~4-5 s each:
``python -m dse run studies/datacenter-serving.yaml``)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import dse
from dse.results.pareto import pareto_mask
from dse.spec.study import load_study

PLATFORMS = ("hgx-h100-8", "hgx-h200-8", "hgx-a100-8", "mi300x-8", "hls-gaudi2-8", "l4-pcie-8", "rtx4090-pcie-8",
             "rtxpro6000-pcie-8", "tpu-v5e-pod")
SPLITS = ((1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4), (4, 1), (4, 2), (8, 1))  # (tp, pp), tp x pp <= 8
GOODPUT, TOK_J, USD, PPL, TPOT, COST = (("goodput_req_per_s", True), ("serving_tokens_per_j", True),
                                        ("serving_usd_per_mtoken", False), ("ppl_delta", False),
                                        ("tpot_p90_s", False), ("system_cost_usd", False))
OBJECTIVES = {"datacenter-serving": [GOODPUT, TOK_J, USD, PPL, COST],
              "datacenter-serving-tight": [GOODPUT, TOK_J, USD, PPL, COST],
              "datacenter-serving-interactive": [GOODPUT, TPOT, TOK_J, USD, PPL]}
BOX = [GOODPUT, TOK_J, USD, PPL]  # the serving objectives alone: which box wins, whatever it costs


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_studies_load(name):
    st = load_study(name)
    assert st.space.serves
    assert {k.name for k in st.space.knobs} >= {"platform", "tp", "pp", "token_budget", "max_seqs", "w_bits",
                                                 "kv_bits", "quant_method", "spec_len"}
    assert [tuple(o) for o in st.objectives] == OBJECTIVES[name]
    assert any(c.metric == "ppl_delta" and c.max == 0.5 for c in st.constraints)


def test_smoothquant_and_fp8_are_per_channel():
    """The space reads SmoothQuant's quality rows (and FP8's copies of them) at their own granularity
    (per-channel weights, w_group_size 0) and GPTQ/AWQ's at group 128: one setting per method, no
    extra designs."""
    space = load_study("datacenter-serving").space
    assert space.size == 1_741_824
    index = np.arange(0, space.size, 997)
    cols = space.columns_at(index)
    method = space.decode({"quant_method": cols["quant_method"]})["quant_method"]
    assert set(method) == {"gptq", "awq", "smoothquant", "fp8"}
    assert np.all(cols["w_group_size"] == np.where(np.isin(method, ["smoothquant", "fp8"]), 0.0, 128.0))
    assert int(np.count_nonzero(space.distinct_at(np.arange(space.size)))) == 1_088_640


def _evaluate(rows: list[dict], ttft_slo_s: float, tpot_slo_s: float, method: str = "smoothquant") -> pd.DataFrame:
    """W8A8 designs of ``method`` (SmoothQuant: INT8 GEMMs, or FP8; per-channel, as the space sets
    them) at the given SLOs: the feasible ones."""
    d = pd.DataFrame(rows).assign(w_bits=8.0, a_bits=8.0, quant_method=method, w_group_size=0.0,
                                  workload="splitwise-conv", ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, batch=1.0,
                                  in_len=1024.0, out_len=256.0)
    out = pd.concat([d, dse.evaluate(d, model="llama-3-70b").drop(columns=d.columns, errors="ignore")], axis=1)
    ok = ((out["ppl_delta"] <= 0.5) & (out["goodput_req_per_s"] >= 0.001) & (out["g_memory_bytes"] <= 0)
          & (out["c_link"] <= 0))
    return out[ok]


def _slice(ttft_slo_s: float, tpot_slo_s: float, budgets=(4096, 8192, 16384), seqs=(512, 1024, 2048),
           method: str = "smoothquant") -> pd.DataFrame:
    """Every system and (tp, pp) split (dp = 8 / (tp pp)) with W8A8 of ``method``, KV 4 or 16 bit, the
    given token budgets and sequence limits, with and without 2 draft tokens: the feasible designs."""
    rows = [dict(platform=p, tp=tp, pp=pp, dp=8 // (tp * pp), token_budget=tb, max_seqs=ms, kv_bits=kv, spec_len=sl)
            for p, (tp, pp), tb, ms, kv, sl in itertools.product(PLATFORMS, SPLITS, budgets, seqs, (4, 16), (0, 2))]
    return _evaluate(rows, ttft_slo_s, tpot_slo_s, method)


def _front(df: pd.DataFrame, objectives) -> pd.DataFrame:
    return df[pareto_mask(df[[m for m, _ in objectives]].to_numpy(float), [up for _, up in objectives])]


def _best(df: pd.DataFrame, metric: str, largest: bool = True) -> pd.Series:
    return df.loc[df[metric].idxmax() if largest else df[metric].idxmin()]


def test_chat_tier_headline():
    """TTFT <= 2 s, TPOT <= 100 ms, on SmoothQuant W8A8 (an INT8 engine; the study's front is FP8's,
    test_fp8_headlines). The H100 and H200 presets charge INT8 weight GEMMs (SmoothQuant
    W8A8: every design that can reach a front) 1.17x the FP8 energy (e4bafbe; 1.36 from f2c3c5b, when
    the MI300X box led by ~14%): HGX H200 (tp 1 x pp 2) serves the most requests/s (~38, at its
    power-capped capacity), the MI300X box (tp 1, 8 replicas, ratio 1) within 1% of it and HGX H100
    within 5%; the RTX PRO 6000 box (tp 1) the cheapest and most frugal token. Gaudi 2, A100 follow
    at lower goodput. Pipelines rescue the
    RTX 4090 box (all-reduces through host memory) and lose on the prompt-heavy trace where tensor
    parallelism is cheap (Gaudi 2). Quality: a 4-bit KV cache (ppl_delta +0.125, the measured
    W8A8 KV8 row) buys ~8% goodput and ~17% lower $/token over the lossless W8A8 KV16 designs, so
    the front holds both; the lossless design serving the most is the H200 box's too (the MI300X box's
    before decode_attn_energy_ratio, which charges the decode attention of every GPU preset 1.44x)."""
    df = _slice(2.0, 0.1)
    cheap, frugal, most = (_best(df, "serving_usd_per_mtoken", False), _best(df, "serving_tokens_per_j"),
                           _best(df, "goodput_req_per_s"))
    assert (cheap["platform"], cheap["tp"], cheap["pp"]) == ("rtxpro6000-pcie-8", 1, 1)
    assert frugal["platform"] == "rtxpro6000-pcie-8"
    assert (most["platform"], most["tp"], most["pp"]) == ("hgx-h200-8", 1, 2)
    per_platform = df.groupby("platform")["goodput_req_per_s"].max()
    assert per_platform["hgx-h200-8"] / per_platform["hgx-h100-8"] == pytest.approx(1.0, abs=0.05)
    assert per_platform["mi300x-8"] / per_platform["hgx-h200-8"] == pytest.approx(1.0, abs=0.01)
    assert per_platform["mi300x-8"] > per_platform["hls-gaudi2-8"] > per_platform["hgx-a100-8"]
    split = df.groupby(["platform", df["pp"] > 1])["goodput_req_per_s"].max()
    assert split["rtx4090-pcie-8", True] > 4.0 * split["rtx4090-pcie-8", False]
    assert split["hls-gaudi2-8", False] > split["hls-gaudi2-8", True]
    for platform in ("hgx-h100-8", "hgx-h200-8"):  # pp 2 gains a few % on the NVSwitch boxes
        assert 1.0 < split[platform, True] / split[platform, False] < 1.08, platform
    assert np.all(per_platform[["l4-pcie-8", "rtx4090-pcie-8"]] < 0.5 * per_platform["hgx-h100-8"])
    # the quality axis: exactly two levels of W8A8, lossless KV16 and the measured KV-8 step
    assert set(df["ppl_delta"].round(6)) == {0.0, 0.125}
    assert np.all(df.loc[df["kv_bits"] == 16, "ppl_delta"] == 0.0)
    by_q = df.groupby(df["ppl_delta"] > 0)
    assert most["ppl_delta"] == pytest.approx(0.125)
    assert most["goodput_req_per_s"] == pytest.approx(38.0, rel=0.03)
    assert most["goodput_req_per_s"] > 0.999 * most["serving_capacity_req_per_s"]  # capacity-bound (1.36: SLO-bound)
    lossless = _best(df[df["ppl_delta"] == 0], "goodput_req_per_s")
    assert (lossless["platform"], lossless["tp"], lossless["pp"]) == ("hgx-h200-8", 1, 2)
    assert 1.03 < most["goodput_req_per_s"] / lossless["goodput_req_per_s"] < 1.15
    assert by_q["serving_usd_per_mtoken"].min()[False] > 1.05 * by_q["serving_usd_per_mtoken"].min()[True]
    front = _front(df, BOX)
    assert set(front["ppl_delta"].round(6)) == {0.0, 0.125}
    assert set(front["platform"]) == {"hgx-h100-8", "hgx-h200-8", "rtxpro6000-pcie-8"}  # and the MI300X box's
    assert len(front.drop_duplicates([m for m, _ in BOX])) == 6  # 7 with the MI300X box's points


def test_fp8_headlines():
    """FP8 (in the space since fp8_native): the Hopper boxes run W8A8 on FP8, which the INT8 ratio
    (1.17) does not charge, and take both fronts; on the chat tier HGX H200 (tp 1 x pp 2) serves the
    most (~44 req/s, at its power-capped capacity, against ~38 on SmoothQuant), HGX H100 within 1% of
    it with the most tokens/J and the cheapest token; on the tight tier the H100 at tp 2 leads
    (pipelined for the most tokens/J). Where the 8-bit units run both formats alike (MI300X, ratio
    1) FP8 equals SmoothQuant; the A100 has no FP8 units and runs FP8 as W8A16: about half its
    INT8 goodput. On these objectives alone the studies' fronts are all H100/H200 FP8 points (chat
    9, tight 3; with the purchase cost too, test_purchase_cost_objective)."""
    chat, chat_int8 = _slice(2.0, 0.1, method="fp8"), _slice(2.0, 0.1)
    most = _best(chat, "goodput_req_per_s")
    assert (most["platform"], most["tp"], most["pp"]) == ("hgx-h200-8", 1, 2)
    assert most["goodput_req_per_s"] == pytest.approx(44.1, rel=0.03)
    assert most["goodput_req_per_s"] > 0.999 * most["serving_capacity_req_per_s"]
    for metric, largest in (("serving_tokens_per_j", True), ("serving_usd_per_mtoken", False)):
        best = _best(chat, metric, largest)
        assert (best["platform"], best["tp"], best["pp"]) == ("hgx-h100-8", 1, 2), metric
    per = chat.groupby("platform")["goodput_req_per_s"].max()
    per_int8 = chat_int8.groupby("platform")["goodput_req_per_s"].max()
    assert 0.99 < per["hgx-h100-8"] / per["hgx-h200-8"] < 1.0
    assert 1.10 < per["hgx-h200-8"] / per_int8["hgx-h200-8"] < 1.22  # the INT8 energy ratio's cost
    assert per["mi300x-8"] == pytest.approx(per_int8["mi300x-8"], rel=1e-12)
    assert 0.4 < per["hgx-a100-8"] / per_int8["hgx-a100-8"] < 0.7  # W8A16 on the A100
    front = _front(chat, BOX)
    assert set(front["platform"]) == {"hgx-h100-8", "hgx-h200-8"}
    tight = _slice(0.5, 0.04, budgets=(2048, 4096, 8192, 16384), seqs=(128, 512, 1024, 2048), method="fp8")
    best = _best(tight, "goodput_req_per_s")
    assert (best["platform"], best["tp"], best["pp"]) == ("hgx-h100-8", 2, 1)
    assert best["goodput_req_per_s"] == pytest.approx(35.6, rel=0.03)
    assert (_best(tight, "serving_tokens_per_j")[["platform", "tp", "pp"]] == ["hgx-h100-8", 2, 2]).all()


def test_purchase_cost_objective():
    """With the box's purchase cost an objective too (chat and tight tiers), each budget gets its best
    box: the chat front runs from the H200 box ($75K) down to the L4 box ($34K, the cheapest), the tight
    front from the H200 and H100 boxes down to the L4 box, A100 and Gaudi 2 boxes between (their INT8
    units hold at tight SLOs); the MI300X box ($103K, dearest) serves less than the H200's and H100's
    and is on neither. Slices of FP8 and SmoothQuant W8A8 designs; the exhaustive studies' fronts hold
    the same boxes (docs/serving.md section 7)."""
    fronts = {}
    for tier, slo, kw in (("datacenter-serving", (2.0, 0.1), {}),
                          ("datacenter-serving-tight", (0.5, 0.04),
                           dict(budgets=(2048, 4096, 8192, 16384), seqs=(128, 512, 1024, 2048)))):
        df = pd.concat([_slice(*slo, method="fp8", **kw), _slice(*slo, **kw)], ignore_index=True)
        fronts[tier] = _front(df, OBJECTIVES[tier])
        assert _best(fronts[tier], "system_cost_usd", False)["platform"] == "l4-pcie-8", tier
        assert len(fronts[tier].drop_duplicates([m for m, _ in OBJECTIVES[tier]])) >= 12, tier
    assert set(fronts["datacenter-serving"]["platform"]) == {"hgx-h200-8", "hgx-h100-8", "rtxpro6000-pcie-8",
                                                             "tpu-v5e-pod", "rtx4090-pcie-8", "l4-pcie-8"}
    assert set(fronts["datacenter-serving-tight"]["platform"]) == {"hgx-h200-8", "hgx-h100-8", "hls-gaudi2-8",
                                                                   "hgx-a100-8", "rtxpro6000-pcie-8", "tpu-v5e-pod",
                                                                   "l4-pcie-8"}


def test_tight_tier_headline():
    """TTFT <= 0.5 s, TPOT <= 40 ms, 2 draft tokens, on SmoothQuant W8A8 (INT8): HGX H200 at tp 2 x pp 2 (2
    replicas) gives the most requests/s, HGX H100 at tp 2 x pp 2 the most tokens/J and the cheapest
    token (at 1.36, before e4bafbe, the MI300X box at tp 1 gave the most requests/s and tokens/J).
    The front is those two designs, each with KV 4 bit (more goodput) and KV 16 bit (lossless; two
    H100 KV 16 settings within 0.1% of each other, 5 points).
    Since f2c3c5b (INT8 GEMM energy) the H100's and H200's tp-only designs run deeper into the power
    cap and tp 2 x pp 2 serves more on both (before: tight TTFT left no room for a pipeline's
    prefill stall on the H100); on the A100, Gaudi 2, RTX PRO and MI300X boxes tp only still wins.
    The slice (token budgets 2,048-16,384, 128-2,048 sequences) held the exhaustive study's front
    before FP8."""
    df = _slice(0.5, 0.04, budgets=(2048, 4096, 8192, 16384), seqs=(128, 512, 1024, 2048))
    for metric, largest, platform in (("goodput_req_per_s", True, "hgx-h200-8"),
                                      ("serving_tokens_per_j", True, "hgx-h100-8"),
                                      ("serving_usd_per_mtoken", False, "hgx-h100-8")):
        best = _best(df, metric, largest)
        assert (best["platform"], best["tp"], best["pp"], best["spec_len"]) == (platform, 2, 2, 2), metric
    split = df.groupby(["platform", df["pp"] > 1])["goodput_req_per_s"].max()
    for platform in ("hgx-a100-8", "hls-gaudi2-8", "rtxpro6000-pcie-8", "mi300x-8"):
        assert split[platform, False] > split[platform, True], platform
    assert 1.0 < split["hgx-h100-8", True] / split["hgx-h100-8", False] < 1.08
    assert 1.04 < split["hgx-h200-8", True] / split["hgx-h200-8", False] < 1.15
    front = _front(df, BOX)
    assert len(front.drop_duplicates([m for m, _ in BOX])) == 5
    assert set(front["ppl_delta"].round(6)) == {0.0, 0.125}
    assert set(zip(front["platform"], front["tp"], front["pp"], strict=True)) == {("hgx-h200-8", 2, 2),
                                                                                   ("hgx-h100-8", 2, 2)}
    g = front[front["platform"] == "hgx-h200-8"].groupby("kv_bits")["goodput_req_per_s"].max()
    assert g[4] == pytest.approx(32.0, rel=0.03) and 1.02 < g[4] / g[16] < 1.10


def test_interactive_curve():
    """Chat SLOs, TPOT p90 minimised too (KV 4 bit, spec 2/4, small sequence limits and token
    budgets), on SmoothQuant W8A8 (INT8; with FP8 in the space the study's curve is the H100's and
    H200's, docs/serving.md section 7): goodput falls as the speed per user rises, from ~38 req/s
    at ~97 ms (H200 tp 1 x pp 2, at its power-capped capacity) to ~8 req/s at 7 ms (H200 tp 8, 4 draft tokens); the
    tensor-parallel degree rises along the curve. Since f2c3c5b (INT8 GEMM energy on the H100 and
    H200) the MI300X and RTX PRO 6000 boxes are on it too (before: only the H100 and H200); at the
    ratio 1.36 the MI300X gave the most goodput down to 20 ms, at 1.17 (e4bafbe) only at 60 ms:
    the H200 leads at 100 ms, the H100 (tp 2) from 40 ms."""
    rows = [dict(platform=p, tp=tp, pp=pp, dp=8 // (tp * pp), token_budget=tb, max_seqs=ms, kv_bits=4, spec_len=sl)
            for p, (tp, pp), tb, ms, sl in itertools.product(PLATFORMS, SPLITS, (256, 1024, 4096, 16384),
                                                             (16, 32, 64, 128, 512, 1024), (2, 4))]
    df = _evaluate(rows, 2.0, 0.1)
    front = _front(df, [GOODPUT, TPOT, TOK_J, USD]).sort_values("tpot_p90_s")
    assert len(front.drop_duplicates(["goodput_req_per_s", "tpot_p90_s"])) >= 30
    assert set(front["platform"]) == {"hgx-h100-8", "hgx-h200-8", "mi300x-8", "rtxpro6000-pcie-8"}
    fastest, most = front.iloc[0], _best(front, "goodput_req_per_s")
    assert (fastest["platform"], fastest["tp"], fastest["spec_len"]) == ("hgx-h200-8", 8, 4)
    assert fastest["tpot_p90_s"] < 0.008 and fastest["goodput_req_per_s"] < 0.25 * most["goodput_req_per_s"]
    assert (most["platform"], most["tp"], most["pp"]) == ("hgx-h200-8", 1, 2)
    assert 0.095 < most["tpot_p90_s"] < 0.102 and most["goodput_req_per_s"] > 0.999 * most["serving_capacity_req_per_s"]
    assert most["goodput_req_per_s"] == pytest.approx(38.0, rel=0.03)

    def goodput_within(tpot_s):
        return front.loc[front["tpot_p90_s"] <= tpot_s, "goodput_req_per_s"].max()

    assert goodput_within(0.02) == pytest.approx(24.6, rel=0.03)   # 50 tokens/s per user: ~65% of the most
    assert goodput_within(0.04) == pytest.approx(31.5, rel=0.03)   # 25 tokens/s per user
    w = front[front["tpot_p90_s"] <= 0.06]
    assert w.loc[w["goodput_req_per_s"].idxmax(), "platform"] == "mi300x-8"
    w = front[front["tpot_p90_s"] <= 0.04]
    assert (w.loc[w["goodput_req_per_s"].idxmax(), ["platform", "tp"]] == ["hgx-h100-8", 2]).all()
    assert np.all(front.loc[front["tpot_p90_s"] < 0.008, "tp"] >= 4)
    assert np.all(front.loc[front["tpot_p90_s"] > 0.08, "tp"] == 1)
