"""A derived value that is infinite, NaN or out of range only inside the space: those designs
are infeasible with a named violation (c_invalid_input), the run goes on and says how many."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dse.loading import INVALID_INPUT, load_study, space_evaluator
from dse.search import run_study
from dse.spec.errors import SpecError

SPACE = {"platform": "h100-sxm", "model": "llama-2-7b",
         "knobs": {"batch": {"low": 1, "high": 64}, "w_bits": {"choices": [4, 8, 16]}},
         "derived": {"tdp_w": "700 + 100 / (batch - 20)**2",  # infinite at batch 20 only
                     "mem_bw_bytes_per_s": "3.35e12 * (1 - 2 * (batch == 33))"}}  # negative at batch 33 only


@pytest.mark.parametrize("sampler", ["exhaustive", "random"])
def test_designs_with_an_invalid_derived_value_are_infeasible_and_counted(tmp_path, sampler):
    st = load_study({"name": "inv", "space": SPACE, "sampler": sampler, "budget": {"n_trials": 192}},
                    output=tmp_path / "out")
    res = run_study(st, progress=False)
    trials = pd.read_parquet(st.output / "trials.parquet")
    bad = trials["batch"].isin([20, 33])
    assert res.n_trials == len(trials)
    assert (trials.loc[bad, INVALID_INPUT] == 1).all() and (trials.loc[~bad, INVALID_INPUT] == 0).all()
    assert not trials.loc[bad, "feasible"].any()
    metrics = trials.select_dtypes("number").drop(columns=["tdp_w", "mem_bw_bytes_per_s"])
    assert not metrics.isna().any().any()  # never NaN
    n_bad = int(bad.sum())
    assert n_bad > 0 and any(f"{n_bad} designs infeasible ({INVALID_INPUT})" in n for n in res.notes)
    if sampler == "random":
        note = next(n for n in res.notes if INVALID_INPUT in n)
        assert "tdp_w" in note and "mem_bw_bytes_per_s" in note
    front = pd.read_parquet(st.output / "front.parquet")
    assert not front["batch"].isin([20, 33]).any()


def test_the_space_evaluator_flags_rows_and_the_plain_one_raises():
    st = load_study({"name": "inv", "space": SPACE})
    params = {"batch": np.array([19.0, 20.0, 33.0]), "w_bits": np.array([16.0, 16.0, 16.0])}
    metrics = space_evaluator(st.space)(st.space.columns(params, strict=False))
    assert metrics[INVALID_INPUT].tolist() == [0.0, 1.0, 1.0]
    assert all(np.isfinite(v).all() for v in metrics.values())
    with pytest.raises(SpecError, match="non-finite"):
        st.space.columns(params)  # strict, as the load-time corner check uses it
