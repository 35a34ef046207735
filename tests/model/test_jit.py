"""The compiled-kernel helpers (dse.model.jit): numbers and arrays mixed, numpy's floating-point
semantics kept, and a kernel equal bit for bit to the numpy expression it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from dse.model import jit, perf


@jit.kernel
def _affine_rows(a, b, c, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = jit.at(a, i) * jit.at(b, i) + jit.at(c, i) / jit.at(b, i)


def _affine(a, b, c):  # noqa: ANN001, ANN202
    args, n, _ = jit.columns(a, b, c)
    out = np.empty(n)
    _affine_rows(*args, out)
    return out


@pytest.mark.parametrize("scalars", [(), ("a",), ("b",), ("a", "c"), ("a", "b", "c")])
def test_numbers_and_arrays_mix(scalars: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    cols = {name: (2.5 if name in scalars else rng.uniform(-1, 1, 7)) for name in "abc"}
    cols["b"] = np.where(np.arange(7) == 3, 0.0, cols["b"]) if "b" not in scalars else 0.0  # x / 0 -> inf / nan
    with np.errstate(all="ignore"):
        a, b, c = (np.asarray(cols[name]) for name in "abc")
        want = a * b + c / b
    got = _affine(*(cols[name] for name in "abc"))
    assert got.shape == (7,) if len(scalars) < 3 else (1,)
    np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape))  # NaN == NaN here


def test_arg_and_columns() -> None:
    assert jit.arg(np.int64(3)) == 3.0 and type(jit.arg(np.int64(3))) is float
    assert type(jit.arg(np.array(2.0))) is float
    assert jit.arg(np.arange(3)).dtype == np.float64
    args, n, shape = jit.columns(1, np.zeros(5), np.arange(5), np.array(2.0))
    assert n == 5 and shape == (5,) and [type(a) for a in args] == [float, np.ndarray, np.ndarray, float]
    assert args[2].dtype == np.float64
    assert jit.columns(1.0, 2)[1:] == (1, ())
    args, n, shape = jit.columns(np.ones((2, 1)), np.arange(3), 4.0)  # broadcast and flattened
    assert n == 6 and shape == (2, 3) and args[0].shape == (6,) and args[1].tolist() == [0, 1, 2, 0, 1, 2]


def test_sum_max_linear_matches_the_brute_sum() -> None:
    """The compiled closed form against the sum it replaces, across both regimes and the crossover."""
    rng = np.random.default_rng(1)
    n = 400
    a0, a1, b0, b1 = rng.uniform(-5, 5, (4, n))
    a1[:50] = b1[:50]  # parallel lines: the crossover is +-inf or NaN
    a0[:25] = b0[:25]
    hi = rng.integers(1, 60, n).astype(float)
    got = perf.sum_max_linear(a0, a1, b0, b1, 1.0, hi, hi, hi * (hi + 1.0) / 2.0)
    want = [sum(max(a0[i] + a1[i] * c, b0[i] + b1[i] * c) for c in range(1, int(hi[i]) + 1)) for i in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    one = perf.sum_max_linear(1.0, 2.0, 3.0, 0.0, 1.0, 4.0, 4.0, 10.0)
    assert type(one) is float and one == 3.0 + 5.0 + 7.0 + 9.0  # max(1 + 2c, 3) for c = 1..4


def test_the_kernel_cache_is_keyed_by_every_source(tmp_path, monkeypatch) -> None:
    """numba keys a cached kernel on its own file only: a change to any source (a callee in another
    module, a constant it freezes) must move the cache to another folder."""
    model, spec = tmp_path / "model", tmp_path / "spec"
    model.mkdir(), spec.mkdir()
    (model / "a.py").write_text("x = 1\n")
    (spec / "units.py").write_text("TERA = 1e12\n")
    monkeypatch.setattr(jit, "_SOURCE_DIRS", (model, spec))
    first = jit.cache_dir(tmp_path / "cache")
    assert first.parent == tmp_path / "cache" and first.name.startswith("dse-kernels-")
    assert jit.cache_dir(tmp_path / "cache") == first
    (spec / "units.py").write_text("TERA = 1e9\n")
    second = jit.cache_dir(tmp_path / "cache")
    (model / "b.py").write_text("y = 2\n")
    assert len({first, second, jit.cache_dir(tmp_path / "cache")}) == 3
