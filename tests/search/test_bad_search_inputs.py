"""Bad search inputs: one SpecError naming the key, before anything is written."""

from __future__ import annotations

import importlib.util

import pytest

from dse.loading import load_study
from dse.search import run_study, run_workers
from dse.spec.errors import SpecError

SPEC = {"name": "bad", "platform": "h100-sxm", "model": "llama-2-7b",
        "space": {"knobs": {"batch": {"low": 1.0, "high": 64.0}, "w_bits": {"choices": [4, 8, 16]}}},
        "budget": {"n_trials": 20}}


@pytest.mark.parametrize("sampler, options, key, rule", [
    ("nsga2", {"constraints_func": "os.system"}, "constraints_func", "cannot be set from a spec"),
    ("tpe", {"gamma": "x"}, "gamma", "cannot be set from a spec"),
    ("tpe", {"n_ei_candidates": 0}, "n_ei_candidates", "must be >= 1"),
    ("tpe", {"n_startup_trials": "x"}, "n_startup_trials", "must be an integer"),
    ("tpe", {"multivariate": "yes"}, "multivariate", "must be true or false"),
    ("nsga2", {"population_size": 1}, "population_size", "must be >= 2"),
    ("nsga2", {"crossover_prob": 1.5}, "crossover_prob", "must be <= 1"),
    ("nsga2", {"popsize": 20}, "popsize", "did you mean 'population_size'"),
    ("qmc", {"qmc_type": "lattice"}, "qmc_type", "must be one of ['sobol', 'halton']"),
    ("random", {"seed": 3}, "seed", "cannot be set from a spec"),
])
def test_sampler_options_are_checked_before_anything_is_written(tmp_path, sampler, options, key, rule):
    study = load_study({**SPEC, "sampler": {"name": sampler, "options": options}}, output=tmp_path / "out")
    with pytest.raises(SpecError) as err:
        run_study(study, progress=False)
    assert rule in str(err.value) and err.value.key_path == f"sampler.options.{key}"
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed: gp runs")
def test_gp_without_torch_is_one_clear_error(tmp_path):
    study = load_study({**SPEC, "sampler": "gp"}, output=tmp_path / "out")
    with pytest.raises(SpecError, match="gp needs PyTorch: pip install torch"):
        run_study(study, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("n_trials", [0, -5, 2.5, True])
def test_a_budget_below_one_design_is_refused(tmp_path, n_trials):
    from dataclasses import replace

    study = replace(load_study(SPEC, output=tmp_path / "out"), n_trials=n_trials)
    with pytest.raises(SpecError, match="must be an integer >= 1"):
        run_study(study, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stale_after_s", [0, -1.0, float("nan"), float("inf")])
def test_a_stale_age_that_is_not_positive_is_refused(tmp_path, stale_after_s):
    study = load_study(SPEC, output=tmp_path / "out")
    with pytest.raises(SpecError, match="must be a number of seconds > 0"):
        run_study(study, progress=False, stale_after_s=stale_after_s)


@pytest.mark.parametrize("n_workers", [0, -2])
def test_workers_below_one_are_refused(tmp_path, n_workers):
    with pytest.raises(SpecError, match="must be an integer >= 1"):
        run_workers("quickstart", n_workers, output=str(tmp_path / "out"))
