"""NSGA-II with an incremental generation lookup (same proposals as Optuna's, tested)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


class IncrementalNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II whose generation lookup reads only the trials completed since its last call.

    Optuna's ``get_trial_generation`` re-scans every completed trial for each new trial,
    O(n^2) over a study (a third of a 5,000-trial run here). It needs only the highest
    generation among completed trials and how many have it, a running summary, valid
    when completed trials are only ever appended: true in the single-process loop of
    :func:`dse.search.loop.run_study`, which therefore uses this class there (and
    Optuna's elsewhere). It reads Optuna internals (``study._get_trials``,
    ``study._storage``, ``_get_generation_key``, ``_population_size``) as Optuna's own
    method does.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._seen = 0  # completed trials already summarised
        self._max_generation = 0
        self._max_generation_count = 0

    def get_trial_generation(self, study: optuna.Study, trial: FrozenTrial) -> int:
        key = self._get_generation_key()
        generation = trial.system_attrs.get(key)
        if generation is not None:
            return generation
        completed = study._get_trials(deepcopy=False, states=[TrialState.COMPLETE], use_cache=True)
        for t in completed[self._seen:]:
            g = t.system_attrs.get(key, -1)
            if g > self._max_generation:
                self._max_generation, self._max_generation_count = g, 1
            elif g == self._max_generation:
                self._max_generation_count += 1
        self._seen = len(completed)
        generation = self._max_generation + (self._max_generation_count >= self._population_size)
        study._storage.set_trial_system_attr(trial._trial_id, key, generation)
        return generation
