"""The search loop: batched ask/tell over the vectorised evaluator, progress and hypervolume.

Each batch of asked trials is evaluated in one call of the evaluator. The budget counts
distinct designs: a proposal of a design already evaluated (or being evaluated by another
worker) is told PRUNED, never evaluated or counted again. Storage
(:mod:`dse.search.storages`), budget accounting (:mod:`dse.search.budget`) and export
(:mod:`dse.search.export`) live beside this module.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from dse.loading import INVALID_INPUT, space_evaluator
from dse.results.pareto import hypervolume_2d, pareto_mask
from dse.results.tables import violations
from dse.search.budget import RACE_MARGIN, SHARED_BATCH, STALE_AFTER_S, Ledger, tell_quietly
from dse.search.designs import design_keys
from dse.search.distributions import distributions, is_valid_trial, params_arrays
from dse.search.export import export
from dse.search.interrupts import DeferredInterrupt
from dse.search.retry import with_retry
from dse.search.samplers import make_sampler, resolve_sampler
from dse.search.storages import (
    directions,
    hold_output,
    is_journal,
    load_stored,
    open_storage,
    set_metric_names,
)
from dse.spec.errors import SpecError
from dse.spec.study import Study
from dse.sweep.study import RunResult, run_exhaustive

# The sampler has converged when it proposes only evaluated designs for this many batches in
# a row, or this many repeats per design of the budget (each repeat is an Optuna trial: its
# ask costs time that grows with the trials already in the study).
MAX_IDLE_BATCHES = 20
MAX_REPEATS_PER_DESIGN = 3


class Progress:
    """A tqdm bar of distinct designs with the front size and hypervolume (none when disabled)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=done, unit="design", dynamic_ncols=True, leave=True)

    def update(self, n: int, front: int, hv: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(front=front, hv=f"{hv:.4g}", refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_run_arguments(n_trials: Any, stale_after_s: Any) -> None:
    """SpecError for a budget below one design or a stale-trial age that is not positive."""
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise SpecError("--n-trials", "n_trials", "must be an integer >= 1", n_trials)
    if isinstance(stale_after_s, bool) or not isinstance(stale_after_s, (int, float)) or \
            not stale_after_s > 0 or not math.isfinite(stale_after_s):
        raise SpecError("--stale-after", "stale_after_s", "must be a number of seconds > 0", stale_after_s)


def run_study(study: Study, *, progress: bool = True, stop: Callable[[], bool] | None = None,
              worker: int | None = None, stale_after_s: float = STALE_AFTER_S) -> RunResult:
    """Run (or resume) a study to its budget (``n_trials`` distinct designs) and write its result files.

    ``sampler: auto`` sweeps a finite space exhaustively when that costs less than the
    search (:func:`dse.search.samplers.resolve_sampler`). Ctrl-C stops after saving
    everything finished so far; running again resumes. With a shared storage (an RDB URL,
    or ``worker`` set by :func:`dse.search.workers.run_workers`), trials are asked and
    told on that storage so that any number of processes and machines share the study;
    trials left RUNNING by a dead worker for ``stale_after_s`` are failed and replaced. A
    ``worker`` process writes no result files (its parent does).
    """
    check_run_arguments(study.n_trials, stale_after_s)
    name, note = resolve_sampler(study.sampler, study.space, study.n_trials)
    if name == "exhaustive":
        result = run_exhaustive(replace(study, sampler=name), progress=progress)
        result.notes[:0] = [note] if note else []
        return result
    study = replace(study, sampler=name)
    shared = worker is not None or not is_journal(study.storage)
    sampler = make_sampler(study.sampler, study.sampler_options, study.seed + (worker or 0), study.batch_size,
                           study.space, file=study.file, append_only=not shared)  # checked before any write
    notes = [note] if note else []
    if shared:  # many processes share the storage (and the output folder: each export is atomic)
        return _run(study, sampler, notes, progress=progress, stop=stop, worker=worker, stale_after_s=stale_after_s)
    with contextlib.ExitStack() as held:  # one run at a time per output folder and per journal
        removed = hold_output(study, held)
        if removed:
            notes.append(f"removed stale files of a killed run: {', '.join(removed)}")
        return _run(study, sampler, notes, progress=progress, stop=stop, worker=None, stale_after_s=stale_after_s)


def _run(study: Study, sampler: optuna.samplers.BaseSampler, notes: list[str], *, progress: bool,
         stop: Callable[[], bool] | None, worker: int | None, stale_after_s: float) -> RunResult:
    """The search itself, once the sampler is built and the output folder held."""
    start = time.perf_counter()
    shared = worker is not None or not is_journal(study.storage)
    dists = distributions(study.space)
    storage, journal, repaired = open_storage(study, repair=worker is None)  # the first thing that writes
    notes = notes + repaired
    stored = load_stored(study, storage)
    rdb = journal is None and not is_journal(study.storage)

    def retried(step: Callable[[], Any], what: str) -> Any:  # a shared database's bad moments: see retry.py
        return with_retry(step, what=what, url=study.storage or "") if rdb else step()

    if shared:
        work = retried(lambda: optuna.load_study(study_name=study.name, storage=storage, sampler=sampler),
                       "loading the study")
    else:
        work = optuna.create_study(directions=directions(study), sampler=sampler)
        set_metric_names(work, study)
        replayed = stored.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        valid = [t for t in replayed if is_valid_trial(dists, len(study.objectives), t)]
        if len(valid) < len(replayed):
            bad = sorted({t.number for t in replayed} - {t.number for t in valid})
            notes.append(f"ignored {len(bad)} stored trial(s) outside the space (has it changed?) or with NaN "
                         f"values: {bad[:10]}")
        work.add_trials(valid)
    search = retried(lambda: _Search(study, work, shared, stale_after_s, None if shared else (stored, journal)),
                     "reading the trials")
    n_before = search.ledger.distinct
    bar = Progress(study.n_trials, n_before, progress)
    interrupted = False
    with DeferredInterrupt(escalate=worker is None) as ctrl_c:
        try:
            while not (study.timeout_s is not None and time.perf_counter() - start > study.timeout_s
                       or stop is not None and stop()):
                if ctrl_c.requested:  # between batches: everything told is saved
                    interrupted = True
                    break
                n_told = retried(search.step, "a batch of trials")
                if n_told is None:
                    break
                bar.update(n_told, len(search.front_vals), search.hv)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread
            interrupted = True
        finally:
            bar.close()
        notes = notes + search.notes()
        if worker is not None:
            return RunResult(0, search.ledger.distinct - n_before, 0, 0, time.perf_counter() - start, {},
                             interrupted, notes)
        result = retried(lambda: export(study, work if shared else stored),  # the journal numbers only
                         "reading the trials for the result files")  # distinct designs: 0, 1, ...
    result.n_new = result.n_trials - n_before
    result.elapsed_s = time.perf_counter() - start
    result.interrupted = interrupted
    result.notes[:0] = notes
    return result


class _Search:
    """The state of one process's search: the study, the distinct designs, the running front."""

    def __init__(self, study: Study, work: optuna.Study, shared: bool, stale_after_s: float,
                 checkpoint: tuple[optuna.Study, Any] | None) -> None:
        self.study, self.work, self.shared, self.stale_after_s = study, work, shared, stale_after_s
        self.checkpoint = checkpoint  # (stored study, journal backend or None): a copy of each finished batch
        self.dists = distributions(study.space)
        self.evaluator = space_evaluator(study.space)
        self.ledger = Ledger(self._keys)
        if shared:
            self.ledger.refresh(work, stale_after_s)
        else:
            self.ledger.add(work.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        self.pending: list = []  # asked, not yet told (a database error cut the batch short)
        self.n_repeats = 0
        self.n_invalid = 0  # designs with an input outside its valid range (infeasible)
        self.idle_batches = 0
        self.stopped = ""  # why the search stopped before its budget
        self.front_vals = np.empty((0, len(study.objectives)))
        self.hv_ref: np.ndarray | None = None
        self.hv = math.nan

    def _keys(self, trials: list) -> list[bytes | None]:
        """Design keys of trials; None for a running trial whose parameters are still being set (another
        worker's) and for a finished one that cannot be read back (a damaged storage)."""
        names, n_obj = self.dists.keys(), len(self.study.objectives)
        whole = [i for i, t in enumerate(trials) if (is_valid_trial(self.dists, n_obj, t) if t.state.is_finished()
                                                     else all(n in t.params for n in names))]
        keys: list[bytes | None] = [None] * len(trials)
        if whole:
            space = self.study.space
            for i, key in zip(whole, design_keys(space, params_arrays(space, [trials[i] for i in whole])),
                              strict=True):
                keys[i] = key
        return keys

    def step(self) -> int | None:
        """Ask, evaluate and tell one batch; return the new designs told, None when the search is over."""
        study, work, ledger = self.study, self.work, self.ledger
        while self.pending:  # left RUNNING by a batch a database error cut short: fail them, as a stale trial
            tell_quietly(work, self.pending[-1], state=TrialState.FAIL)
            self.pending.pop()
        size = study.space.size
        if size is not None and ledger.distinct >= size:
            self.stopped = f"every design of the space ({size:,}) is evaluated"
            return None
        if self.idle_batches >= MAX_IDLE_BATCHES:
            self.stopped = (f"the sampler proposed only evaluated designs for {MAX_IDLE_BATCHES} batches in a row"
                            f"{self._converged()}")
            return None
        if self.n_repeats >= MAX_REPEATS_PER_DESIGN * study.n_trials:
            self.stopped = (f"the sampler proposed {self.n_repeats:,} repeats, more than {MAX_REPEATS_PER_DESIGN} "
                            f"per design of the budget{self._converged()}")
            return None
        if self.shared:
            ledger.refresh(work, self.stale_after_s)
            free = ledger.free(study.n_trials)
            if free is None:  # others still running the last trials
                time.sleep(0.2)
                return 0
            k = min(study.batch_size, SHARED_BATCH, free)
        else:
            free = k = min(study.batch_size, study.n_trials - ledger.distinct)
        if k <= 0:
            return None
        trials: list = []
        self.pending = trials
        for _ in range(k):
            try:
                trials.append(work.ask(self.dists))
            except UpdateFinishedTrialError:  # another worker judged it stale while it was being asked
                continue
        if self.shared and free - k < RACE_MARGIN:  # near the budget, other workers may have raced us
            ledger.refresh(work, self.stale_after_s)
            for t in [t for t in trials if not ledger.within_budget(t.number, study.n_trials)]:
                tell_quietly(work, t, state=TrialState.PRUNED)  # surplus: never evaluated
                trials.remove(t)
            if not trials:
                return 0
        try:
            keys = design_keys(study.space, params_arrays(study.space, trials))
        except BaseException:
            for t in trials:
                tell_quietly(work, t, state=TrialState.FAIL)
            raise
        fresh, batch_keys = [], set()
        for t, key in zip(trials, keys, strict=True):
            if ledger.repeats(t.number, key) or key in batch_keys:
                tell_quietly(work, t, state=TrialState.PRUNED)  # a repeat: never evaluated nor counted
                self.n_repeats += 1
            else:
                fresh.append((t, key))
                batch_keys.add(key)
        self.idle_batches = 0 if fresh else self.idle_batches + 1
        if not fresh:
            self.pending = []
            return 0
        done = self._evaluate_and_tell([t for t, _ in fresh])
        self.pending = []
        ledger.add_keys([t.number for t, _ in fresh if t.number in done],
                        [key for t, key in fresh if t.number in done])
        if self.checkpoint is not None:
            stored, journal = self.checkpoint
            stored.add_trials([t for t in work.get_trials(deepcopy=False)[-len(trials):] if t.number in done])
            if journal is not None:
                journal.sync()
        return len(done)

    def _evaluate_and_tell(self, trials: list) -> set[int]:
        """Evaluate asked trials in one call; tell them with their constraints; return the numbers told."""
        study, work = self.study, self.work
        try:
            metrics = self.evaluator(study.space.columns(params_arrays(study.space, trials), strict=False))
        except BaseException:
            for t in trials:
                tell_quietly(work, t, state=TrialState.FAIL)
            raise
        cons = violations(metrics, study.constraints)
        values = np.stack([metrics[m] for m, _ in study.objectives], axis=1)
        con_arr = np.stack(list(cons.values()), axis=1)
        told = set()
        for i, t in enumerate(trials):
            if tell_quietly(work, t, values=values[i].tolist(), constraints=con_arr[i].tolist()):
                told.add(t.number)
        feasible = np.all(con_arr <= 0, axis=1)
        self._update_front(values[feasible])
        self.n_invalid += int(np.count_nonzero(metrics[INVALID_INPUT] > 0))
        return told

    def _update_front(self, new: np.ndarray) -> None:
        """Running feasible front and its 2-D hypervolume (reference fixed at the first feasible batch)."""
        maximize = [up for _, up in self.study.objectives]
        merged = np.unique(np.concatenate([self.front_vals, new]), axis=0) if len(new) else self.front_vals
        if len(merged):
            merged = merged[pareto_mask(merged, maximize)]
        self.front_vals = merged
        if len(self.study.objectives) != 2 or not len(merged):
            return
        if self.hv_ref is None:
            worst = np.where(maximize, merged.min(axis=0), merged.max(axis=0))
            self.hv_ref = np.where(maximize, worst * 0.5, worst * 2.0)
        self.hv = hypervolume_2d(merged, maximize, self.hv_ref)

    def _converged(self) -> str:
        return " (converged; sampler: exhaustive gives the exact front)" if self.study.space.size else " (converged)"

    def notes(self) -> list[str]:
        """What the user should know about this search's counts."""
        out = []
        if self.n_repeats:
            out.append(f"{self.n_repeats:,} proposals repeated an evaluated design: not evaluated or counted again")
        if self.n_invalid:
            columns = ", ".join(f"{name} ({count:,})" for name, count in sorted(self.evaluator.invalid_counts.items()))
            out.append(f"{self.n_invalid:,} designs infeasible ({INVALID_INPUT}): an input outside its valid range "
                       f"or not finite: {columns}")
        if self.stopped and self.ledger.distinct < self.study.n_trials:
            out.append(f"stopped at {self.ledger.distinct:,} distinct designs: {self.stopped}")
        return out
