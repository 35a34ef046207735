"""NSGA-II with an incremental generation lookup (same proposals as Optuna's, tested)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


class IncrementalNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II whose generation and parent lookups read only what changed since their last call.

    Optuna's ``get_trial_generation`` filters every trial of the study for each new trial,
    and ``get_parent_population`` scans them all again to rebuild a cached parent list:
    O(n^2) over a study (most of a search's time once repeated proposals, told PRUNED,
    pile up). The generation needs only the highest generation among completed trials
    and how many have it, a running summary over trials finished in number order: true
    in the single-process loop of :func:`dse.search.loop.run_study` (a batch is asked,
    then told, before the next), which therefore uses this class there (and Optuna's
    elsewhere); a parent population never changes once selected, so it is kept here (in the order
    Optuna's cache returns it).
    It reads Optuna internals (``study._get_trials``, ``study._storage``,
    ``_get_generation_key``, ``_population_size``) as Optuna's own methods do.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._next = 0  # trials before this position are finished and summarised
        self._max_generation = 0
        self._max_generation_count = 0
        self._parents: dict[int, list[FrozenTrial]] = {}

    def get_trial_generation(self, study: optuna.Study, trial: FrozenTrial) -> int:
        key = self._get_generation_key()
        generation = trial.system_attrs.get(key)
        if generation is not None:
            return generation
        trials = study._get_trials(deepcopy=False, use_cache=True)
        while self._next < len(trials) and trials[self._next].state.is_finished():
            t = trials[self._next]
            self._next += 1
            if t.state != TrialState.COMPLETE:
                continue
            g = t.system_attrs.get(key, -1)
            if g > self._max_generation:
                self._max_generation, self._max_generation_count = g, 1
            elif g == self._max_generation:
                self._max_generation_count += 1
        generation = self._max_generation + (self._max_generation_count >= self._population_size)
        study._storage.set_trial_system_attr(trial._trial_id, key, generation)
        return generation

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        if generation in self._parents:
            return self._parents[generation]
        parents = super().get_parent_population(study, generation)  # selection order the first time,
        self._parents[generation] = sorted(parents, key=lambda t: t.number)  # trial order later (as Optuna)
        return parents
