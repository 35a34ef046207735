"""The multi-device validation sets: ``dse validate --set tp`` and ``--set multi``."""

from __future__ import annotations

import numpy as np
import pytest

from dse.validation.tp_check import per_system
from dse.validation.validate import SET_SYSTEMS, SETS, load_set, measurement_rows, validate


@pytest.fixture(scope="module")
def multi():
    rows = load_set("multi")
    return rows, validate(rows)


def test_sets_are_registered():
    assert SETS["tp"] == "measurements_tp_h200.csv" and SETS["multi"] == "published_multi.csv"
    assert SET_SYSTEMS["tp"] == "h200-nvlink-2"
    assert SETS["tp-heldout"] == "measurements_tp_h200_heldout.csv" and SET_SYSTEMS["tp-heldout"] == "h200-nvlink-2"


@pytest.mark.parametrize("name", ["tp", "tp-heldout"])
def test_tp_rows_run_on_the_measured_system(name):
    rows = load_set(name)
    assert (rows["platform"] == "h200-nvlink-2").all() and (rows["device_platform"] == "h200-sxm").all()
    report = validate(rows)
    assert report.skipped.empty
    assert set(report.comparisons["platform"]) == {"h200-nvlink-2"}
    pred = report.comparisons["predicted"].to_numpy(float)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)


def test_multi_rows_run_on_their_system_presets(multi):
    rows, report = multi
    has_system = rows["system"].fillna("").astype(str).str.strip() != ""
    assert (rows.loc[has_system, "platform"] == rows.loc[has_system, "system"]).all()
    assert (rows.loc[~has_system, "platform"] == rows.loc[~has_system, "device_platform"]).all()
    assert measurement_rows(rows)["platform"].equals(rows["platform"])  # idempotent


def test_every_multi_row_compared_or_skipped_with_a_reason(multi):
    rows, report = multi
    compared = set(report.comparisons["row"])
    skipped = set(report.skipped["row"])
    assert compared | skipped == set(rows["row"]) and not compared & skipped
    assert report.skipped["reason"].str.len().gt(0).all()
    # what the model cannot express today: continuous-batching rows without a batch, MLPerf rows
    # without the mean input length, a device without a preset
    reasons = set(report.skipped["reason"])
    assert reasons <= {"batch not given", "in_len not given", "no preset 'rtx-pro-6000-blackwell'"}
    assert len(compared) == 35 and len(skipped) == 30


def test_per_system_summary(multi):
    _, report = multi
    table = per_system(report.comparisons)
    assert set(table.index.get_level_values("platform")) == {"hgx-a100-8", "hgx-h100-8", "mi300x-8"}
    assert table["n"].sum() == len(report.comparisons)
    assert np.all(np.isfinite(report.comparisons["predicted"].to_numpy(float)))
