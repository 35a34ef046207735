"""In-place arithmetic on temporaries: one buffer per chain of operations instead of one per step.

A chunk of 16,384 designs makes 128 KiB arrays, under the 256 KiB from which numpy elides
temporaries by itself; reusing a temporary keeps it in cache (0.20 against 0.30 ns per element
operation in an 8-step chain on the development VM).
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray | float


def ndim(x: Array) -> int:
    """``np.ndim(x)`` for an array or a number, without numpy's call overhead (~1 us a call)."""
    return getattr(x, "ndim", 0)


def accumulate(fresh: Array, x: Array, op: np.ufunc = np.add) -> Array:
    """``op(fresh, x)``, written into ``fresh`` when it is an array of the result's shape.

    ``fresh`` must be a temporary the caller owns (the result of arithmetic, never an input)."""
    if type(fresh) is np.ndarray:
        shape = getattr(x, "shape", ())  # no numpy call: this runs ~50 times per chunk
        if not shape or shape == fresh.shape:
            return op(fresh, x, out=fresh)
    return op(fresh, x)


def scale(count: Array, x: Array) -> Array:
    """``count * x``, ``x`` itself where ``count`` is the scalar 1 (one step, one device, one replica)."""
    return x if ndim(count) == 0 and count == 1.0 else count * x


def fold(values: list[Array], op: np.ufunc = np.add) -> Array:
    """``op`` over ``values`` (arrays or scalars) left to right, in one fresh buffer."""
    if len(values) == 1:
        return values[0]
    out = op(values[0], values[1])
    for x in values[2:]:
        out = accumulate(out, x, op)
    return out


def total(values: list[Array]) -> Array:
    """Sum of ``values``, accumulated in one fresh buffer (:func:`fold`)."""
    return fold(values)
