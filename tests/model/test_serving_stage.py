"""The serving stage as wired into the evaluator: names, switches, replicas and flags."""

from __future__ import annotations

import numpy as np
import pytest

import dse
from dse.model import serving_stage
from dse.model.serving_iteration import static_batch_times
from dse.spec.metrics import METRIC_TABLE
from dse.spec.registry import WORKLOADS
from dse.spec.workloads import load_workloads

SERVING = [m.name for m in METRIC_TABLE if m.stage == "serving"]


def test_registry_workloads_match_the_file():
    assert ("none", *load_workloads()) == WORKLOADS


def test_serving_metrics_only_with_a_workload():
    plain = dse.evaluate({"batch": 8}, model="llama-3-8b", platform="h100-sxm")
    assert not set(SERVING) & set(plain.columns)
    served = dse.evaluate({"workload": "sharegpt-vllm-paper"}, model="llama-3-8b", platform="h100-sxm")
    assert set(SERVING) <= set(served.columns)
    forced = dse.Evaluator("llama-3-8b", "h100-sxm", serving=True)({"batch": 8.0})
    assert set(SERVING) <= set(forced)


def test_unknown_workload_is_one_line_error():
    with pytest.raises(dse.SpecError, match="workload: must be one of .*did you mean 'lmsys-chat-1m'"):
        dse.evaluate({"workload": "lmsys-chat"}, model="llama-3-8b", platform="h100-sxm")


@pytest.mark.parametrize("tp", [1, 2])  # tp 2: the replica's link energy is counted once per replica
def test_replicas_scale_rates_and_power_not_latency(tp):
    base = {"workload": "sharegpt-vllm-paper", "arrival_rate_req_per_s": 10.0, "tp": tp}
    one = dse.evaluate({**base, "dp": 1}, model="llama-3-8b", platform="hgx-h100-8").iloc[0]
    two = dse.evaluate({**base, "dp": 2, "arrival_rate_req_per_s": 20.0}, model="llama-3-8b",
                       platform="hgx-h100-8").iloc[0]
    for name in ("serving_tokens_per_s", "goodput_req_per_s", "serving_capacity_req_per_s", "serving_power_w"):
        assert two[name] == pytest.approx(2.0 * one[name], rel=1e-9), name
    for name in ("ttft_p90_s", "tpot_p90_s", "kv_max_seqs", "serving_tokens_per_j"):
        assert two[name] == pytest.approx(one[name], rel=1e-9), name


def test_tensor_parallel_pair_holds_more_kv_and_serves_more():
    df = dse.evaluate({"workload": "sharegpt-vllm-paper", "tp": [1, 2]}, model="llama-3-70b", platform="hgx-h200-8")
    assert df["kv_max_seqs"].iloc[1] > 2.0 * df["kv_max_seqs"].iloc[0]  # weights split: more than twice the room
    assert df["serving_capacity_req_per_s"].iloc[1] > df["serving_capacity_req_per_s"].iloc[0]


@pytest.mark.parametrize(("model", "platform", "design"), [
    ("llama-3-70b", "hgx-h100-8", {"pp": [2.0, 4.0, 8.0]}),
    ("llama-3-70b", "rtxpro6000-pcie-8", {"pp": [2.0, 4.0, 8.0], "w_bits": 4.0, "a_bits": 4.0, "kv_bits": 8.0}),
    ("mixtral-8x7b", "hgx-h100-8", {"pp": [2.0, 2.0, 4.0], "tp": [2.0, 1.0, 2.0], "ep": [1.0, 2.0, 1.0]}),
])
def test_pipeline_rounds_rebuild_the_static_pipeline_decode(monkeypatch, model, platform, design):
    """pp virtual engines: a round's coefficients rebuild the static pipeline's decode step with
    micro_batches = pp from above, by at most (pp - 1) LM-head passes or the sends (here < 0.1 %);
    a burst at t = 0 pays the pipeline fill in the static model only (the round is the steady state)."""
    got = {}
    real = serving_stage.serving_metrics

    def spy(c, w, s):
        got.update(c=c)
        return real(c, w, s)

    monkeypatch.setattr(serving_stage, "serving_metrics", spy)
    batch = np.array([8.0, 8.0, 64.0])
    df = dse.evaluate({**design, "micro_batches": design["pp"], "workload": ["none"] * 3, "batch": batch,
                       "in_len": 700.0, "out_len": 50.0}, model=model,
                      platform=platform)
    st = static_batch_times(got["c"], batch, 700.0, 50.0)
    ratio = st["tpot_s"] / df["tpot_s"].to_numpy()
    assert np.all(ratio >= 1.0 - 1e-12) and np.all(ratio <= 1.001), ratio
    assert np.all(st["ttft_s"] <= df["ttft_s"].to_numpy()), "no pipeline fill in a round"


def test_pipelines_hold_more_kv_per_replica():
    df = dse.evaluate({"workload": "sharegpt-vllm-paper", "pp": [1, 2, 4], "w_bits": 8, "a_bits": 8},
                      model="llama-3-70b", platform="hgx-h100-8")
    seqs = df["kv_max_seqs"].to_numpy()
    assert seqs[1] > 2.0 * seqs[0] and seqs[2] > 2.0 * seqs[1]  # weights split over the stages
    assert np.all(np.diff(df["serving_capacity_req_per_s"].to_numpy()) > 0)


def test_point_mass_workload_uses_the_design_lengths():
    df = dse.evaluate({"workload": ["none", "fixed-128-128"], "in_len": 128, "out_len": 128}, model="llama-3-8b",
                      platform="h100-sxm")
    for name in ("serving_tokens_per_s", "goodput_req_per_s", "ttft_p90_s", "kv_max_seqs"):
        assert df[name].iloc[0] == pytest.approx(df[name].iloc[1], rel=1e-6), name


def test_a_parallel_design_of_scalars_and_its_link_flag():
    """One design given as scalars (no arrays anywhere) on a system with and without device links."""
    linked = dse.evaluate({"tp": 2}, model="llama-2-7b", platform="hgx-h100-8").iloc[0]
    alone = dse.evaluate({"tp": 2}, model="llama-2-7b", platform="h100-sxm").iloc[0]
    assert linked["c_link"] == 0.0 and alone["c_link"] == 1.0
    assert np.isfinite(alone["decode_tokens_per_s"]) and alone["decode_tokens_per_s"] < linked["decode_tokens_per_s"]
