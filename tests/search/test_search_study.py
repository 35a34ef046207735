"""Searches of a study: distributions, result files, resume, exhaustive through run_study, NSGA-II."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dse.loading import load_space, load_study
from dse.results.io import read_metadata
from dse.search import run_study
from dse.search.distributions import distributions
from tests.conftest import SMALL_SPACE

SPACE = SMALL_SPACE


def test_distributions_match_knobs():
    dists = distributions(load_space(SPACE))
    assert dists["batch"].choices == (1.0, 8.0, 64.0)
    assert dists["n_mem_units"].low == 1 and dists["n_mem_units"].high == 4
    assert dists["flop16_peak_flop_per_s"].step == pytest.approx(300e12)


def study(tmp_path, **kw):
    spec = {"name": "t", "space": SPACE, "sampler": {"name": "nsga2", "options": {"population_size": 20}},
            "budget": {"n_trials": 60}, "batch_size": 20, "seed": 1,
            "constraints": [{"metric": "ttft_s", "max": 0.5}]}
    spec.update(kw)
    return load_study(spec, output=tmp_path / "out")


def brute_front(df: pd.DataFrame) -> set:
    feasible = df[df["feasible"]]
    v = feasible[["decode_tokens_per_s", "decode_tokens_per_j"]].to_numpy()
    return {tuple(x) for x in v if not any(np.all(o >= x) and np.any(o > x) for o in v)}


def test_search_writes_results_with_units_and_metadata_and_a_correct_front(tmp_path):
    st = study(tmp_path)
    res = run_study(st, progress=False)
    trials = pd.read_parquet(st.output / "trials.parquet")
    front = pd.read_parquet(st.output / "front.parquet")
    assert res.n_trials == len(trials) == 60 and sorted(trials["trial"]) == list(range(60))  # distinct designs
    knobs = [k.name for k in st.space.knobs]
    assert not trials[knobs].duplicated().any()
    assert {tuple(x) for x in front[["decode_tokens_per_s", "decode_tokens_per_j"]].to_numpy()} == brute_front(trials)
    assert ((trials["c_ttft_s_max"] <= 0) & (trials["c_g_memory_bytes"] <= 0) == trials["feasible"]).all()
    assert set(trials["mem_technology"]) <= {"hbm3", "gddr6x", "hbm2-pim"}
    schema = pq.read_schema(st.output / "trials.parquet")  # units live in the Arrow field metadata
    units = {f.name: f.metadata[b"unit"].decode() for f in schema if f.metadata and b"unit" in f.metadata}
    assert units["decode_tokens_per_s"] == "token/s" and units["mem_bw_bytes_per_s"] == "B/s"
    meta = read_metadata(st.output / "front.parquet")
    assert meta["spec_hash"] == st.spec_hash and meta["seed"] == 1
    assert (st.output / "front.png").stat().st_size > 10_000


def test_resume_continues_to_a_larger_budget_and_refuses_a_changed_spec(tmp_path):
    st = study(tmp_path)
    run_study(st, progress=False)
    more = run_study(replace(st, n_trials=100), progress=False)
    assert more.n_new == 40 and more.n_trials == 100
    again = run_study(replace(st, n_trials=100), progress=False)
    assert again.n_new == 0
    changed = study(tmp_path, seed=2)
    with pytest.raises(Exception, match="spec changed"):
        run_study(changed, progress=False)


def test_exhaustive_study_matches_brute_force(tmp_path):
    st = study(tmp_path, sampler="exhaustive")
    run_study(st, progress=False)
    front = pd.read_parquet(st.output / "front.parquet")
    space = st.space
    from dse.results.tables import design_table

    everything = design_table(st, space.params_at(np.arange(space.size)))
    assert {tuple(x) for x in front[["decode_tokens_per_s", "decode_tokens_per_j"]].to_numpy()} == \
        brute_front(everything)


@pytest.mark.parametrize("prune_every", [0, 3])
def test_incremental_nsga2_proposes_exactly_what_optunas_does(prune_every):
    import optuna

    from dse.search.nsga import IncrementalNSGAIISampler

    space = load_space(SPACE)
    dists = distributions(space)

    def run(sampler_cls) -> list[dict]:
        study = optuna.create_study(directions=["maximize", "maximize"],
                                    sampler=sampler_cls(population_size=20, seed=3))
        for _ in range(12):  # batches of 20 asked together, told in order, as run_study does
            trials = [study.ask(dists) for _ in range(20)]
            for t in trials:
                if prune_every and t.number % prune_every == 0:  # as run_study tells a repeated design
                    study.tell(t, state=optuna.trial.TrialState.PRUNED)
                    continue
                x = sum(float(v) for v in t.params.values() if not isinstance(v, str))
                study.tell(t, [x % 7.0, x % 5.0])
        return [t.params for t in study.get_trials()]

    assert run(IncrementalNSGAIISampler) == run(optuna.samplers.NSGAIISampler)


def test_auto_sweeps_a_space_cheaper_than_the_budget_and_searches_otherwise():
    from dse.search.samplers import SWEEP_DESIGNS_PER_TRIAL, resolve_sampler

    space = load_space(SPACE)
    assert resolve_sampler("auto", space, 100)[0] == "exhaustive"
    assert "sweeping it exhaustively" in resolve_sampler("auto", space, 100)[1]
    assert resolve_sampler("auto", space, space.size // SWEEP_DESIGNS_PER_TRIAL - 1)[0] == "nsga2"
    continuous = load_space({**SPACE, "knobs": {**SPACE["knobs"], "batch": {"low": 1.0, "high": 64.0}}})
    assert resolve_sampler("auto", continuous, 10**6) == ("nsga2", resolve_sampler("auto", continuous, 10**6)[1])
    assert resolve_sampler("tpe", space, 100) == ("tpe", "")


def test_a_search_evaluates_and_counts_each_distinct_design_once(tmp_path):
    import optuna

    st = study(tmp_path, budget={"n_trials": 150})
    res = run_study(st, progress=False)
    trials = pd.read_parquet(st.output / "trials.parquet")
    design_columns = [c for c in trials.columns if c in ("model", "platform") or c.endswith(
        ("_bytes_per_s", "_flop_per_s", "_bytes", "_pj_per_bit", "_pj_per_flop")) or c in ("batch", "w_bits",
                                                                                            "pim_offload")]
    assert res.n_trials == res.n_new == len(trials) == 150
    assert not trials[design_columns].duplicated().any()  # pim_offload off on non-PIM memory: the same design
    assert any("repeated an evaluated design" in n for n in res.notes)  # NSGA-II proposes repeats here
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(st.output / "optuna.journal")))
    stored = optuna.load_study(study_name="t", storage=journal).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(stored) == 150  # repeats are never stored, evaluated or counted


def test_a_budget_beyond_the_space_stops_once_every_design_is_evaluated(tmp_path):
    space = {"platform": "h100-sxm", "model": "llama-2-7b",
             "knobs": {"batch": {"choices": [1, 8, 64]}, "w_bits": {"choices": [4, 8, 16]}}}
    st = study(tmp_path, space=space, sampler="random", budget={"n_trials": 50}, batch_size=4)
    res = run_study(st, progress=False)
    assert res.n_trials == 9 == len(pd.read_parquet(st.output / "trials.parquet"))
    assert any("every design of the space (9) is evaluated" in n for n in res.notes)


def test_the_quickstart_prints_the_exact_front(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from dse.results.tables import design_table

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "dse", "run", "studies/quickstart.yaml", "--output",
                          str(tmp_path / "qs"), "--quiet"], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    st = load_study(root / "studies" / "quickstart.yaml", output=tmp_path / "qs")
    everything = design_table(st, st.space.params_at(np.arange(st.space.size)))  # every design, evaluated
    names = [m for m, _ in st.objectives]
    sign = np.array([1.0 if maximize else -1.0 for _, maximize in st.objectives])  # larger is better below
    v = everything.loc[everything["feasible"], names].to_numpy() * sign
    dominated = np.zeros(len(v), dtype=bool)
    for i in range(0, len(v), 512):  # the definition, O(n^2), vectorised by blocks
        p = v[i:i + 512, None, :]
        dominated[i:i + 512] = np.any(np.all(v[None] >= p, axis=2) & np.any(v[None] > p, axis=2), axis=1)
    exact = {tuple(x) for x in v[~dominated] * sign}
    front = pd.read_parquet(tmp_path / "qs" / "front.parquet")
    assert {tuple(x) for x in front[names].to_numpy()} == exact
    assert f"{st.space.size} designs evaluated ({st.space.size} new" in run.stdout
    assert f"front of {len(exact)} " in run.stdout and "sweeping it exhaustively" in run.stdout


def test_optuna_sees_the_metric_names_constraints_and_front_dse_reports(tmp_path):
    import optuna

    st = study(tmp_path, budget={"n_trials": 120}, constraints=[{"metric": "ttft_s", "max": 0.5},
                                                               {"metric": "decode_tokens_per_s", "max": 1500}])
    run_study(st, progress=False)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(st.output / "optuna.journal")))
    stored = optuna.load_study(study_name="t", storage=storage)
    assert stored.metric_names == ["decode_tokens_per_s", "decode_tokens_per_j"]  # not "Objective 0/1"
    names = ["c_g_memory_bytes", "c_link", "c_reticle_mm2", "c_shoreline_mm", "c_static_power_w", "c_invalid_input",
             "c_ttft_s_max", "c_decode_tokens_per_s_max"]
    assert stored.user_attrs["dse_constraint_names"] == names
    trials = pd.read_parquet(st.output / "trials.parquet").set_index("trial")
    for t in stored.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert t.system_attrs["constraints"] == pytest.approx(
            trials.loc[t.number, names].tolist())
    front = pd.read_parquet(st.output / "front.parquet")
    points = {tuple(v) for v in front[["decode_tokens_per_s", "decode_tokens_per_j"]].to_numpy()}
    assert {tuple(t.values) for t in stored.best_trials} == points
    unconstrained = brute_front(trials.assign(feasible=True))
    assert unconstrained != points  # the constraint matters here: best_trials honours it
