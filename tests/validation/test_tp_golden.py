"""Golden test: TP2 on the project's 2x H200 (validation/measurements_tp_h200.csv), predicted from a
device calibrated on four TP1 rows and link terms fitted to the NCCL all-reduce sweep (issue 11).

The same calibration predicts the held-out rows (validation/measurements_tp_h200_heldout.csv:
other prompts, batches, out_len and one more model card), which are never fitted.

Tolerances: the issue's claim (TP2 decode tokens/s within 10 % mean absolute error) is asserted
as is, on both sets; the pinned values below are today's errors with +-1.5 points of slack
(calibration optimiser, other model stages moving a little) so that a physics change that moves
them is seen and re-pinned on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest

from dse.spec.presets import load_platform
from dse.validation import tp_check as tc

CLAIM_MAE_PCT = 10.0
SLACK_PCT = 1.5
# (tp, metric) -> mean |error| % seen when pinned
PINNED = {
    (2, "decode_tokens_per_s"): 5.48,
    (2, "tpot_s"): 5.91,
    (2, "ttft_s"): 3.54,
    (2, "decode_power_w"): 3.35,
    (2, "decode_tokens_per_j"): 5.58,
    (1, "decode_tokens_per_s"): 3.17,
}
# the held-out rows (validation/measurements_tp_h200_heldout.csv), same calibration, nothing fitted to them
HELDOUT_PINNED = {  # before decode_attn_energy_ratio: power 8.64 / 7.92, tokens/J 10.63 / 12.30 (TP2 / TP1)
    (2, "decode_tokens_per_s"): 6.62,
    (2, "tpot_s"): 6.96,
    (2, "ttft_s"): 3.58,
    (2, "decode_power_w"): 4.36,
    (2, "decode_tokens_per_j"): 5.41,
    (1, "decode_tokens_per_s"): 5.17,
    (1, "tpot_s"): 4.87,
    (1, "ttft_s"): 5.12,
    (1, "decode_power_w"): 3.40,
    (1, "decode_tokens_per_j"): 5.17,
}
HELDOUT_TP2_MAX_ABS_PCT = 17.15  # llama-2-7b batch 2, prompt 2048 (worst TP2 row)
# the held-out TP2 decode tokens/s error without the decode-attention stream limit (attn_stream_bw 0)
HELDOUT_TP2_MAE_NO_STREAM_LIMIT = 16.22


@pytest.fixture(scope="module")
def check() -> tc.TpCheck:
    return tc.tp_check()


@pytest.fixture(scope="module")
def heldout() -> tc.TpCheck:
    return tc.heldout_check()


def test_calibrated_on_four_single_gpu_rows_only(check):
    assert len(tc.CALIBRATION_ROWS) <= 4
    fitted_rows = check.calibration.residuals["row"].nunique()
    assert fitted_rows == len(tc.CALIBRATION_ROWS)
    rows = tc.calibration_rows(tc.tp_rows())
    assert (rows["tp"] == 1).all() and (rows["n_devices"] == 1).all()
    # no link field is calibrated: TP2 sees only the sweep-fitted link terms of the preset
    assert not any(p.startswith(("link_", "collective_")) for p in check.calibration.params.index)


def test_tp2_decode_tokens_per_s_within_the_claim(check):
    assert check.mae_pct("decode_tokens_per_s", tp=2) < CLAIM_MAE_PCT
    assert check.summary.loc[(2, "decode_tokens_per_s"), "n"] == 25  # every TP2 row predicted


@pytest.mark.parametrize("key", list(PINNED))
def test_errors_pinned(check, key):
    tp, metric = key
    assert check.mae_pct(metric, tp=tp) == pytest.approx(PINNED[key], abs=SLACK_PCT)


def test_every_prediction_finite_and_positive(check):
    pred = check.errors["predicted"].to_numpy(float)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)


def test_preset_link_terms_are_the_sweep_fit():
    """spaces/platforms/h200-nvlink-2.yaml carries fit_allreduce's values (rounded as written)."""
    fit = tc.fit_allreduce()
    plat = load_platform(tc.SYSTEM)
    assert plat.fields["collective_overhead_s"] == pytest.approx(fit.collective_overhead_s, rel=0.01)
    assert plat.fields["link_bw_eff_frac"] == pytest.approx(fit.link_bw_eff_frac, rel=0.01)
    # one alpha-beta line through NCCL's protocol switch: residuals as documented in the preset
    assert fit.rms_error_pct == pytest.approx(17.5, abs=1.0)
    assert fit.max_abs_error_pct == pytest.approx(37.6, abs=1.0)


def test_fit_recovers_a_synthetic_link():
    """A sweep made by the model itself with known terms gives them back."""
    import pandas as pd

    plat = load_platform(tc.SYSTEM)
    sizes = 2.0 ** np.arange(10, 29)
    times = tc.allreduce_s(sizes, np.full_like(sizes, 2.0), plat, collective_overhead_s=7e-6, link_bw_eff_frac=0.7)
    sweep = pd.DataFrame({"n_ranks": 2, "mode": "graph", "msg_bytes": sizes, "time_s": times})
    fit = tc.fit_allreduce(sweep)
    assert fit.collective_overhead_s == pytest.approx(7e-6, rel=1e-4)
    assert fit.link_bw_eff_frac == pytest.approx(0.7, rel=1e-4)
    assert fit.max_abs_error_pct < 1e-3


def test_heldout_rows_are_new_and_never_fitted(heldout, check):
    """The held-out set shares no (model, batch, in_len, out_len) with the rows the checks were
    built on, and the calibration applied to it is the one on the 4 TP1 rows of the first set."""
    key = ["model", "batch", "in_len", "out_len"]
    old = tc.tp_rows()[key].astype(str).agg("/".join, axis=1)
    new = tc.heldout_rows()
    assert not set(new[key].astype(str).agg("/".join, axis=1)) & set(old)
    assert set(new["tp"]) == {1, 2} and (new["tp"] == 2).sum() == 11 and (new["tp"] == 1).sum() == 10
    assert heldout.calibration.params["value"].equals(check.calibration.params["value"])


def test_heldout_tp2_decode_tokens_per_s_within_the_claim(heldout):
    assert heldout.mae_pct("decode_tokens_per_s", tp=2) < CLAIM_MAE_PCT
    tp2 = heldout.errors[(heldout.errors["tp"] == 2) & (heldout.errors["metric"] == "decode_tokens_per_s")]
    assert tp2["error_pct"].abs().max() == pytest.approx(HELDOUT_TP2_MAX_ABS_PCT, abs=SLACK_PCT)


@pytest.mark.parametrize("key", list(HELDOUT_PINNED))
def test_heldout_errors_pinned(heldout, key):
    tp, metric = key
    assert heldout.mae_pct(metric, tp=tp) == pytest.approx(HELDOUT_PINNED[key], abs=SLACK_PCT)


def test_heldout_breaks_the_claim_without_the_stream_limit():
    """The decode-attention stream limit is what holds the claim on the held-out prompts."""
    off = tc.heldout_check(load_platform(tc.SYSTEM).with_fields(attn_stream_bw_bytes_per_s=0.0))
    assert off.mae_pct("decode_tokens_per_s", tp=2) == pytest.approx(HELDOUT_TP2_MAE_NO_STREAM_LIMIT, abs=SLACK_PCT)


def test_preset_stream_rate_is_the_tp1_fit():
    """spaces/platforms/h200-sxm.yaml carries fit_attn_stream's value, fitted to TP1 rows only."""
    fit = tc.fit_attn_stream()
    assert load_platform("h200-sxm").fields["attn_stream_bw_bytes_per_s"] == pytest.approx(
        fit.attn_stream_bw_bytes_per_s, rel=0.005)
    assert len(fit.pairs) == 3 and set(fit.pairs["model"]) == {"llama-3-8b", "llama-3-70b"}
    assert fit.pairs["rate_bytes_per_s"].between(40e9, 44e9).all()
    # the fit reads TP1 rows only: the TP2 rows alone give nothing to fit
    rows = tc.tp_rows()
    with pytest.raises(ValueError, match="no TP1"):
        tc.fit_attn_stream(rows[rows["tp"] == 2])


def test_model_reproduces_the_fitted_tp1_deltas(check):
    """The calibrated model adds the measured TPOT from prompt 512 to 4096 at TP1 (within 5 %)."""
    e = check.errors[(check.errors["tp"] == 1) & (check.errors["metric"] == "tpot_s")]
    for model, batch in (("llama-3-8b", 1), ("llama-3-8b", 8), ("llama-3-70b", 1)):
        r = e[(e["model"] == model) & (e["batch"] == batch)].set_index("in_len")
        d_meas = r.loc[4096, "measured"] - r.loc[512, "measured"]
        d_pred = r.loc[4096, "predicted"] - r.loc[512, "predicted"]
        assert d_pred == pytest.approx(d_meas, rel=0.05)
