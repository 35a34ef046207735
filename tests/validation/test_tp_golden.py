"""Golden test: TP2 on the project's 2x H200 (validation/measurements_tp_h200.csv), predicted from a
device calibrated on four TP1 rows and link terms fitted to the NCCL all-reduce sweep (issue 11).

Tolerances: the issue's claim (TP2 decode tokens/s within 10 % mean absolute error) is asserted
as is; the pinned values below are today's errors with +-1.5 points of slack (calibration
optimiser, other model stages moving a little) so that a physics change that moves them is
seen and re-pinned on purpose.
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
    (2, "decode_tokens_per_s"): 7.45,
    (2, "tpot_s"): 7.56,
    (2, "ttft_s"): 3.29,
    (2, "decode_power_w"): 7.14,
    (2, "decode_tokens_per_j"): 6.01,
    (1, "decode_tokens_per_s"): 3.97,
}


@pytest.fixture(scope="module")
def check() -> tc.TpCheck:
    return tc.tp_check()


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
