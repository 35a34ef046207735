"""Budget accounting: distinct designs evaluated, proposals that repeat one, and, on a storage
shared by many workers, free slots, stale trials and the race past the budget.

The budget counts distinct designs (:mod:`dse.search.designs`). Every worker reads the
same trials and applies the same rules (the smaller trial number wins a tie), so every
worker reaches the same answer.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, TrialState

STALE_AFTER_S = 60.0  # a RUNNING trial this old belongs to a dead worker (a batch takes milliseconds)
# On a shared RDB every ask re-reads the RUNNING trials (optuna.md, pitfall P5): keep batches small.
SHARED_BATCH = 8
RACE_MARGIN = 256  # concurrent claims beyond this many free slots cannot overshoot the budget

Keyer = Callable[[Sequence[FrozenTrial]], list[bytes | None]]  # None: the trial's parameters are incomplete


def tell_quietly(work: optuna.Study, trial: int | optuna.trial.Trial, *, constraints: list[float] | None = None,
                 **kwargs: object) -> bool:
    """``work.tell`` that loses a race gracefully: False when another process finished the trial first
    (a worker that judged it stale). ``constraints`` (<= 0 feasible) go first into Optuna's
    constraints list, what a sampler's ``constraints_func`` writes: NSGA-II, ``best_trials``
    and optuna-dashboard read it (the names are the stored study's ``dse_constraint_names``)."""
    try:
        if constraints is not None:
            work._storage.set_trial_system_attr(trial._trial_id, _CONSTRAINTS_KEY, constraints)
        work.tell(trial, skip_if_finished=True, **kwargs)
    except UpdateFinishedTrialError:
        return False
    return True


class Ledger:
    """The distinct designs of a study's complete trials, and its running trials.

    ``first`` maps a design key to the smallest complete trial number with that design;
    ``running`` the same for running trials (of every worker) as of the last
    :meth:`refresh`. Complete trials are keyed once, so a refresh costs one read of the
    trials plus the keys of the new ones.
    """

    def __init__(self, keyer: Keyer) -> None:
        self.keyer = keyer
        self.first: dict[bytes, int] = {}
        self.running: dict[bytes, int] = {}
        self._keyed: set[int] = set()
        self._live: list[int] = []

    @property
    def distinct(self) -> int:
        """Distinct designs among the complete trials."""
        return len(self.first)

    def add(self, trials: Sequence[FrozenTrial]) -> None:
        """Take in complete trials not seen yet."""
        new = [t for t in trials if t.number not in self._keyed]
        for t, key in zip(new, self.keyer(new), strict=True):
            if key is None:
                continue
            self._keyed.add(t.number)
            if key not in self.first or t.number < self.first[key]:
                self.first[key] = t.number

    def add_keys(self, numbers: Sequence[int], keys: Sequence[bytes]) -> None:
        """Take in complete trials whose keys are already known."""
        for number, key in zip(numbers, keys, strict=True):
            self._keyed.add(number)
            self.first.setdefault(key, number)

    def refresh(self, work: optuna.Study, stale_after_s: float) -> None:
        """Read a shared study: key new complete trials, fail stale running ones, note the live ones.

        A RUNNING trial older than ``stale_after_s`` belongs to a dead worker (a batch is
        evaluated in milliseconds): it is failed, so the live workers ask its slot again.
        """
        trials = work.get_trials(deepcopy=False)
        self.add([t for t in trials if t.state == TrialState.COMPLETE])
        now = time.time()
        running = []
        for t in trials:
            if t.state == TrialState.RUNNING:
                started = t.datetime_start.timestamp() if t.datetime_start else now
                if now - started > stale_after_s:
                    tell_quietly(work, t.number, state=TrialState.FAIL)
                else:
                    running.append(t)
        self.running = {}
        for t, key in zip(running, self.keyer(running), strict=True):
            if key is not None:
                self.running[key] = min(t.number, self.running.get(key, t.number))
        self._live = sorted(set(self.first.values()) | {t.number for t in running})

    def free(self, n_trials: int) -> int | None:
        """Trials still to ask for the budget: 0 when it is reached, None to wait for running ones."""
        if self.distinct >= n_trials:
            return 0
        free = n_trials - len(self._live)  # distinct complete designs plus running trials
        return free if free > 0 else None

    def repeats(self, number: int, key: bytes) -> bool:
        """Whether trial ``number`` proposes a design already complete, or running under a smaller number."""
        return key in self.first or self.running.get(key, number) < number

    def within_budget(self, number: int, n_trials: int) -> bool:
        """Whether trial ``number`` ranks below the budget among live trials (distinct complete
        designs and running trials, by number). Workers may race past the budget; a trial's
        rank counts only trials created before it, so every worker agrees."""
        return bisect.bisect_left(self._live, number) < n_trials


def fail_stale(work: optuna.Study, stale_after_s: float) -> None:
    """Fail the RUNNING trials older than ``stale_after_s`` (left by dead workers)."""
    now = time.time()
    for t in work.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start.timestamp() if t.datetime_start else now
        if now - started > stale_after_s:
            tell_quietly(work, t.number, state=TrialState.FAIL)
