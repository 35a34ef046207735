"""Budget accounting on a storage shared by many workers: free slots, stale trials, the race
past the budget. Every worker reads the same trials, so every worker reaches the same answer."""

from __future__ import annotations

import bisect
import time

import optuna
from optuna.trial import TrialState

STALE_AFTER_S = 60.0  # a RUNNING trial this old belongs to a dead worker (a batch takes milliseconds)
# On a shared RDB every ask re-reads the RUNNING trials (optuna.md, pitfall P5): keep batches small.
SHARED_BATCH = 8
RACE_MARGIN = 256  # concurrent claims beyond this many free slots cannot overshoot the budget
_LIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def free_slots(work: optuna.Study, n_trials: int, stale_after_s: float) -> int | None:
    """Trials still to ask for the budget: 0 when it is complete, None to wait for running ones.

    Fails RUNNING trials older than ``stale_after_s`` (their worker died: a batch is
    evaluated in milliseconds), so their slots are asked again by the live workers.
    """
    trials = work.get_trials(deepcopy=False)
    now = time.time()
    complete = running = 0
    for t in trials:
        if t.state == TrialState.COMPLETE:
            complete += 1
        elif t.state == TrialState.RUNNING:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started > stale_after_s:
                work.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            else:
                running += 1
    if complete >= n_trials:
        return 0
    free = n_trials - complete - running
    return free if free > 0 else None


def within_budget(work: optuna.Study, trials: list, n_trials: int) -> list:
    """Keep the asked trials whose rank among live trials (by number) is below the budget.

    Workers may race past the budget; a trial's rank only counts trials created before
    it, so every worker agrees, and surplus trials are told PRUNED (never evaluated).
    """
    live = sorted(t.number for t in work.get_trials(deepcopy=False, states=_LIVE))
    keep = []
    for t in trials:
        rank = bisect.bisect_left(live, t.number)
        if rank < n_trials:
            keep.append(t)
        else:
            work.tell(t, state=TrialState.PRUNED)
    return keep


def n_complete(work: optuna.Study) -> int:
    """Complete trials of a study."""
    return len(work.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
