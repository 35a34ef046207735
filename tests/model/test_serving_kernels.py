"""The serving stage's compiled kernels (dse.model.serving_jit): grid_rows' shapes and broadcasting, the
stop-loss lookups bit for bit against the numpy formulation they replaced, and the load-grid axis
(a (G, n) call gives, row for row, what G calls on (n,) give)."""

from __future__ import annotations

import numpy as np
import pytest

from dse.model import serving_stoploss as sl
from dse.model.jit import kernel
from dse.model.serving_jit import at2, clip, grid_rows, mn, mx
from dse.model.serving_lengths import STOPLOSS_GRID, length_moments, stoploss
from dse.model.serving_mapping import point_stoploss


@kernel
def _probe_rows(a, b, c, out_clip, out_mx, out_mn):
    for g in range(out_clip.shape[0]):
        for i in range(out_clip.shape[1]):
            x = at2(a, g, i)
            out_clip[g, i] = clip(x, at2(b, g, i), at2(c, g, i))
            out_mx[g, i] = mx(x, at2(b, g, i))
            out_mn[g, i] = mn(x, at2(c, g, i))


@pytest.mark.parametrize("args", [
    (np.arange(6.0).reshape(2, 3), np.arange(3.0), 4.0),  # a grid, a batch column, a number
    (np.arange(3.0), np.ones(1), np.array(2.0)),  # length 1 and 0-d broadcast
    (np.arange(3.0)[None, :], 1.0, 2.0),  # a (1, n) grid passes as a batch column
    (np.array([np.nan, -0.0, 0.0, np.inf, -np.inf]), np.array([0.0, 0.0, -0.0, 1.0, np.nan]), 1.0),
    (np.arange(4) > 1, 0.5, np.arange(4)),  # bool and int columns
])
def test_grid_rows_matches_numpy(args: tuple) -> None:
    got = grid_rows(_probe_rows, 3, *args)
    a, b, c = (np.asarray(x) for x in args)
    want = (np.clip(a.astype(float), b, c), np.maximum(a.astype(float), b), np.minimum(a.astype(float), c))
    shape = np.broadcast_shapes(a.shape, b.shape, c.shape)
    for x, y in zip(got, want, strict=True):
        assert x.shape == (shape if len(shape) == 2 and shape[0] > 1 else (shape[-1],))
        np.testing.assert_array_equal(x.reshape(shape), np.broadcast_to(y, shape))
        assert np.array_equal(np.signbit(x.reshape(shape)), np.signbit(np.broadcast_to(y, shape)))


# the numpy formulation replaced by the compiled lookups (serving_stoploss._lookup, _lookup_point, _interval)
def _interval(z):  # noqa: ANN001, ANN202
    t = np.clip(z, sl._FLOOR, sl._GMAX)
    t = t * t
    t = t * t
    return t.view(np.int64) >> 52


def _lookup(lines, slopes, at, z):  # noqa: ANN001, ANN202
    i = _interval(z)
    if at is not None:
        i = i + at
    return np.minimum(z, sl._GMAX) * np.take(slopes, i, mode="clip") + np.take(lines, i, mode="clip")


def _lookup_point(point, z):  # noqa: ANN001, ANN202
    i = _interval(z)
    lo = np.take(sl._GRID_AT, i, mode="clip")
    t0 = np.maximum(point - lo, 0.0)
    s0 = (np.maximum(point - np.take(sl._NEXT_AT, i, mode="clip"), 0.0) - t0) / np.take(sl._DG_AT, i, mode="clip")
    return (np.minimum(z, sl._GMAX) - lo) * s0 + t0


def _zs(rng: np.random.Generator, n: int) -> np.ndarray:
    z = np.exp(rng.uniform(-3.0, 14.0, n))
    z[:8] = [0.0, 0.9, 1.0, 2.0**18, 3e5, np.inf, np.nan, 2.0**0.25]
    return z


def test_stoploss_lookups_match_numpy() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    z = _zs(rng, n)
    m = length_moments({"in": {"kind": "lognormal", "median": 300.0, "sigma": 1.0},
                        "out": {"kind": "fixed", "value": 100.0}})
    table = m["in_stoploss"]
    (lines, slopes), at = sl.layout(table)
    np.testing.assert_array_equal(sl._lookup(None, (lines, slopes), at, z), _lookup(lines, slopes, at, z))
    # a set of tables with a row per design, and a table per design
    tables = np.stack([table, stoploss(np.array([5.0, 700.0]), np.array([0.5, 0.5])), point_stoploss([90.0])[0]])
    rows = rng.integers(0, 3, n)
    (lines, slopes), at = sl.layout(tables, rows)
    np.testing.assert_array_equal(sl._lookup(None, (lines, slopes), at, z), _lookup(lines, slopes, at, z))
    per_design = tables[rows].T  # (G, n)
    (lines, slopes), at = sl.layout(per_design)
    np.testing.assert_array_equal(sl._lookup(None, (lines, slopes), at, z), _lookup(lines, slopes, at, z))
    # point masses
    point = rng.integers(1, 9000, n).astype(float)
    np.testing.assert_array_equal(sl._lookup(point, None, None, z), _lookup_point(point, z))
    # numbers keep their shape; negative z is exact
    assert sl.stoploss_at(table, m["in_mean"], np.array(-5.0)).shape == ()
    np.testing.assert_allclose(sl.stoploss_at(table, m["in_mean"], STOPLOSS_GRID), table)


def test_grid_axis_matches_rows() -> None:
    """fluid_state and latencies on a (G, n) load grid give each row's (n,) result, bit for bit."""
    import dse
    from dse.model import serving
    from dse.model.serving_queue import latencies, queue_constants

    ev = dse.Evaluator("mixtral-8x7b", "hgx-h100-8", serving=True)  # MoE, pipelines, collectives
    rng = np.random.default_rng(5)
    n = 300
    designs = {"tp": rng.choice([1.0, 2.0], n), "pp": rng.choice([1.0, 2.0, 4.0], n), "ep": rng.choice([1.0, 2.0], n),
               "spec_len": rng.choice([0.0, 2.0], n), "workload": 1.0}
    captured = {}
    real = serving.prepare

    def keep(c, w, s):  # noqa: ANN001, ANN202
        captured.update(c=c, w=w, s={**serving.SCHED_DEFAULTS, **s})
        return real(c, w, s)

    serving.prepare = keep
    try:
        ev(designs)
    finally:
        serving.prepare = real
    c, w, s = captured["c"], captured["w"], captured["s"]
    d = real(c, w, s)
    n_grid = np.array([[1.0], [7.0], [40.0]]) * np.ones(n)
    grid = serving.fluid_state(c, d, s, n_grid)
    lam = 0.5 * grid["lam"]
    qc = queue_constants(c, d, w, n_grid[-1])
    lat = latencies(qc, grid, lam, 2.0 * grid["lam"][-1])
    for g in range(n_grid.shape[0]):
        one = serving.fluid_state(c, d, s, n_grid[g].copy())
        for key, v in one.items():
            np.testing.assert_array_equal(grid[key][g], v)
        lat_g = latencies(qc, one, lam[g].copy(), 2.0 * grid["lam"][-1])
        for key, v in lat_g.items():
            np.testing.assert_array_equal(lat[key][g], v)
