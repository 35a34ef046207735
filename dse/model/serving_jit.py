"""Serving stage: compiled kernels over designs with an optional leading load-grid axis (for
:mod:`dse.model.serving_fluid`, :mod:`dse.model.serving_queue` and :mod:`dse.model.serving`).

A kernel (:func:`dse.model.jit.kernel`) writes its outputs ``(G, n)`` row by row: :func:`at2` reads
an argument at grid row ``g`` and design ``i``, resolved when the kernel is compiled: a ``(G, n)``
array at ``[g, i]``, an ``(n,)`` array (a per-design value, the same on every grid row) at ``[i]``,
a number as itself. :func:`grid_rows` runs a kernel on numbers and arrays of those shapes and gives
its outputs back as ``(G, n)`` where an argument carries the grid, else ``(n,)``.

The kernels write numpy's operations in numpy's order, so they return its numbers bit for bit;
:func:`clip`, :func:`mx` and :func:`mn` are ``np.clip``, ``np.maximum`` and ``np.minimum`` of two
numbers (NaN propagates). Transcendentals (``exp``, ``expm1``, ``log``, ``**``) stay numpy calls
between kernels: numpy's SIMD versions and libm's differ in the last bit for some inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import types
from numba.extending import overload

from dse.model.jit import F64, kernel


def at2(x: Any, g: int, i: int) -> Any:
    """``x`` at grid row ``g``, design ``i`` (a ``(G, n)`` array), design ``i`` (``(n,)``) or itself (a
    number). Inside kernels only."""
    if isinstance(x, np.ndarray):
        return x[g, i] if x.ndim == 2 else x[i]
    return x


@overload(at2, inline="always")
def _at2_compiled(x, g, i):  # numba's typing hook: picks the reading when the kernel is compiled
    if isinstance(x, types.Array):
        if x.ndim == 2:
            return lambda x, g, i: x[g, i]
        return lambda x, g, i: x[i]
    return lambda x, g, i: x


@kernel
def clip(x, lo, hi):
    """``np.clip`` of numbers: a NaN ``x`` or ``lo`` propagates, ``lo`` wins over ``x`` only when above it."""
    if x != x:
        return x
    t = x if x > lo else lo
    if t != t:
        return t
    return t if t < hi else hi


@kernel
def mx(a, b):
    """``np.maximum`` of two numbers (NaN propagates; of equal numbers, ``b``: numpy's signed zeros)."""
    return a if (a > b or a != a) else b


@kernel
def mn(a, b):
    """``np.minimum`` of two numbers (NaN propagates; of equal numbers, ``b``: numpy's signed zeros)."""
    return a if (a < b or a != a) else b


def _arg(x: Any) -> tuple[Any, int, int]:
    """(kernel argument, grid rows, designs) of one value: 0 grid rows for a per-design value or a
    number, 1 design for a number (length-1 arrays pass as numbers: they broadcast). Boolean arrays
    pass as float64, other dtypes as they are (integer offsets)."""
    if type(x) is np.ndarray:
        if x.dtype.kind == "b":
            x = x.astype(np.float64)
        if x.ndim == 2:
            if x.shape[0] == 1:
                x = x[0]
            else:
                return x, x.shape[0], x.shape[1]
        if x.ndim == 1 and x.shape[0] != 1:
            return x, 0, x.shape[0]
        if x.size != 1:
            raise ValueError(f"a kernel argument of shape {x.shape}")
        x = x.reshape(-1)[0]
        return (float(x) if x.dtype.kind in "bf" else int(x)), 0, 1
    if x is None or type(x) is tuple:  # no value; tables (tuples of arrays), read as they are
        return x, 0, 1
    return (x if type(x) is float else float(x)), 0, 1


def grid_rows(rows_kernel: Callable, outputs: int, *xs: Any) -> list[np.ndarray]:
    """The ``outputs`` arrays a grid kernel writes for arguments ``xs`` (numbers, ``(n,)`` arrays,
    ``(G, n)`` arrays; ``(1, n)`` and length-1 arrays broadcast; None and tuples of arrays, tables,
    passed as they are): ``rows_kernel(*xs, *outs)`` fills
    every ``(G, n)`` output; returned ``(G, n)`` where an argument carries the grid, else ``(n,)``."""
    grid, n = 0, 1
    args = list(xs)
    for j, x in enumerate(xs):
        if type(x) is float:
            continue
        if type(x) is np.ndarray and x.dtype is F64 and x.ndim == 1 and x.shape[0] != 1:  # a batch column
            n = x.shape[0]
            continue
        args[j], g, m = _arg(x)
        if g:
            grid = g
        if m != 1:
            n = m
    outs = [np.empty((grid or 1, n)) for _ in range(outputs)]
    rows_kernel(*args, *outs)
    return outs if grid else [o[0] for o in outs]
