"""Pareto masks, 2-D hypervolume and the streaming archive against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dse.results.pareto
from dse.results.pareto import ParetoArchive, hypervolume_2d, pareto_mask
from dse.spec.errors import SpecError


def brute_mask(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """O(n^2) definition: dominated iff another row is >= in all and > in one (maximising)."""
    v = np.where(maximize, values, -values)
    keep = np.ones(len(v), dtype=bool)
    for i, p in enumerate(v):
        keep[i] = not np.any(np.all(v >= p, axis=1) & np.any(v > p, axis=1))
    return keep


@st.composite
def tied_points(draw, max_k: int = 4) -> tuple[np.ndarray, list[bool]]:
    """Points on a coarse integer grid (many ties), with duplicated rows."""
    k = draw(st.integers(2, max_k))
    n = draw(st.integers(0, 60))
    levels = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.integers(0, levels, (n, k)).astype(float)
    if n:
        values = np.concatenate((values, values[rng.integers(0, n, n // 3)]))
    maximize = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    return values, maximize


@given(tied_points())
@settings(max_examples=300, deadline=None)
def test_mask_matches_brute_force_with_ties_and_duplicates(case):
    values, maximize = case
    np.testing.assert_array_equal(pareto_mask(values, maximize), brute_mask(values, maximize))


@given(tied_points())
@settings(max_examples=300, deadline=None)
def test_blockwise_and_prefilter_paths_match_brute_force(case):
    values, maximize = case
    with pytest.MonkeyPatch.context() as mp:  # tiny blocks and samples: many blocks, pivots on
        mp.setattr(dse.results.pareto, "_BLOCK_PAIRS", 16)
        mp.setattr(dse.results.pareto, "_PIVOT_SAMPLE", 3)
        mask = pareto_mask(values, maximize)
    np.testing.assert_array_equal(mask, brute_mask(values, maximize))


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("n", [5000, 20000])
def test_large_inputs_use_prefilter_and_stay_exact(k, n):
    rng = np.random.default_rng(k * n)
    values = np.round(rng.random((n, k)), 2)  # ties on a 0.01 grid
    values[:, 1] = np.round(1 - values[:, 0] + 0.05 * rng.random(n), 2)  # a real trade-off
    values = np.concatenate((values, values[: n // 4]))  # duplicates
    maximize = [True, False, True, False][:k]
    mask = pareto_mask(values, maximize)
    front = values[mask]
    # every kept row undominated by all rows; every dropped row dominated by a kept row
    assert not brute_dominated(front, values, maximize).any()
    assert brute_dominated(values[~mask], front, maximize).all()


def brute_dominated(cands: np.ndarray, by: np.ndarray, maximize: list[bool]) -> np.ndarray:
    c = np.where(maximize, cands, -cands)[:, None, :]
    b = np.where(maximize, by, -by)[None]
    return np.any(np.all(b >= c, axis=2) & np.any(b > c, axis=2), axis=1)


def test_single_objective_keeps_all_optima():
    assert pareto_mask(np.array([[1.0], [3.0], [3.0]]), [True]).tolist() == [False, True, True]


def test_bad_input_raises():
    with pytest.raises(SpecError, match="one flag per objective"):
        pareto_mask(np.zeros((3, 2)), [True])
    with pytest.raises(SpecError, match="NaN"):
        pareto_mask(np.array([[np.nan, 1.0]]), [True, True])
    with pytest.raises(SpecError, match="2-D"):
        pareto_mask(np.zeros(3), [True])


def hv_inclusion_exclusion(values: np.ndarray, maximize: list[bool], ref: list[float]) -> float:
    """Area of the union of the boxes [p, ref] by inclusion-exclusion (minimising form)."""
    c = np.where(maximize, -values, values)
    r = np.where(maximize, -np.asarray(ref), np.asarray(ref))
    c = c[np.all(c < r, axis=1)]
    total = 0.0
    for size in range(1, len(c) + 1):
        for subset in itertools.combinations(range(len(c)), size):
            corner = c[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(r - corner))
    return total


@given(st.integers(0, 2**32 - 1), st.integers(0, 7), st.lists(st.booleans(), min_size=2, max_size=2))
@settings(max_examples=200, deadline=None)
def test_hypervolume_matches_inclusion_exclusion(seed, n, maximize):
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(n, 2)), 1)
    ref = [0.5 * (-1 if m else 1) for m in maximize]  # some points fall beyond ref
    assert hypervolume_2d(values, maximize, ref) == pytest.approx(
        hv_inclusion_exclusion(values, maximize, ref), abs=1e-12)


def test_hypervolume_matches_grid_count():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 20, (40, 2)).astype(float)
    ref = [25.0, 0.0]  # minimise the first (< 25), maximise the second (> 0)
    grid_x, grid_y = np.meshgrid(np.arange(25) + 0.5, np.arange(20) + 0.5)
    cells = np.column_stack((grid_x.ravel(), grid_y.ravel()))
    covered = np.any((values[None, :, 0] <= cells[:, None, 0]) & (values[None, :, 1] >= cells[:, None, 1]), axis=1)
    assert hypervolume_2d(values, [False, True], ref) == covered.sum()


def test_hypervolume_ignores_points_not_better_than_ref():
    assert hypervolume_2d(np.array([[1.0, 5.0], [5.0, 0.0]]), [True, True], [0.0, 0.0]) == 5.0
    assert hypervolume_2d(np.zeros((0, 2)), [True, True], [0.0, 0.0]) == 0.0
    with pytest.raises(SpecError, match="ref"):
        hypervolume_2d(np.zeros((1, 2)), [True, True], [0.0])
    with pytest.raises(SpecError, match="exactly 2"):
        hypervolume_2d(np.zeros((1, 3)), [True, True, True], [0.0, 0.0, 0.0])


def test_archive_streaming_and_merge_equal_one_shot():
    rng = np.random.default_rng(7)
    values = np.round(rng.random((3000, 3)), 1)
    ids = np.arange(len(values))
    maximize = [True, False, True]
    expected = set(ids[pareto_mask(values, maximize)].tolist())
    streamed = ParetoArchive(maximize)
    for part in np.array_split(ids, 17):
        streamed.update(values[part], {"id": ids[part]})
    assert set(streamed.payload["id"].tolist()) == expected
    np.testing.assert_array_equal(streamed.values, values[streamed.payload["id"]])
    shards = [ParetoArchive(maximize) for _ in range(4)]
    for i, part in enumerate(np.array_split(rng.permutation(ids), 9)):
        shards[i % 4].update(values[part], {"id": ids[part]})
    merged = ParetoArchive(maximize)
    for shard in shards:
        merged.merge(shard)
    assert set(merged.payload["id"].tolist()) == expected
    assert len(merged) == len(expected)


def test_archive_validates_shapes_and_payload():
    arc = ParetoArchive([True, True])
    assert len(arc) == 0 and arc.merge(ParetoArchive([True, True])) is arc
    arc.update(np.array([[1.0, 2.0]]), {"id": np.array([0])})
    with pytest.raises(SpecError, match="columns must stay"):
        arc.update(np.array([[1.0, 2.0]]), {"other": np.array([0])})
    with pytest.raises(SpecError, match="length 1"):
        arc.update(np.array([[1.0, 2.0]]), {"id": np.array([0, 1])})
    with pytest.raises(SpecError, match="shape"):
        arc.update(np.zeros((1, 3)), {"id": np.array([0])})
    with pytest.raises(SpecError, match="direction"):
        arc.merge(ParetoArchive([True, False]))
