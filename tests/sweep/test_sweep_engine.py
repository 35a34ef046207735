"""Exhaustive sweep: exact front vs brute force, shards, workers, sample, bounded memory."""

from __future__ import annotations

import functools
import tracemalloc
from functools import partial

import numpy as np
import pandas as pd
import pytest
import yaml

import dse
from dse.loading import space_evaluator
from dse.results.pareto import pareto_mask
from dse.spec.errors import SpecError
from dse.spec.metrics import MODEL_CONSTRAINTS
from dse.spec.presets import _platform_from_mapping
from dse.sweep.engine import FEASIBLE_COLUMN, INDEX_COLUMN, merge_fronts, sweep

OBJECTIVES = [("decode_tokens_per_s", True), ("tpot_s", False)]  # batch trades one for the other
CONSTRAINTS = [("ttft_s", 0.5)]

_H100_LIKE = {  # H100 SXM datasheet figures (reference/hardware.md); efficiencies and energies rough
    "name": "test-h100", "platform_class": "gpu",
    "flop32_peak_flop_per_s": 66.9e12, "flop16_peak_flop_per_s": 989.4e12, "flop8_peak_flop_per_s": 1978.9e12,
    "flop16_energy_pj_per_flop": 0.5, "mem_bw_bytes_per_s": 3.35e12, "mem_capacity_bytes": 80e9,
    "mem_energy_pj_per_bit": 4.0, "static_power_w": 100.0, "tdp_w": 700.0,
    "compute_eff_frac": 0.7, "mem_bw_eff_frac": 0.8,
}
PLATFORM = _platform_from_mapping(
    {**_H100_LIKE, "sources": {k: "test fixture" for k in _H100_LIKE if k not in ("name", "platform_class")}},
    "test-h100.yaml")
MAKE_EVALUATOR = partial(dse.Evaluator, model="llama-2-7b", platform=PLATFORM)


class GridSpace:
    """Mixed-radix product of knob choices, first knob fastest (a minimal FiniteSpace)."""

    def __init__(self, knobs: dict[str, list[float]]) -> None:
        self.knobs = {name: np.asarray(values, dtype=np.float64) for name, values in knobs.items()}
        self.size = int(np.prod([len(v) for v in self.knobs.values()]))

    def columns_at(self, index: np.ndarray) -> dict[str, np.ndarray]:
        out, rest = {}, index
        for name, values in self.knobs.items():
            rest, digit = np.divmod(rest, len(values))
            out[name] = values[digit]
        return out


SMALL = GridSpace({  # 2592 designs: ties (repeated bandwidths), infeasible (capacity), a trade-off
    "batch": [1, 2, 4, 8, 16, 32, 64, 128],
    "in_len": [128, 512, 2048],
    "out_len": [128, 512],
    "w_bits": [4, 8, 16],
    "kv_bits": [8, 16],
    "mem_bw_bytes_per_s": [1e12, 2e12, 3.35e12],
    "mem_capacity_bytes": [8e9, 16e9, 80e9],
})


def brute_force_front(space: GridSpace, objectives, constraints) -> tuple[pd.DataFrame, np.ndarray]:
    """Every design evaluated at once, feasibility, and the O(n^2) dominance definition."""
    index = np.arange(space.size)
    cols = space.columns_at(index)
    metrics = MAKE_EVALUATOR()(cols)
    table = pd.DataFrame({INDEX_COLUMN: index, **cols, **metrics})
    feasible = (table["g_memory_bytes"] <= 0).to_numpy().copy()
    for name in MODEL_CONSTRAINTS:  # the model's own constraints (links, reticle, ...), where computed
        if name in table:
            feasible &= (table[name] <= 0).to_numpy()
    for name, bound in constraints:
        feasible &= (table[name] <= bound).to_numpy()
    v = table[[n for n, _ in objectives]].to_numpy() * np.where([m for _, m in objectives], 1.0, -1.0)
    v_feasible = v[feasible]
    dominated = np.array([np.any(np.all(v_feasible >= p, axis=1) & np.any(v_feasible > p, axis=1))
                          for p in v_feasible])
    return table[feasible][~dominated].reset_index(drop=True), feasible


@pytest.fixture(scope="module")
def small_run():
    return sweep(SMALL, MAKE_EVALUATOR, OBJECTIVES, CONSTRAINTS, chunk_size=300, n_jobs=1, sample_size=500)


def test_front_equals_brute_force(small_run):
    expected, feasible = brute_force_front(SMALL, OBJECTIVES, CONSTRAINTS)
    assert 0 < feasible.sum() < SMALL.size  # the fixture has both feasible and infeasible designs
    assert len(expected) > 10 and expected[INDEX_COLUMN].duplicated().sum() == 0
    pd.testing.assert_frame_equal(small_run.front, expected, check_dtype=False)
    assert small_run.n_evaluated == SMALL.size
    assert small_run.n_feasible == feasible.sum()
    assert small_run.points_per_s > 0


def test_three_objectives_and_a_design_column_objective():
    objectives = [("tokens_per_s", True), ("tokens_per_j", True), ("mem_bw_bytes_per_s", False)]
    expected, _ = brute_force_front(SMALL, objectives, [])
    result = sweep(SMALL, MAKE_EVALUATOR, objectives, chunk_size=1000, n_jobs=1)
    assert len(expected) > 1
    pd.testing.assert_frame_equal(result.front, expected, check_dtype=False)


def test_sample_is_uniform_subset_with_feasibility(small_run):
    sample = small_run.sample
    assert len(sample) == 500 and sample[INDEX_COLUMN].is_unique
    _, feasible = brute_force_front(SMALL, OBJECTIVES, CONSTRAINTS)
    np.testing.assert_array_equal(sample[FEASIBLE_COLUMN], feasible[sample[INDEX_COLUMN]])
    np.testing.assert_array_equal(sample["batch"], SMALL.columns_at(sample[INDEX_COLUMN].to_numpy())["batch"])
    assert set(sample["batch"]) == set(SMALL.knobs["batch"])  # not aliased onto one knob value
    everything = sweep(SMALL, MAKE_EVALUATOR, OBJECTIVES, sample_size=10**6, n_jobs=1)
    assert everything.sample[INDEX_COLUMN].tolist() == list(range(SMALL.size))


def test_shards_merge_to_the_single_run(small_run):
    shards = [sweep(SMALL, MAKE_EVALUATOR, OBJECTIVES, CONSTRAINTS, chunk_size=300, n_jobs=1, sample_size=500,
                    shard=(i, 4)) for i in range(4)]
    assert sum(s.n_evaluated for s in shards) == SMALL.size
    assert sum(s.n_feasible for s in shards) == small_run.n_feasible
    pd.testing.assert_frame_equal(merge_fronts([s.front for s in shards], OBJECTIVES), small_run.front)
    twice = merge_fronts([small_run.front, small_run.front], OBJECTIVES)
    pd.testing.assert_frame_equal(twice, small_run.front)


def test_two_workers_and_other_chunking_give_the_same_result(small_run):
    seen: list[tuple[int, int]] = []
    parallel = sweep(SMALL, MAKE_EVALUATOR, OBJECTIVES, CONSTRAINTS, chunk_size=97, n_jobs=2, sample_size=500,
                     progress=lambda done, total: seen.append((done, total)))
    pd.testing.assert_frame_equal(parallel.front, small_run.front)
    pd.testing.assert_frame_equal(parallel.sample, small_run.sample)
    assert seen[0] == (0, SMALL.size) and seen[-1] == (SMALL.size, SMALL.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_lower_and_upper_bounds():
    result = sweep(SMALL, MAKE_EVALUATOR, OBJECTIVES, [("tokens_per_s", 800.0, None), ("ttft_s", 0.5)], n_jobs=1)
    assert (result.front["tokens_per_s"] >= 800).all() and (result.front["ttft_s"] <= 0.5).all()
    assert result.n_feasible < sweep(SMALL, MAKE_EVALUATOR, OBJECTIVES, CONSTRAINTS, n_jobs=1).n_feasible


def test_nothing_feasible_gives_empty_front_with_columns():
    result = sweep(SMALL, MAKE_EVALUATOR, OBJECTIVES, [("ttft_s", 0.0)], n_jobs=1, sample_size=10)
    assert result.front.empty and INDEX_COLUMN in result.front.columns and "tpot_s" in result.front.columns
    assert result.n_feasible == 0 and len(result.sample) == 10 and not result.sample[FEASIBLE_COLUMN].any()


@pytest.mark.parametrize("kwargs, match", [
    ({"objectives": [("decode_token_per_s", True)]}, "did you mean 'decode_tokens_per_s'"),
    ({"objectives": []}, "at least one"),
    ({"constraints": [("tpot_s",)]}, "must be"),
    ({"constraints": [("tpot_s", 2.0, 1.0)]}, "lower <= upper"),
    ({"shard": (4, 4)}, "0 <= i < n"),
    ({"chunk_size": 0}, "positive integer"),
    ({"sample_size": -1}, ">= 0"),
])
def test_bad_arguments_raise_spec_error(kwargs, match):
    args = {"objectives": OBJECTIVES, **kwargs}
    with pytest.raises(SpecError, match=match):
        sweep(SMALL, MAKE_EVALUATOR, n_jobs=1, **args)


def test_bad_space_or_evaluator_raise_spec_error():
    with pytest.raises(SpecError, match="no designs"):
        sweep(GridSpace({"batch": []}), MAKE_EVALUATOR, OBJECTIVES, n_jobs=1)
    with pytest.raises(SpecError, match="g_memory_bytes"):
        sweep(SMALL, lambda: (lambda cols: {"tpot_s": cols["batch"]}), [("tpot_s", False)], n_jobs=1)


def test_sweeps_a_yaml_space(tmp_path):
    from dse.loading import load_space

    platform = tmp_path / "test-h100.yaml"
    platform.write_text(yaml.safe_dump({**_H100_LIKE, "sources": dict(PLATFORM.sources)}))
    space = load_space({"name": "t", "platform": str(platform), "model": "llama-2-7b",
                        "knobs": {"batch": {"choices": [1, 4, 16, 64]}, "w_bits": {"choices": [4, 8, 16]},
                                  "flop16_peak_tflop_per_s": {"choices": [250, 500, 1000]}},
                        "derived": {"flop8_peak_flop_per_s": "2 * flop16_peak_flop_per_s"}})
    result = sweep(space, functools.partial(space_evaluator, space), OBJECTIVES, n_jobs=1)
    index = np.arange(space.size)
    table = pd.DataFrame({INDEX_COLUMN: index, **space_evaluator(space)(space.columns_at(index))})
    fits = table["g_memory_bytes"] <= 0
    for name in MODEL_CONSTRAINTS:
        if name in table:
            fits &= table[name] <= 0
    expected = table[fits]
    expected = expected[pareto_mask(expected[[n for n, _ in OBJECTIVES]].to_numpy(), [m for _, m in OBJECTIVES])]
    assert result.front[INDEX_COLUMN].tolist() == expected[INDEX_COLUMN].tolist()
    assert result.n_evaluated == space.size == 36


def test_memory_stays_bounded_on_two_million_designs():
    space = GridSpace({
        "batch": np.arange(1, 101), "in_len": np.linspace(128, 4096, 20).round(),  # whole numbers (int knobs)
        "out_len": np.linspace(64, 1024, 10).round(),
        "w_bits": np.linspace(4, 16, 10), "mem_bw_bytes_per_s": np.linspace(1e12, 4e12, 10),
    })
    assert space.size == 2_000_000
    tracemalloc.start()
    try:
        result = sweep(space, MAKE_EVALUATOR, OBJECTIVES, CONSTRAINTS, chunk_size=1 << 16, n_jobs=1,
                       sample_size=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.n_evaluated == space.size
    n_columns = len(result.front.columns)
    materialised = space.size * n_columns * 8  # every design's columns and metrics as float64
    assert peak < materialised / 8, (peak, materialised)  # measured: ~21 MB of 272 MB
