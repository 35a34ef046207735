"""Pareto fronts: non-dominated masks, exact 2-D hypervolume and a streaming archive.

Pure numpy, no I/O. Point ``q`` dominates ``p`` when ``q`` is at least as good in every
objective and strictly better in one; rows equal in every objective never dominate each
other, so every copy of a non-dominated point is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dse.spec.errors import SpecError

# Pairwise comparisons (candidate rows x dominating rows) per vectorised block, k >= 3.
_BLOCK_PAIRS = 1 << 21
# Rows whose front serves as pivots to pre-filter large inputs.
_PIVOT_SAMPLE = 1024


def _as_costs(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """``values`` as an (n, k) float array to minimise (maximised columns negated)."""
    arr = np.asarray(values, dtype=np.float64)
    flags = np.asarray(maximize, dtype=bool)
    if arr.ndim != 2:
        raise SpecError("", "values", "must be a 2-D array (points x objectives)", arr.shape)
    if flags.shape != (arr.shape[1],) or arr.shape[1] < 1:
        raise SpecError("", "maximize", f"needs one flag per objective column ({arr.shape[1]})", list(flags))
    if np.isnan(arr).any():
        raise SpecError("", "values", "objective values must not be NaN", "nan")
    return np.where(flags, -arr, arr)


def _mask_2d(costs: np.ndarray) -> np.ndarray:
    """Non-dominated rows of (n, 2) costs in O(n log n).

    Sorted by the first cost, a point survives iff it has the least second cost of its
    group of equal first costs, and that least is below every earlier group's.
    """
    order = np.argsort(costs[:, 0], kind="stable")
    first, second = costs[order, 0], costs[order, 1]
    new_group = np.empty(len(first), dtype=bool)
    new_group[0] = True
    np.not_equal(first[1:], first[:-1], out=new_group[1:])
    group_min = np.minimum.reduceat(second, np.flatnonzero(new_group))
    group_ok = np.empty(len(group_min), dtype=bool)
    group_ok[0] = True
    np.less(group_min[1:], np.minimum.accumulate(group_min)[:-1], out=group_ok[1:])
    group = np.cumsum(new_group) - 1
    keep = np.empty(len(first), dtype=bool)
    keep[order] = group_ok[group] & (second == group_min[group])
    return keep


def _dominated_by_any(cands: np.ndarray, by: np.ndarray) -> np.ndarray:
    """For each row of ``cands``, whether some row of ``by`` dominates it (costs)."""
    out = np.zeros(len(cands), dtype=bool)
    step = max(1, _BLOCK_PAIRS // max(1, len(by)))
    for start in range(0, len(cands), step):
        part = cands[start:start + step]
        no_worse = np.ones((len(part), len(by)), dtype=bool)
        better = np.zeros((len(part), len(by)), dtype=bool)
        for j in range(cands.shape[1]):
            no_worse &= by[None, :, j] <= part[:, j, None]
            better |= by[None, :, j] < part[:, j, None]
        out[start:start + step] = np.any(no_worse & better, axis=1)
    return out


def _dominated_by_front_2d(cands: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Like :func:`_dominated_by_any` for 2 costs, ``front`` non-dominated: O(n log m).

    Among front points with first cost <= a candidate's, the last in first-cost order has
    the least second cost; only it can dominate the candidate.
    """
    front = front[np.argsort(front[:, 0], kind="stable")]
    j = np.searchsorted(front[:, 0], cands[:, 0], side="right") - 1
    q = front[np.maximum(j, 0)]
    return (j >= 0) & (q[:, 1] <= cands[:, 1]) & ((q[:, 0] < cands[:, 0]) | (q[:, 1] < cands[:, 1]))


def _scan_order(costs: np.ndarray) -> np.ndarray:
    """Row order in which a dominator always precedes what it dominates.

    Primary key: the sum of min-max normalised costs (monotone, so a dominator's sum is
    never larger, even rounded), which puts the best pivots first; ties lexicographic.
    """
    keys = list(costs.T[::-1])
    if np.isfinite(costs).all():
        lo = costs.min(axis=0)
        span = costs.max(axis=0) - lo
        keys.append(((costs - lo) / np.where(span > 0, span, 1.0)).sum(axis=1))
    return np.lexsort(keys)


def _mask_nd(costs: np.ndarray) -> np.ndarray:
    """Non-dominated rows of (n, k) costs, any k, by blocks in :func:`_scan_order`.

    The leading block of the unsettled rows, once rid of points dominated inside it, is
    final (nothing later can dominate it); it then removes every later row it dominates.
    Blocks grow as the candidates shrink.
    """
    rows = _scan_order(costs)  # unsettled candidates in scan order; the first `settled` are final
    settled = 0
    while settled < len(rows):
        rest = rows[settled:]
        block = rest[:max(1, _BLOCK_PAIRS // len(rest))]
        dominated = _dominated_by_any(costs[rest], costs[block])
        rows = np.concatenate((rows[:settled], rest[~dominated]))
        settled += int(np.count_nonzero(~dominated[:len(block)]))
    keep = np.zeros(len(costs), dtype=bool)
    keep[rows] = True
    return keep


def _exact_mask(costs: np.ndarray) -> np.ndarray:
    """Non-dominated rows of (n, k) costs, k >= 2, without pre-filtering."""
    return _mask_2d(costs) if costs.shape[1] == 2 else _mask_nd(costs)


def _candidates(costs: np.ndarray) -> np.ndarray:
    """Rows not dominated by the front of a fixed pseudo-random sample: a superset of the front.

    The sample's front is a set of good pivots; dropping what they dominate in one
    vectorised pass leaves few rows for the exact (sorting) method.
    """
    if len(costs) <= 4 * _PIVOT_SAMPLE:
        return np.arange(len(costs))
    sample = costs[np.random.default_rng(0).integers(0, len(costs), _PIVOT_SAMPLE)]
    pivots = sample[_exact_mask(sample)]
    if costs.shape[1] == 2:
        dominated = _dominated_by_front_2d(costs, pivots)
    else:
        dominated = _dominated_by_any(costs, pivots)
    return np.flatnonzero(~dominated)


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of an (n, k) array of objective values.

    ``maximize[j]`` says whether column ``j`` is to be maximised. Exact, ties included:
    all copies of a non-dominated point are kept. Two objectives take O(n log n); more
    use a vectorised blockwise scan. NaN raises SpecError.

    >>> pareto_mask(np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0]]), [True, True]).tolist()
    [False, False, True]
    """
    costs = _as_costs(values, maximize)
    keep = np.zeros(len(costs), dtype=bool)
    if len(costs) == 0:
        return keep
    if costs.shape[1] == 1:
        return costs[:, 0] == costs[:, 0].min()
    rows = _candidates(costs)
    keep[rows[_exact_mask(costs[rows])]] = True
    return keep


def hypervolume_2d(values: np.ndarray, maximize: Sequence[bool], ref: Sequence[float]) -> float:
    """Exact area dominated by the points of an (n, 2) array and bounded by ``ref``.

    Points not strictly better than ``ref`` in both objectives add nothing. Units are
    the product of the two objectives' units.

    >>> hypervolume_2d(np.array([[1.0, 2.0], [2.0, 1.0]]), [True, True], [0.0, 0.0])
    3.0
    """
    costs = _as_costs(values, maximize)
    if costs.shape[1] != 2:
        raise SpecError("", "values", "hypervolume_2d needs exactly 2 objective columns", costs.shape[1])
    ref_arr = np.asarray(ref, dtype=np.float64)
    if ref_arr.shape != (2,):
        raise SpecError("", "ref", "must be a point of 2 objective values", ref)
    bound = _as_costs(ref_arr[None], maximize)[0]
    inside = costs[np.all(costs < bound, axis=1)]
    if len(inside) == 0:
        return 0.0
    inside = inside[np.argsort(inside[:, 0], kind="stable")]
    widths = np.diff(np.append(inside[:, 0], bound[0]))
    heights = bound[1] - np.minimum.accumulate(inside[:, 1])
    return float(np.sum(widths * heights))


class ParetoArchive:
    """Non-dominated rows of everything passed to :meth:`update`, with payload columns.

    ``payload`` columns (design index, knob values, metrics) travel with their rows.
    Merging archives built on disjoint parts of the data gives exactly the front of the
    union, so workers and shards each keep one and the results are folded together.

    >>> arc = ParetoArchive([True, False])
    >>> arc.update(np.array([[1.0, 1.0], [2.0, 2.0], [0.5, 1.0]]), {"id": np.arange(3)})
    >>> arc.payload["id"].tolist()
    [0, 1]
    """

    def __init__(self, maximize: Sequence[bool]) -> None:
        self.maximize: tuple[bool, ...] = tuple(bool(m) for m in maximize)
        if not self.maximize:
            raise SpecError("", "maximize", "needs at least one objective", list(maximize))
        self.values: np.ndarray = np.empty((0, len(self.maximize)))
        self.payload: dict[str, np.ndarray] = {}
        self._payload_keys: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def update(self, values: np.ndarray, payload: Mapping[str, np.ndarray] | None = None) -> None:
        """Merge a chunk of rows (objective values, payload columns of equal length)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.maximize):
            raise SpecError("", "values", f"must have shape (n, {len(self.maximize)})", values.shape)
        payload = dict(payload or {})
        keys = tuple(payload)
        if self._payload_keys is None:
            self._payload_keys = keys
            self.payload = {k: np.asarray(v)[:0] for k, v in payload.items()}
        elif keys != self._payload_keys:
            raise SpecError("", "payload", f"columns must stay {list(self._payload_keys)}", list(keys))
        for key, col in payload.items():
            if np.shape(col) != (len(values),):
                raise SpecError("", f"payload.{key}", f"must be 1-D of length {len(values)}", np.shape(col))
        merged = np.concatenate((self.values, values))
        keep = pareto_mask(merged, self.maximize)
        self.values = merged[keep]
        self.payload = {k: np.concatenate((self.payload[k], np.asarray(payload[k])))[keep] for k in keys}

    def merge(self, other: ParetoArchive) -> ParetoArchive:
        """Fold ``other``'s rows into this archive (in place) and return it."""
        if other.maximize != self.maximize:
            raise SpecError("", "maximize", f"archives differ in direction: {list(self.maximize)}",
                            list(other.maximize))
        if other._payload_keys is not None:
            self.update(other.values, other.payload)
        return self
