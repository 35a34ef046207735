"""Serving stage: stop-loss lookups ``E[(P - z)+]`` of the prompt length (for the fluid model,
:mod:`dse.model.serving_prepare` and :mod:`dse.model.serving_fluid`), and the one-pass clips they use.

Pure numpy over arrays. A distribution's stop-loss table lies on :data:`STOPLOSS_GRID`
(:func:`dse.model.serving_lengths.length_moments`); it is read linearly between grid points in one
of three forms: a table shared by every design, a table per design, or a few tables with a row per
design (``in_stoploss_rows``). A point mass (``in_point``: each design's own prompt length) is read
in closed form, ``max(point - grid, 0)`` at the grid points, no table stored. :func:`stoploss_at`
and :func:`stoploss_of` read the moments as given; :func:`_stoploss` reads what
:func:`dse.model.serving_prepare.prepare` keeps (:func:`design_major`'s layout, one gather each).
"""

from __future__ import annotations

import numpy as np

from dse.model.arrays import ndim
from dse.model.serving_lengths import STOPLOSS_GRID, STOPLOSS_STEPS_PER_OCTAVE

try:  # the ufunc behind np.clip, without its Python wrapper (np.maximum with a scalar is ~2x slower)
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover (numpy < 2)
    _clip = np.clip

_INF = np.inf
_GMAX = float(STOPLOSS_GRID[-1])
_ILAST = float(len(STOPLOSS_GRID) - 2)  # the last interval
_DG = np.diff(STOPLOSS_GRID)
_LOG_FLOOR = 2.0 ** (-1.0 / STOPLOSS_STEPS_PER_OCTAVE)  # log2 lands in the first interval below 1


def lower(a, lo):
    """``max(a, lo)`` for a scalar ``lo`` (NaN propagates), as one clip pass."""
    return _clip(a, lo, _INF)


def upper(a, hi):
    """``min(a, hi)`` for a scalar ``hi`` (NaN propagates), as one clip pass."""
    return _clip(a, -_INF, hi)


def design_major(table) -> tuple[np.ndarray, np.ndarray]:
    """A stop-loss table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)`` per design) and
    its slopes between grid points, laid out for :func:`stoploss_at`'s gathers: per design
    ``(n, G)`` and ``(n, G - 1)``, C-contiguous (a design's table in one cache-friendly run)."""
    dg = np.diff(STOPLOSS_GRID)
    if ndim(table) == 1:
        return table, np.diff(table) / dg
    t = np.ascontiguousarray(np.asarray(table).T)
    return t, np.diff(t, axis=1) / dg


def stoploss_at(table, mean, z, slopes=None, rows=None, point=None):
    """``E[(P - z)+]`` from the table on :data:`STOPLOSS_GRID` (``(G,)`` shared or ``(G, n)``),
    linear between grid points; exact ``mean - z`` for ``z <= 0``. With ``slopes``, ``table``
    and ``slopes`` are :func:`design_major`'s (one gather fewer, cache-friendly). With ``rows``
    (integers per design), ``table`` is a set of tables ``(R, G)`` and design ``j`` reads row
    ``rows[j]`` (the moments' ``in_stoploss_rows`` form, :func:`stoploss_of`). With ``point``
    (every design's prompt length; ``table`` unused), the table of that point mass,
    ``max(point - grid, 0)``, read where it is needed instead of stored."""
    g = STOPLOSS_GRID
    if slopes is not None:
        pair = None if rows is None else (rows * table.shape[1], rows * slopes.shape[1])
        return np.where(z < 0.0, mean - z, _lookup(table, slopes, pair, np.maximum(z, 0.0)))
    zp = np.clip(z, 0.0, g[-1])
    pos = np.where(zp < 1.0, zp, 1.0 + np.log2(np.maximum(zp, 1.0)) * STOPLOSS_STEPS_PER_OCTAVE)
    i0 = np.clip(pos.astype(np.intp), 0, len(g) - 2)  # (NaN casts to the lowest integer)
    lo = np.take(g, i0)
    if point is not None:
        t0, t1 = np.maximum(point - lo, 0.0), np.maximum(point - g[i0 + 1], 0.0)
    elif rows is not None:
        at = rows * table.shape[1] + i0
        t0, t1 = np.take(table, at), np.take(table, at + 1)
    elif ndim(table) == 1:
        t0, t1 = table[i0], table[i0 + 1]
    else:
        cols = np.arange(table.shape[1])
        t0, t1 = table[i0, cols], table[i0 + 1, cols]
    return np.where(z < 0.0, mean - z, t0 + (t1 - t0) * ((zp - lo) / (g[i0 + 1] - lo)))


def _lookup(table, slopes, rows, z):
    """``E[(P - z)+]`` for ``z >= 0`` from :func:`design_major`'s ``table`` and ``slopes``
    (``rows``: :func:`_rows` of a per-design table, None to compute them): the grid interval
    from ``log2`` (``z < 1``: the first), one gather each for the table, its slope and the grid
    point; as :func:`stoploss_at`. NaN propagates (its index is clipped)."""
    zp = upper(z, _GMAX)
    i0 = _interval(zp)
    zp -= np.take(STOPLOSS_GRID, i0, mode="clip")
    if ndim(table) == 1:
        t0, s0 = np.take(table, i0, mode="clip"), np.take(slopes, i0, mode="clip")
    else:  # per design, (n, G): one flat gather per table (np.take: faster than fancy indexing)
        rows_t, rows_s = _rows(table) if rows is None else rows
        t0, s0 = np.take(table, i0 + rows_t, mode="clip"), np.take(slopes, i0 + rows_s, mode="clip")
    zp *= s0
    zp += t0
    return zp


def _interval(zp):
    """The grid interval of ``zp`` in ``[0, 2**18]``: ``1 + 4 log2(zp)`` rounded down for ``zp >= 1``,
    0 below (``zp`` floored at ``2**-0.25`` puts it in ``[0, 1)``), at most the last interval."""
    pos = np.log2(lower(zp, _LOG_FLOOR))
    pos *= STOPLOSS_STEPS_PER_OCTAVE
    pos += 1.0
    return upper(pos, _ILAST).astype(np.intp)


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
    return _lookup(d["tab"], d["tab_slopes"], d["rows"], z)


def _lookup_point(point, z):
    """:func:`_lookup` of the point mass at ``point`` (``E[(P - z)+]`` linear between grid
    points of ``max(point - grid, 0)``, the same numbers as its table, none stored)."""
    zp = upper(z, _GMAX)
    i0 = _interval(zp)
    lo = np.take(STOPLOSS_GRID, i0, mode="clip")
    t0 = lower(point - lo, 0.0)
    s0 = lower(point - np.take(STOPLOSS_GRID, i0 + 1, mode="clip"), 0.0)
    s0 -= t0
    s0 /= np.take(_DG, i0, mode="clip")
    zp -= lo
    zp *= s0
    zp += t0
    return zp


def _rows(table) -> tuple:
    """Each design's offset into a per-design ``(n, G)`` table and its ``(n, G - 1)`` slopes."""
    i = np.arange(table.shape[0])
    return i * table.shape[1], i * (table.shape[1] - 1)
