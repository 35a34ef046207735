"""Exhaustive studies: each distinct design evaluated and counted once, each front point listed once."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dse.loading import load_study
from dse.results.tables import design_table
from dse.sweep.study import run_exhaustive

SPACE = {  # pim_offload has no effect where the memory cannot compute: 4 of its 6 settings repeat a design
    "platform": "h100-sxm", "model": "llama-2-7b",
    "knobs": {"mem_technology": {"choices": ["hbm3", "gddr6x", "hbm2-pim"]},
              "batch": {"choices": [1, 8, 64]},
              "pim_offload": {"choices": [0, 1, 2], "when": "mem_pim_capable > 0", "default": 0}},
    "fixed": {"n_mem_units": 4, "in_len": 256, "out_len": 64},
}
OBJECTIVES = ["decode_tokens_per_s", "decode_tokens_per_j"]


def test_a_knob_switched_off_by_its_condition_repeats_no_design(tmp_path):
    st = load_study({"name": "t", "space": SPACE, "sampler": "exhaustive"}, output=tmp_path / "out")
    res = run_exhaustive(st, progress=False)
    columns = st.space.columns_at(np.arange(st.space.size))
    n = st.space.size
    rows = np.column_stack([np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in columns.values()])
    distinct = len(np.unique(rows, axis=0))
    assert (st.space.size, distinct) == (27, 3 * 3 + 2 * 3)  # by hand: 9 settings x 3 offloads on PIM memory
    assert res.n_trials == res.n_new == distinct
    assert any("27 points are 15 distinct designs" in note for note in res.notes)
    trials = pd.read_parquet(st.output / "trials.parquet")
    assert len(trials) == distinct and not trials[["mem_technology", "batch", "pim_offload"]].duplicated().any()


def test_a_front_lists_each_objective_point_once(tmp_path):
    space = {**SPACE, "knobs": {**SPACE["knobs"], "pim_offload": {"choices": [0, 2]}}}  # no condition: repeats
    st = load_study({"name": "t", "space": space, "sampler": "exhaustive"}, output=tmp_path / "out")
    res = run_exhaustive(st, progress=False)
    front = pd.read_parquet(st.output / "front.parquet")
    everything = design_table(st, st.space.params_at(np.arange(st.space.size)))
    feasible = everything[everything["feasible"]][OBJECTIVES].to_numpy()
    exact = {tuple(v) for v in feasible if not any(np.all(o >= v) and np.any(o > v) for o in feasible)}
    points = [tuple(v) for v in front[OBJECTIVES].to_numpy()]
    assert sorted(points) == sorted(exact) and len(points) == len(set(points)) == res.front_size
    on_front_everywhere = everything[[tuple(v) in exact for v in everything[OBJECTIVES].to_numpy()]]
    assert len(on_front_everywhere) > len(front)  # the same point from several settings (offload on non-PIM)
