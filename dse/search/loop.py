"""The search loop: batched ask/tell over the vectorised evaluator, progress and hypervolume.

Each batch of asked trials is evaluated in one call of the evaluator; the running front
and its 2-D hypervolume feed the progress bar. Storage (:mod:`dse.search.storages`),
budget accounting on shared storage (:mod:`dse.search.budget`) and export
(:mod:`dse.search.export`) live beside this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dse.loading import space_evaluator
from dse.results.pareto import hypervolume_2d, pareto_mask
from dse.results.tables import violations
from dse.search.budget import RACE_MARGIN, SHARED_BATCH, STALE_AFTER_S, free_slots, n_complete, within_budget
from dse.search.distributions import distributions, params_arrays
from dse.search.export import export
from dse.search.samplers import make_sampler
from dse.search.storages import directions, is_journal, load_stored, open_storage
from dse.spec.study import Study
from dse.sweep.study import RunResult, run_exhaustive


class Progress:
    """A tqdm bar of told trials with the front size and hypervolume (none when disabled)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        self.done = 0  # trials told by this process
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=done, unit="trial", dynamic_ncols=True, leave=True)

    def update(self, n: int, front: int, hv: float) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix(front=front, hv=f"{hv:.4g}", refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_study(study: Study, *, progress: bool = True, stop: Callable[[], bool] | None = None,
              worker: int | None = None, stale_after_s: float = STALE_AFTER_S) -> RunResult:
    """Run (or resume) a study to its budget (``n_trials`` complete trials) and write its result files.

    Ctrl-C stops after saving everything finished so far; running again resumes. With a
    shared storage (an RDB URL, or ``worker`` set by :func:`dse.search.workers.run_workers`),
    trials are asked and told on that storage so that any number of processes and machines
    share the study; trials left RUNNING by a dead worker for ``stale_after_s`` are failed
    and replaced. A ``worker`` process writes no result files (its parent does).
    """
    if study.sampler == "exhaustive":
        return run_exhaustive(study, progress=progress)
    start = time.perf_counter()
    seed = study.seed + (worker or 0)
    shared = worker is not None or not is_journal(study.storage)
    sampler = make_sampler(study.sampler, study.sampler_options, seed, study.batch_size, study.space,
                           file=study.file, append_only=not shared)  # validates before anything is written
    storage, journal = open_storage(study)  # the first thing that writes
    stored = load_stored(study, storage)
    if shared:
        work = optuna.load_study(study_name=study.name, storage=storage, sampler=sampler)
    else:
        work = optuna.create_study(directions=directions(study), sampler=sampler)
        work.add_trials(stored.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    dists = distributions(study.space)
    evaluator = space_evaluator(study.space)
    n_before = n_complete(work)
    bar = Progress(study.n_trials, n_before, progress)
    hv_ref: np.ndarray | None = None
    front_vals = np.empty((0, len(study.objectives)))
    interrupted = False
    try:
        while True:
            if study.timeout_s is not None and time.perf_counter() - start > study.timeout_s:
                break
            if stop is not None and stop():
                break
            if shared:
                free = free_slots(work, study.n_trials, stale_after_s)
                k = min(study.batch_size, SHARED_BATCH, free) if free is not None else 0
            else:
                free = k = min(study.batch_size, study.n_trials - n_before - bar.done)
            if free is None:  # others still running the last trials
                time.sleep(0.2)
                continue
            if k <= 0:
                break
            trials = [work.ask(dists) for _ in range(k)]
            if shared and free - k < RACE_MARGIN:  # near the budget, other workers may have raced us
                trials = within_budget(work, trials, study.n_trials)
                if not trials:
                    continue
            values, con_arr, names = _evaluate_trials(study, evaluator, work, trials)
            for i, t in enumerate(trials):
                for j, name in enumerate(names):
                    t.set_constraint(name, float(con_arr[i, j]))
                work.tell(t, values[i].tolist())
            if journal is not None and not shared:
                stored.add_trials(work.get_trials(deepcopy=False)[-len(trials):])
                journal.sync()
            feasible = np.all(con_arr <= 0, axis=1)
            front_vals, hv_ref, hv = _update_front(front_vals, values[feasible], study, hv_ref)
            bar.update(len(trials), len(front_vals), hv)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if worker is not None:
        return RunResult(0, bar.done, 0, 0, time.perf_counter() - start, {}, interrupted)
    result = export(study, work)
    result.n_new = n_complete(work) - n_before
    result.elapsed_s = time.perf_counter() - start
    result.interrupted = interrupted
    return result


def _evaluate_trials(study: Study, evaluator: Any, work: optuna.Study, trials: list
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Objective values, constraint values and constraint names of asked trials (FAIL them on error)."""
    try:
        params = params_arrays(study.space, trials)
        metrics = evaluator(study.space.columns(params))
    except BaseException:
        for t in trials:
            work.tell(t, state=TrialState.FAIL, skip_if_finished=True)
        raise
    cons = violations(metrics, study.constraints)
    values = np.stack([metrics[m] for m, _ in study.objectives], axis=1)
    return values, np.stack(list(cons.values()), axis=1), list(cons)


def _update_front(front: np.ndarray, new: np.ndarray, study: Study, ref: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Running feasible front and its 2-D hypervolume (reference fixed at the first feasible batch)."""
    maximize = [up for _, up in study.objectives]
    merged = np.unique(np.concatenate([front, new]), axis=0) if len(new) else front  # repeats count once
    if len(merged):
        merged = merged[pareto_mask(merged, maximize)]
    if len(study.objectives) != 2 or not len(merged):
        return merged, ref, math.nan
    if ref is None:
        worst = np.where(maximize, merged.min(axis=0), merged.max(axis=0))
        ref = np.where(maximize, worst * 0.5, worst * 2.0)
    return merged, ref, hypervolume_2d(merged, maximize, ref)
