"""The conformance checks of dse.testing catch what they claim to catch."""

from __future__ import annotations

import numpy as np
import pytest

from dse.testing.conformance import assert_broadcasts, assert_finite, assert_matches_reference, assert_monotone


def _vector(b):
    return {"t": b["work"] / b["rate"]}


def test_reference_mismatch_is_reported():
    batch = {"work": np.array([1.0, 2.0]), "rate": 2.0}
    assert_matches_reference(_vector, lambda r: {"t": r["work"] / r["rate"]}, batch)
    with pytest.raises(AssertionError, match="row 1"):
        assert_matches_reference(_vector, lambda r: {"t": 0.5 if r["work"] == 1 else 0.0}, batch)


def test_non_finite_is_reported():
    assert_finite({"t": np.array([1.0, 2.0])})
    with pytest.raises(AssertionError, match="rows \\[1\\]"):
        assert_finite({"t": np.array([1.0, np.nan])})


def test_monotone_violation_is_reported():
    batch = {"work": np.array([1.0, 2.0]), "rate": np.array([1.0, 3.0])}
    assert_monotone(_vector, batch, "rate", 2.0, "t", direction=-1)
    with pytest.raises(AssertionError, match="moved against"):
        assert_monotone(_vector, batch, "rate", 2.0, "t", direction=1)
    with pytest.raises(ValueError):
        assert_monotone(_vector, batch, "rate", 0.5, "t", direction=1)


def test_broadcast_mismatch_is_reported():
    assert_broadcasts(_vector, {"work": 1.0, "rate": 2.0})
    with pytest.raises(AssertionError):
        assert_broadcasts(lambda b: {"n": np.ndim(b["work"]) * 1.0}, {"work": 1.0})
