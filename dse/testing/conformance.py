"""Conformance checks every model stage's tests call (DESIGN.md section 5).

A *stage* is a pure function of dicts of arrays: ``vector(batch) -> {name: array}``. Its
scalar reference ``scalar(row) -> {name: float}`` computes the same outputs for one design,
readable line by line. The checks here are plain functions that raise ``AssertionError``
with the failing output, row and value, so any test runner can use them:

- :func:`assert_matches_reference`: vectorised == scalar on a random batch (``rtol``);
- :func:`assert_finite`: every output finite (no NaN/inf, infeasible designs included);
- :func:`assert_monotone`: scaling one input never moves an output the wrong way;
- :func:`assert_broadcasts`: a batch of scalars equals the same design as length-1 arrays.

>>> from dse.testing.conformance import assert_matches_reference
>>> vector = lambda b: {"y": 2.0 * b["x"]}
>>> scalar = lambda r: {"y": r["x"] + r["x"]}
>>> assert_matches_reference(vector, scalar, {"x": np.arange(5.0)})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

Batch = Mapping[str, Any]
Stage = Callable[[Batch], Mapping[str, Any]]


def rows(batch: Batch) -> Iterable[dict[str, float]]:
    """The designs of a batch one by one, scalars repeated."""
    n = max((np.size(v) for v in batch.values() if np.ndim(v) > 0), default=1)
    for i in range(n):
        yield {key: float(np.asarray(v).flat[i] if np.ndim(v) > 0 else v) for key, v in batch.items()}


def assert_matches_reference(vector: Stage, scalar: Callable[[dict[str, float]], Mapping[str, float]],
                             batch: Batch, *, rtol: float = 1e-9, atol: float = 0.0,
                             outputs: Iterable[str] | None = None) -> None:
    """The vectorised stage equals its scalar reference on every row of ``batch``."""
    out = vector(batch)
    names = list(outputs) if outputs is not None else None
    for i, row in enumerate(rows(batch)):
        ref = scalar(row)
        for name in names if names is not None else ref:
            got = np.asarray(out[name])
            value = float(got.flat[i] if got.ndim else got)
            np.testing.assert_allclose(value, ref[name], rtol=rtol, atol=atol,
                                       err_msg=f"output {name!r}, row {i}: {row}")


def assert_finite(outputs: Mapping[str, Any], names: Iterable[str] | None = None) -> None:
    """Every (named) output is finite."""
    for name in names if names is not None else outputs:
        values = np.asarray(outputs[name], dtype=float)
        bad = ~np.isfinite(values)
        assert not bad.any(), f"output {name!r} is not finite at rows {np.flatnonzero(bad)[:5].tolist()}"


def assert_monotone(vector: Stage, batch: Batch, field: str, factor: float, output: str, *,
                    direction: int, rtol: float = 1e-12) -> None:
    """Scaling input ``field`` by ``factor`` (> 1) never moves ``output`` against ``direction``.

    ``direction`` +1: the output must not decrease; -1: it must not increase.
    """
    if factor <= 1.0 or direction not in (1, -1):
        raise ValueError("factor must be > 1 and direction +1 or -1")
    base = np.asarray(vector(batch)[output], dtype=float)
    moved = np.asarray(vector({**batch, field: np.asarray(batch[field]) * factor})[output], dtype=float)
    wrong = direction * (moved - base) < -rtol * np.abs(base)
    assert not wrong.any(), (f"{output} moved against {'+' if direction > 0 else '-'} when {field} grew x{factor}: "
                             f"rows {np.flatnonzero(wrong)[:5].tolist()}, {base[wrong][:3]} -> {moved[wrong][:3]}")


def assert_broadcasts(vector: Stage, design: Mapping[str, float]) -> None:
    """A design of scalars gives the same outputs as the same design as length-1 arrays."""
    scalar_out = vector(dict(design))
    array_out = vector({k: np.array([v]) for k, v in design.items()})
    for name, value in scalar_out.items():
        np.testing.assert_allclose(np.ravel(array_out[name]), np.ravel(value), rtol=1e-12, err_msg=name)
