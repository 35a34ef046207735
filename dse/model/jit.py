"""Compiled element-wise kernels: a chain of array operations fused into one loop over the designs.

A numpy expression of ``k`` operations makes ``k`` passes over the chunk and ``k`` temporaries;
a :func:`kernel` makes one pass and keeps every intermediate in registers. Kernels are numba
functions (``nopython``, compiled on first use for each combination of argument types and cached
on disk next to the module). They keep IEEE semantics so that a kernel returns, bit for bit,
what the numpy expression it replaced returned, written in the same order: no ``fastmath`` (no
re-association, no fused multiply-add) and numpy's error model (``x / 0`` is ``inf`` or ``nan``,
never an exception).

**The disk cache.** numba keys a cached kernel on its own source file only, so a kernel that calls a
kernel of another module would keep the callee's old code after the callee changes. Every kernel of
the package is therefore cached in a folder named by a hash of the model's sources
(:func:`cache_dir`): any change to them compiles afresh. (Importing the package sets numba's cache
folder for the process: other numba code cached in the same process lands there too.)

Arguments are numbers or 1-D float64 arrays of the batch's length, mixed freely: :func:`at`
reads row ``i`` of an array and a number as itself, resolved when the kernel is compiled (no
test in the loop). :func:`columns` makes kernel arguments of values that broadcast together
(:func:`dse.model.arrays.fused` runs a kernel on them), :func:`arg` one value.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import overload

Array = np.ndarray | float
_MODEL_DIR = Path(__file__).resolve().parent
_SOURCE_DIRS = (_MODEL_DIR, _MODEL_DIR.parent / "spec")  # the kernels and the constants they freeze
_CACHE_PREFIX = "dse-kernels-"
_STALE_S = 3600.0  # a folder of older sources untouched this long is removed


def cache_dir(base: str | os.PathLike | None = None) -> Path:
    """The folder of the compiled kernels: ``base`` (``NUMBA_CACHE_DIR`` where set, else the model's
    ``__pycache__``) / ``dse-kernels-<hash of the sources of dse.model and dse.spec>``."""
    digest = hashlib.sha256()
    for folder in _SOURCE_DIRS:
        for path in sorted(folder.glob("*.py")):
            digest.update(f"{folder.name}/{path.name}".encode() + b"\0" + path.read_bytes() + b"\0")
    root = Path(base) if base else Path(os.environ.get("NUMBA_CACHE_DIR") or _MODEL_DIR / "__pycache__")
    return root / f"{_CACHE_PREFIX}{digest.hexdigest()[:16]}"


def _use_cache_dir(folder: Path) -> None:
    """Make ``folder`` numba's cache folder and remove the package's folders of older sources beside it
    that nothing has written to for an hour (best effort)."""
    numba.config.CACHE_DIR = str(folder)
    now = time.time()
    for old in folder.parent.glob(f"{_CACHE_PREFIX}*"):
        try:
            if old != folder and now - old.stat().st_mtime > _STALE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


_use_cache_dir(cache_dir())


def kernel(fn: Callable) -> Callable:
    """``fn`` compiled by numba: nopython, cached on disk, numpy's floating-point error model."""
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)


def inlined(fn: Callable) -> Callable:
    """A :func:`kernel` part inlined into each kernel that calls it, before compilation: a constant
    argument of a call folds the part's branches on it there (one specialised loop per constant)."""
    return numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(fn)


def at(x: Any, i: int) -> Any:
    """Row ``i`` of ``x`` (an array), or ``x`` itself (a number). Inside kernels only."""
    return x[i] if isinstance(x, np.ndarray) else x


@overload(at, inline="always")
def _at_compiled(x, i):  # numba's typing hook: picks the reading when the kernel is compiled
    if isinstance(x, types.Array):
        return lambda x, i: x[i]
    return lambda x, i: x


def arg(x: Array) -> Array:
    """``x`` as a kernel argument: a float64 array as it is, any number as a Python float (one
    compiled variant for ints, floats and numpy scalars alike), other arrays as float64."""
    if type(x) is np.ndarray:
        if x.ndim == 0:
            return float(x)
        return x if x.dtype == np.float64 else x.astype(np.float64)
    return float(x)


F64 = np.dtype(np.float64)  # compared by identity: numpy's float64 arrays share this descriptor


def columns(*xs: Any) -> tuple[tuple | list, int, tuple[int, ...]]:
    """Kernel arguments for values that broadcast together, their row count and their broadcast
    shape (``()`` where every value is a number: one row). Numbers (and 0-d arrays) become Python
    floats and 1-D arrays of one length float64 arrays, in one pass over the values (~0.08 us each:
    this runs ~40 times per chunk); other shapes are broadcast to the common one and flattened (the
    caller reshapes its outputs)."""
    n = -1
    args = None  # a copy of xs once a value changes
    j = -1
    for x in xs:
        j += 1
        kind = type(x)
        if kind is float:
            continue
        if kind is np.ndarray:
            if x.ndim == 1:
                if n < 0:
                    n = x.shape[0]
                elif x.shape[0] != n:
                    return _broadcast_columns(xs)
                if x.dtype is F64:
                    continue
                value = x.astype(np.float64)
            elif x.ndim == 0:
                value = float(x)
            else:
                return _broadcast_columns(xs)
        else:
            value = float(x)
        if args is None:
            args = list(xs)
        args[j] = value
    return (xs if args is None else args), (n if n >= 0 else 1), ((n,) if n >= 0 else ())


def _broadcast_columns(xs: tuple) -> tuple[list[Array], int, tuple[int, ...]]:
    """:func:`columns` of values that are not all numbers or of one batch axis."""
    args = [arg(x) for x in xs]
    shape = np.broadcast_shapes(*(a.shape for a in args if type(a) is np.ndarray))
    flat = [np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1) if type(a) is np.ndarray else a
            for a in args]
    return flat, int(np.prod(shape)), shape
