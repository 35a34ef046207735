"""FP8 weight-and-activation designs on devices without FP8 arithmetic (``fp8_native`` 0) run as
W8A16 (:func:`dse.model.workload.executed_knobs`); integer W8A8 and devices with FP8 are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import dse
from dse.spec.metrics import METRICS

DESIGN = {"batch": 16.0, "in_len": 2048.0, "out_len": 256.0, "w_bits": 8.0, "kv_bits": 8.0, "w_group_size": 0.0}


def _metrics(platform: str, **knobs) -> dict[str, float]:
    out = dse.Evaluator("llama-3-70b" if "8" in platform.split("-")[-1] else "llama-3-8b", platform)(
        {**DESIGN, **knobs})
    return {name: float(v[0]) for name, v in out.items()}


@pytest.mark.parametrize("platform", ["a100-sxm-80gb", "tpu-v5e", "xeon-8480"])
def test_fp8_without_fp8_units_is_w8a16(platform):
    w8a8 = _metrics(platform, quant_method="fp8", a_bits=8.0)
    w8a16 = _metrics(platform, quant_method="fp8", a_bits=16.0)
    assert w8a8 == w8a16  # every metric, quality included: the device runs the same kernels


@pytest.mark.parametrize("platform", ["h100-sxm", "mi300x", "l4"])
def test_fp8_units_run_fp8(platform):
    w8a8, w8a16 = _metrics(platform, quant_method="fp8", a_bits=8.0), _metrics(platform, quant_method="fp8",
                                                                                 a_bits=16.0)
    assert w8a8["ttft_s"] < 0.75 * w8a16["ttft_s"]  # compute-bound prefill at the 8-bit rate


def test_integer_w8a8_keeps_the_int8_units():
    """On the A100, SmoothQuant W8A8 still runs on its INT8 tensor cores; FP8 W8A8 does not."""
    int8, fp8 = (_metrics("a100-sxm-80gb", quant_method=m, a_bits=8.0) for m in ("smoothquant", "fp8"))
    assert int8["ttft_s"] < 0.75 * fp8["ttft_s"]


def test_mixed_batch_equals_each_platform():
    """The per-row path (a batch over devices with and without FP8, serving stage on) equals
    evaluating each device alone."""
    platforms = ["a100-sxm-80gb", "h100-sxm", "tpu-v5e", "mi300x"]
    ev = dse.Evaluator("llama-3-8b", platforms)
    rows = {"platform": np.repeat(np.arange(4.0), 3), "quant_method": np.tile([6.0, 5.0, 0.0], 4),  # fp8, sq, rtn
            "a_bits": 8.0, "w_bits": 8.0, "workload": "sharegpt-vllm-paper", "tp": 1.0}
    assert dse.spec.registry.KNOB_BY_NAME["quant_method"].choices[6] == "fp8"
    mixed = ev(rows)
    for i, platform in enumerate(platforms):
        alone = dse.Evaluator("llama-3-8b", platform)({c: (v[3 * i:3 * i + 3] if np.ndim(v) else v)
                                                        for c, v in rows.items() if c != "platform"})
        for name in METRICS:
            if name in alone:
                np.testing.assert_array_equal(mixed[name][3 * i:3 * i + 3], alone[name], err_msg=name)
    a100 = slice(0, 3)
    assert mixed["ttft_s"][a100][0] > mixed["ttft_s"][a100][1]  # FP8 (W8A16 there) slower than INT8 W8A8



def test_geforce_fp8_runs_at_its_fp32_accumulate_rate():
    """The RTX 4090 runs FP8 with FP32 accumulation at half its 8-bit peak (fp8_rate_frac 0.5): its
    compute-bound FP8 prefill (2 x 2,048 tokens) takes nearly twice as long as at the full 8-bit
    peak (attention and launches do not change), while SmoothQuant's INT8 GEMMs keep the full rate."""
    full = dse.load_platform("rtx-4090").with_fields(fp8_rate_frac=1.0)

    def ttft(platform, method):
        design = {**DESIGN, "batch": 2.0, "quant_method": method, "a_bits": 8.0}
        return float(dse.evaluate(design, model="llama-3-8b", platform=platform)["ttft_s"].iloc[0])

    assert dse.load_platform("rtx-4090").fields["fp8_rate_frac"] == 0.5
    assert 1.7 < ttft("rtx-4090", "fp8") / ttft(full, "fp8") < 2.0
    assert ttft("rtx-4090", "smoothquant") == ttft(full, "smoothquant")
