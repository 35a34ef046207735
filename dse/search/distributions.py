"""A space's knobs as Optuna distributions, and asked trials back as knob arrays.

Knob values are SI floats; string categoricals (``platform``, ``model``,
``mem_technology``) keep their names in Optuna and become integer codes (the index of
the name in :meth:`dse.spec.space.Space.categories`) on the way back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial

from dse.spec.space import Knob, Space


def distributions(space: Space) -> dict[str, BaseDistribution]:
    """One Optuna distribution per knob (SI values; string categoricals keep their names)."""
    return {k.name: _distribution(k) for k in space.knobs}


def _distribution(k: Knob) -> BaseDistribution:
    if k.kind == "categorical":
        return CategoricalDistribution(list(k.choices))
    if k.kind == "int":
        return IntDistribution(int(k.low), int(k.high), log=k.log, step=int(k.step or 1))
    return FloatDistribution(k.low, k.high, log=k.log, step=k.step)


def is_string_knob(k: Knob) -> bool:
    """A categorical knob whose choices are names (coded by their position)."""
    return k.kind == "categorical" and bool(k.choices) and isinstance(k.choices[0], str)


def params_arrays(space: Space, trials: Sequence[Trial | FrozenTrial]) -> dict[str, np.ndarray]:
    """Knob arrays (one entry per trial; string categoricals as codes) of asked or stored trials."""
    cats = space.categories()
    params = [t.params for t in trials]  # each read of FrozenTrial.params copies the dict
    out = {}
    for k in space.knobs:
        values = [p[k.name] for p in params]
        if is_string_knob(k):
            codes = {name: float(i) for i, name in enumerate(cats[k.name])}
            out[k.name] = np.array([codes[v] for v in values], dtype=float)
        else:
            out[k.name] = np.array(values, dtype=float)
    return out


def is_valid_trial(dists: dict[str, BaseDistribution], n_objectives: int, trial: FrozenTrial) -> bool:
    """A complete trial that can be read back: every knob's value inside its distribution, and
    ``n_objectives`` values, none NaN (a damaged or foreign storage may hold others)."""
    params = trial.params
    if set(params) != set(dists):
        return False
    for name, value in params.items():
        try:
            if not dists[name]._contains(dists[name].to_internal_repr(value)):
                return False
        except (ValueError, TypeError):
            return False
    values = trial.values
    return values is not None and len(values) == n_objectives and not any(math.isnan(v) for v in values)
