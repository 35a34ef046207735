"""Serving stage: stop-loss lookups ``E[(P - z)+]`` of the prompt length (for the fluid model,
:mod:`dse.model.serving_prepare` and :mod:`dse.model.serving_fluid`), and the one-pass clips they use.

Compiled lookups (:mod:`dse.model.serving_jit`): :func:`stoploss_row` inside the fluid model's
kernels, :func:`_lookup` one pass over arrays. A distribution's stop-loss table lies on :data:`STOPLOSS_GRID`
(:func:`dse.model.serving_lengths.length_moments`); it is read linearly between grid points in one
of three forms: a table shared by every design, a table per design, or a few tables with a row per
design (``in_stoploss_rows``). A point mass (``in_point``: each design's own prompt length) is read
in closed form, ``max(point - grid, 0)`` at the grid points, no table stored. :func:`stoploss_at`
and :func:`stoploss_of` read the moments as given; :func:`_stoploss` reads what
:func:`dse.model.serving_prepare.prepare` keeps (:func:`layout`, one gather per table). The grid
interval comes from the binary exponent of ``z**4`` (the grid steps by ``2**(1/4)``), not a ``log2``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from dse.model.jit import kernel
from dse.model.serving_jit import at2, clip, grid_rows
from dse.model.serving_lengths import STOPLOSS_GRID, STOPLOSS_STEPS_PER_OCTAVE

try:  # the ufunc behind np.clip, without its Python wrapper (np.maximum with a scalar is ~2x slower)
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover (numpy < 2)
    _clip = np.clip

_INF = np.inf
_GMAX = float(STOPLOSS_GRID[-1])
_BIAS = 1022  # float64 exponent bias less one: the biased exponent of z**4 is z's grid interval + _BIAS
_FLOOR = 0.9  # z floored here for its interval: 0.9**4 lies in [1/2, 1), the first interval (z < 1)
assert STOPLOSS_STEPS_PER_OCTAVE == 4 and STOPLOSS_GRID[1] == 1.0  # the exponent of z**4 is 4 log2(z)
_PAD = np.zeros(_BIAS)
_GRID_AT = np.concatenate([_PAD, STOPLOSS_GRID])  # indexed by interval + _BIAS (the last: z = 2**18)
_NEXT_AT = np.concatenate([_PAD, STOPLOSS_GRID[1:], [2.0 * _GMAX]])  # the interval's upper grid point
_DG_AT = np.where(_NEXT_AT > _GRID_AT, _NEXT_AT - _GRID_AT, 1.0)  # and its width (1 in the padding)


def lower(a, lo):
    """``max(a, lo)`` for a scalar ``lo`` (NaN propagates), as one clip pass."""
    return _clip(a, lo, _INF)


def upper(a, hi):
    """``min(a, hi)`` for a scalar ``hi`` (NaN propagates), as one clip pass."""
    return _clip(a, -_INF, hi)


def layout(table, rows=None) -> tuple:
    """A stop-loss table on :data:`STOPLOSS_GRID` laid out for :func:`stoploss_row`: ((intercepts,
    slopes), offsets), the line through each grid point and the next (``E[(P - z)+] = intercept +
    slope z`` in the interval; slope 0 and the last value after the last point), flat. ``(G,)``
    shared: both padded in front by ``_BIAS`` entries, offsets None. ``(G, n)`` per design: as
    ``(n, G)`` (a design's table in one cache-friendly run), design ``j`` at ``j G - _BIAS``. With
    ``rows``, ``table`` is a set of tables ``(R, G)`` and design ``j`` reads row ``rows[j]``, at
    ``rows[j] G - _BIAS``."""
    t = np.asarray(table, dtype=float)
    shared = rows is None and t.ndim == 1
    if shared:
        t = t[None, :]
    elif rows is None:
        t, rows = t.T, np.arange(t.shape[1])
    slopes = np.zeros(t.shape)
    slopes[:, :-1] = np.diff(t, axis=1) / np.diff(STOPLOSS_GRID)
    lines = t - slopes * STOPLOSS_GRID
    if shared:
        return (np.concatenate([_PAD, lines[0]]), np.concatenate([_PAD, slopes[0]])), None
    return (lines.ravel(), slopes.ravel()), np.asarray(rows, dtype=np.intp) * t.shape[1] - _BIAS


def stoploss_at(table, mean, z, rows=None, point=None):
    """``E[(P - z)+]`` from the table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)``),
    linear between grid points; exact ``mean - z`` for ``z <= 0``. With ``rows`` (integers per
    design), ``table`` is a set of tables ``(R, G)`` and design ``j`` reads row ``rows[j]`` (the
    moments' ``in_stoploss_rows`` form, :func:`stoploss_of`). With ``point`` (every design's prompt
    length; ``table`` unused), the table of that point mass, ``max(point - grid, 0)``, read where it
    is needed instead of stored."""
    zp = lower(z, 0.0)
    at = _lookup(point, None, None, zp) if point is not None else _lookup(None, *layout(table, rows), zp)
    return np.where(z < 0.0, mean - z, at)


def stoploss_of(w: dict, z):
    """``E[(P - z)+]`` of length moments ``w`` (a shared table, ``(G, n)`` tables per design, or a
    set of tables with ``in_stoploss_rows``)."""
    if "in_point" in w:
        return stoploss_at(None, w["in_mean"], z, point=w["in_point"])
    return stoploss_at(w["in_stoploss"], w["in_mean"], z, rows=w.get("in_stoploss_rows"))


def _stoploss(d: dict, z):
    """``E[(P - z)+]`` for ``z >= 0`` from what :func:`dse.model.serving_prepare.prepare` keeps: the
    point masses' closed form or the tables."""
    return _lookup(d["point"], d["tab"], d["tab_at"], z)


def _lookup(point, tab, at, z):
    """``E[(P - z)+]`` for ``z >= 0`` (numbers, ``(n,)`` or ``(G, n)`` arrays) in one compiled pass
    (:func:`stoploss_row`), in the shape of ``z``, ``point`` and ``at`` broadcast."""
    (out,) = grid_rows(_lookup_rows, 1, point, tab, at, z)
    return out.reshape(np.broadcast_shapes(np.shape(z), np.shape(point), np.shape(at)))


@kernel
def _lookup_rows(point, tab, at, z, out):
    for g in range(out.shape[0]):
        for i in range(out.shape[1]):
            out[g, i] = stoploss_row(point, tab, at, g, i, at2(z, g, i))


@intrinsic
def _bits(typingctx, x):  # noqa: ARG001 (numba's signature)
    """The bits of a float64 as an int64 (numpy's ``view(np.int64)``), inside kernels."""
    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@kernel
def _interval_row(z):
    """The grid interval of ``z`` clipped to ``[0, 2**18]``, plus ``_BIAS``: the biased binary
    exponent of ``z**4`` (``floor(4 log2 z) + 1`` for ``z >= 1``, 0 below; the last grid point
    ``2**18`` one past the last interval, where its slope is 0). Out of the tables' range for NaN:
    the callers clip the index, the lookup is NaN."""
    t = clip(z, _FLOOR, _GMAX)
    t *= t
    t *= t
    return _bits(t) >> 52


def stoploss_row(point, tab, at, g, i, z):  # noqa: ANN001, ANN201
    """``E[(P - z)+]`` for ``z >= 0`` at grid row ``g``, design ``i`` inside kernels: ``point`` the
    point masses (``tab`` and ``at`` None; ``max(point - grid, 0)`` linear between grid points, the
    same numbers as its table, none stored), else ``tab`` the (intercepts, slopes) of :func:`layout`
    and ``at`` its offsets (None: one shared table); the grid interval (:func:`_interval_row`), one
    gather each for the line's intercept and slope. The form is picked when the kernel is compiled."""
    raise NotImplementedError("inside kernels only")


@overload(stoploss_row, inline="always")
def _stoploss_row_compiled(point, tab, at, g, i, z):
    if not isinstance(point, types.NoneType):
        def point_mass(point, tab, at, g, i, z):
            j = min(max(_interval_row(z), 0), len(_GRID_AT) - 1)
            p = at2(point, g, i)
            lo = _GRID_AT[j]
            t0 = clip(p - lo, 0.0, np.inf)
            s0 = clip(p - _NEXT_AT[j], 0.0, np.inf)
            s0 -= t0
            s0 /= _DG_AT[j]
            zp = clip(z, -np.inf, _GMAX)
            zp -= lo
            zp *= s0
            zp += t0
            return zp
        return point_mass
    if isinstance(at, types.NoneType):
        def shared(point, tab, at, g, i, z):
            j = min(max(_interval_row(z), 0), len(tab[0]) - 1)
            zp = clip(z, -np.inf, _GMAX)
            zp *= tab[1][j]
            zp += tab[0][j]
            return zp
        return shared

    def per_design(point, tab, at, g, i, z):
        j = min(max(_interval_row(z) + int(at2(at, g, i)), 0), len(tab[0]) - 1)
        zp = clip(z, -np.inf, _GMAX)
        zp *= tab[1][j]
        zp += tab[0][j]
        return zp
    return per_design
