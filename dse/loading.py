"""Spaces and studies ready to evaluate: the spec loaders plus an evaluation check.

The spec layer validates a file's shape and names (no model involved). Here a loaded
space is also evaluated at its lowest and highest corners, so that bad bounds and
expressions fail at load time with the file and key that set the offending column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dse.api import NAME_COLUMNS, Evaluator
from dse.spec import space as _space
from dse.spec import study as _study
from dse.spec.errors import SpecError
from dse.spec.registry import HARDWARE_FIELD_NAMES, INPUT_FIELDS, KNOB_BY_NAME
from dse.spec.space import Space
from dse.spec.study import Study
from dse.spec.units import to_si

INVALID_INPUT = "c_invalid_input"  # model constraint: the design's inputs break a rule (count of columns)


def space_evaluator(space: Space) -> SpaceEvaluator:
    """An evaluator of the space's designs (platform/model codes match its categories)."""
    return SpaceEvaluator(space.models, space.platforms)


class SpaceEvaluator:
    """:class:`Evaluator` for the designs of a space, where a design whose inputs break a rule
    of the registry (a derived ``tdp_w`` infinite, NaN or below ``static_power_w`` only
    somewhere inside the space, say) is infeasible, not an error: :data:`INVALID_INPUT`
    counts its invalid columns (0: valid) and its metrics are those of the design with the
    offending columns left to the preset and card (finite, never NaN, and infeasible).
    ``invalid_counts`` accumulates, per column, the designs it made invalid.
    """

    def __init__(self, models: Any, platforms: Any) -> None:
        self.evaluator = Evaluator(models, platforms)
        self.invalid_counts: dict[str, int] = {}

    def __call__(self, columns: dict[str, Any]) -> dict[str, np.ndarray]:
        cols = dict(columns)
        n = max([len(v) for v in cols.values() if np.ndim(v) > 0] or [1])
        masks = self.invalid_rows(cols, n)
        bad = np.zeros(n, dtype=bool)
        for mask in masks.values():
            bad |= mask
        if not bad.any():
            out = dict(self.evaluator(cols))
            out[INVALID_INPUT] = np.zeros(n)
            return out
        for name, mask in masks.items():
            self.invalid_counts[name] = self.invalid_counts.get(name, 0) + int(mask.sum())
        rows = {False: np.flatnonzero(~bad), True: np.flatnonzero(bad)}
        out: dict[str, np.ndarray] = {}
        for is_bad, index in rows.items():
            if not len(index):
                continue
            part = {k: (np.asarray(v)[index] if np.ndim(v) > 0 else v) for k, v in cols.items()
                    if not (is_bad and k in masks)}  # the offending columns: left to the preset and card
            for name, values in self.evaluator(part).items():
                out.setdefault(name, np.empty(n))[index] = values
        out[INVALID_INPUT] = np.sum([masks[k] for k in masks], axis=0).astype(float)
        return out

    def invalid_rows(self, cols: dict[str, Any], n: int) -> dict[str, np.ndarray]:
        """Per column with an invalid value somewhere: which rows hold one (the rules of
        :func:`dse.api.check_columns`, and ``tdp_w`` above ``static_power_w``, row by row)."""
        masks: dict[str, np.ndarray] = {}
        for name, values in cols.items():
            if name in NAME_COLUMNS or name not in INPUT_FIELDS:
                continue
            arr = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,))
            f = INPUT_FIELDS[name]
            bad = ~np.isfinite(arr)
            with np.errstate(invalid="ignore"):
                if name in KNOB_BY_NAME or not f.positive:
                    bad |= (arr < f.low) | (arr > f.high)
                else:
                    bad |= (arr <= f.low) | (arr > f.high)
                if name in HARDWARE_FIELD_NAMES and name.endswith("_per_s"):
                    bad |= (arr > 0) & (arr < 1.0)
            if bad.any():
                masks[name] = bad
        if "tdp_w" in cols or "static_power_w" in cols:
            codes = np.broadcast_to(np.asarray(cols.get("platform", 0), dtype=np.int64), (n,))
            table = {f: np.array([p.fields[f] for p in self.evaluator.platforms]) for f in ("tdp_w", "static_power_w")}
            tdp = np.broadcast_to(np.asarray(cols.get("tdp_w", table["tdp_w"][codes]), dtype=float), (n,))
            static = np.broadcast_to(np.asarray(cols.get("static_power_w", table["static_power_w"][codes]),
                                                dtype=float), (n,))
            with np.errstate(invalid="ignore"):
                no_headroom = ~(tdp - static > 0)
            if no_headroom.any():
                for name in ("tdp_w", "static_power_w"):
                    if name in cols:
                        masks[name] = masks.get(name, np.zeros(n, dtype=bool)) | no_headroom
        return masks


def check_space(space: Space) -> None:
    """Evaluate the space's lowest and highest corners; a SpecError names the file and key
    that set the offending column, with the value in that key's unit."""
    params = {k.name: k.value_at(np.array([0, k.n_values - 1])) if k.n_values else np.array([k.low, k.high])
              for k in space.knobs}
    try:
        Evaluator(space.models, space.platforms)(space.columns(params))  # raises: the corners must be valid
    except SpecError as exc:
        if exc.file:
            raise
        at, key = space.origins.get(exc.key_path, (space.file, exc.key_path))
        factor = to_si(key.rsplit(".", 1)[-1])[1]  # show the value in the key's unit
        value = exc.value / factor if isinstance(exc.value, float) else exc.value
        raise SpecError(at, key, exc.rule, value) from None


def load_space(source: str | Path | dict, **kwargs: Any) -> Space:
    """:func:`dse.spec.space.load_space`, then :func:`check_space`."""
    space = _space.load_space(source, **kwargs)
    check_space(space)
    return space


def load_study(source: str | Path | dict, **kwargs: Any) -> Study:
    """:func:`dse.spec.study.load_study`, then :func:`check_space` on its space."""
    study = _study.load_study(source, **kwargs)
    check_space(study.space)
    return study
