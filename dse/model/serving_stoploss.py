"""Serving stage: stop-loss lookups ``E[(P - z)+]`` of the prompt length (for the fluid model,
:mod:`dse.model.serving_prepare` and :mod:`dse.model.serving_fluid`), and the one-pass clips they use.

Pure numpy over arrays. A distribution's stop-loss table lies on :data:`STOPLOSS_GRID`
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
    """A stop-loss table on :data:`STOPLOSS_GRID` laid out for :func:`_lookup`: (intercepts, slopes,
    offsets), the line through each grid point and the next (``E[(P - z)+] = intercept + slope z``
    in the interval; slope 0 and the last value after the last point). ``(G,)`` shared: both padded
    in front by ``_BIAS`` entries, offsets None. ``(G, n)`` per design: ``(n, G)`` C-contiguous (a
    design's table in one cache-friendly run), design ``j`` at ``j G - _BIAS``. With ``rows``,
    ``table`` is a set of tables ``(R, G)`` and design ``j`` reads row ``rows[j]``, at
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
        return np.concatenate([_PAD, lines[0]]), np.concatenate([_PAD, slopes[0]]), None
    return lines, slopes, np.asarray(rows, dtype=np.intp) * t.shape[1] - _BIAS


def stoploss_at(table, mean, z, rows=None, point=None):
    """``E[(P - z)+]`` from the table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)``),
    linear between grid points; exact ``mean - z`` for ``z <= 0``. With ``rows`` (integers per
    design), ``table`` is a set of tables ``(R, G)`` and design ``j`` reads row ``rows[j]`` (the
    moments' ``in_stoploss_rows`` form, :func:`stoploss_of`). With ``point`` (every design's prompt
    length; ``table`` unused), the table of that point mass, ``max(point - grid, 0)``, read where it
    is needed instead of stored."""
    zp = lower(z, 0.0)
    at = _lookup_point(point, zp) if point is not None else _lookup(*layout(table, rows), zp)
    return np.where(z < 0.0, mean - z, at)


def _lookup(lines, slopes, at, z):
    """``E[(P - z)+]`` for ``z >= 0`` from :func:`layout`'s ``lines``, ``slopes`` and offsets ``at``:
    the grid interval (:func:`_interval`), one gather each for the line's intercept and slope; as
    :func:`stoploss_at`. NaN propagates (its index is clipped)."""
    i = _interval(z)
    if at is not None:  # per design: one flat gather per table (np.take: faster than fancy indexing)
        i += at
    zp = upper(z, _GMAX)
    zp *= np.take(slopes, i, mode="clip")
    zp += np.take(lines, i, mode="clip")
    return zp


def _interval(z):
    """The grid interval of ``z`` clipped to ``[0, 2**18]``, plus ``_BIAS``: the biased binary
    exponent of ``z**4`` (``floor(4 log2 z) + 1`` for ``z >= 1``, 0 below; the last grid point
    ``2**18`` one past the last interval, where its slope is 0)."""
    t = _clip(z, _FLOOR, _GMAX)
    t *= t
    t *= t
    i = t.view(np.int64)
    i >>= 52
    return i


def stoploss_of(w: dict, z):
    """``E[(P - z)+]`` of length moments ``w`` (a shared table, ``(G, n)`` tables per design, or a
    set of tables with ``in_stoploss_rows``)."""
    if "in_point" in w:
        return stoploss_at(None, w["in_mean"], z, point=w["in_point"])
    return stoploss_at(w["in_stoploss"], w["in_mean"], z, rows=w.get("in_stoploss_rows"))


def _stoploss(d: dict, z):
    """``E[(P - z)+]`` for ``z >= 0`` from what :func:`dse.model.serving_prepare.prepare` keeps: the
    point masses' closed form or the tables."""
    if d["point"] is not None:
        return _lookup_point(d["point"], z)
    return _lookup(d["tab_lines"], d["tab_slopes"], d["tab_at"], z)


def _lookup_point(point, z):
    """:func:`_lookup` of the point mass at ``point`` (``E[(P - z)+]`` linear between grid
    points of ``max(point - grid, 0)``, the same numbers as its table, none stored)."""
    i = _interval(z)
    zp = upper(z, _GMAX)
    lo = np.take(_GRID_AT, i, mode="clip")
    t0 = lower(point - lo, 0.0)
    s0 = lower(point - np.take(_NEXT_AT, i, mode="clip"), 0.0)
    s0 -= t0
    s0 /= np.take(_DG_AT, i, mode="clip")
    zp -= lo
    zp *= s0
    zp += t0
    return zp
