"""Distinct designs: one key per design, from the evaluator columns its knob values give.

Two knob settings are the same design when they give the same evaluator columns (after
``when`` conditions, fixed values, technology tables and derived expressions): a knob
that a condition switches off, for example, does not make a new design. The budget of a
search counts distinct designs, and a repeated proposal is never evaluated again.
"""

from __future__ import annotations

import numpy as np

from dse.spec.space import Space


def design_matrix(space: Space, params: dict[str, np.ndarray]) -> np.ndarray:
    """(n, columns) float64 matrix of the designs' evaluator columns, in a fixed column order."""
    n = len(next(iter(params.values()))) if params else 0
    columns = space.columns(params, strict=False)
    if not columns:
        return np.zeros((n, 0))
    return np.column_stack([np.broadcast_to(np.asarray(columns[name], dtype=np.float64), (n,))
                            for name in sorted(columns)])


def design_keys(space: Space, params: dict[str, np.ndarray]) -> list[bytes]:
    """A hashable key per design (equal keys: the same design)."""
    matrix = np.ascontiguousarray(design_matrix(space, params)) + 0.0  # -0.0 and 0.0 are one value
    return [row.tobytes() for row in matrix]


def first_of_each(keys: list[bytes]) -> np.ndarray:
    """Positions of the first occurrence of each distinct key, in order."""
    seen: set[bytes] = set()
    keep = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.array(keep, dtype=np.int64)
