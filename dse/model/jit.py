"""Compiled element-wise kernels: a chain of array operations fused into one loop over the designs.

A numpy expression of ``k`` operations makes ``k`` passes over the chunk and ``k`` temporaries;
a :func:`kernel` makes one pass and keeps every intermediate in registers. Kernels are numba
functions (``nopython``, compiled on first use for each combination of argument types and cached
on disk next to the module). They keep IEEE semantics so that a kernel returns, bit for bit,
what the numpy expression it replaced returned, written in the same order: no ``fastmath`` (no
re-association, no fused multiply-add) and numpy's error model (``x / 0`` is ``inf`` or ``nan``,
never an exception).

Arguments are numbers or 1-D float64 arrays of the batch's length, mixed freely: :func:`at`
reads row ``i`` of an array and a number as itself, resolved when the kernel is compiled (no
test in the loop). :func:`rows` gives the batch length of a kernel's arguments, :func:`arg` makes a value a kernel
argument and :func:`columns` makes kernel arguments of values that broadcast in any shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import overload

Array = np.ndarray | float


def kernel(fn: Callable) -> Callable:
    """``fn`` compiled by numba: nopython, cached on disk, numpy's floating-point error model."""
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)


def at(x: Any, i: int) -> Any:
    """Row ``i`` of ``x`` (an array), or ``x`` itself (a number). Inside kernels only."""
    return x[i] if isinstance(x, np.ndarray) else x


@overload(at, inline="always")
def _at_compiled(x, i):  # numba's typing hook: picks the reading when the kernel is compiled
    if isinstance(x, types.Array):
        return lambda x, i: x[i]
    return lambda x, i: x


def rows(*xs: Array) -> int:
    """The batch length of kernel arguments: the length of the arrays (1 when all are numbers)."""
    n = 1
    for x in xs:
        if type(x) is np.ndarray and x.ndim:
            n = len(x)
    return n


def arg(x: Array) -> Array:
    """``x`` as a kernel argument: a float64 array as it is, any number as a Python float (one
    compiled variant for ints, floats and numpy scalars alike), other arrays as float64."""
    if type(x) is np.ndarray:
        if x.ndim == 0:
            return float(x)
        return x if x.dtype == np.float64 else x.astype(np.float64)
    return float(x)


def columns(*xs: Any) -> tuple[tuple[Array, ...], int, tuple[int, ...]]:
    """Kernel arguments (:func:`arg`) for values that broadcast together, their row count and their
    broadcast shape. Numbers and 1-D arrays of one length pass as they are; otherwise every array is
    broadcast to the common shape and flattened (outputs are reshaped by the caller)."""
    args = [arg(x) for x in xs]
    arrays = [x for x in args if type(x) is np.ndarray]
    if not arrays:
        return tuple(args), 1, ()
    n = len(arrays[0])
    if all(x.ndim == 1 and len(x) == n for x in arrays):
        return tuple(args), n, (n,)
    shape = np.broadcast_shapes(*(x.shape for x in arrays))
    flat = tuple(np.ascontiguousarray(np.broadcast_to(x, shape)).ravel() if type(x) is np.ndarray else x
                 for x in args)
    return flat, int(np.prod(shape)), shape
