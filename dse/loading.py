"""Spaces and studies ready to evaluate: the spec loaders plus an evaluation check.

The spec layer validates a file's shape and names (no model involved). Here a loaded
space is also evaluated at its lowest and highest corners, so that bad bounds and
expressions fail at load time with the file and key that set the offending column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dse.api import Evaluator
from dse.spec import space as _space
from dse.spec import study as _study
from dse.spec.errors import SpecError
from dse.spec.space import Space
from dse.spec.study import Study
from dse.spec.units import to_si


def space_evaluator(space: Space) -> Evaluator:
    """An evaluator whose platform/model codes match the space's categories."""
    return Evaluator(space.models, space.platforms)


def check_space(space: Space) -> None:
    """Evaluate the space's lowest and highest corners; a SpecError names the file and key
    that set the offending column, with the value in that key's unit."""
    params = {k.name: k.value_at(np.array([0, k.n_values - 1])) if k.n_values else np.array([k.low, k.high])
              for k in space.knobs}
    try:
        space_evaluator(space)(space.columns(params))
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
