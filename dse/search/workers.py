"""Local worker processes sharing one study's storage; the parent exports once at the end."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import replace

import optuna

from dse.loading import load_study
from dse.search.budget import STALE_AFTER_S, fail_stale
from dse.search.export import export
from dse.search.interrupts import DeferredInterrupt
from dse.search.loop import check_run_arguments, run_study
from dse.search.retry import with_retry
from dse.search.samplers import resolve_sampler
from dse.search.storages import hold_output, is_journal, load_stored, open_storage
from dse.spec.errors import DseError, SpecError
from dse.spec.study import Study
from dse.sweep.study import RunResult, SweepOptions, run_exhaustive


def _load(study_path: str, output: str | None, storage: str | None, n_trials: int | None) -> Study:
    study = load_study(study_path, output=output, storage=storage)
    return replace(study, n_trials=n_trials) if n_trials is not None else study


def run_workers(study_path: str, n_workers: int, *, output: str | None = None, storage: str | None = None,
                n_trials: int | None = None, stale_after_s: float = STALE_AFTER_S, progress: bool = True
                ) -> RunResult:
    """Run a study with ``n_workers`` local processes sharing its storage, then export once.

    Each worker loads the spec itself and samples with seed ``seed + worker``; the same
    command on other machines (same storage URL) joins the same study.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise SpecError("--workers", "workers", "must be an integer >= 1", n_workers)
    study = _load(study_path, output, storage, n_trials)
    check_run_arguments(study.n_trials, stale_after_s)
    sampler, note = resolve_sampler(study.sampler, study.space, study.n_trials)
    if sampler == "exhaustive":  # a sweep: the workers are its parallel jobs
        result = run_exhaustive(replace(study, sampler=sampler), progress=progress,
                                options=SweepOptions(n_jobs=n_workers))
        result.notes[:0] = [note] if note else []
        return result
    start = time.perf_counter()
    notes = [note] if note else []
    with contextlib.ExitStack() as held:
        if is_journal(study.storage):  # a journal is one machine's: one run of it at a time
            removed = hold_output(study, held)
            if removed:
                notes.append(f"removed stale files of a killed run: {', '.join(removed)}")
        storage_obj, _, repaired = open_storage(study)  # repairs a journal before any worker reads it
        notes += repaired
        load_stored(study, storage_obj)  # create it once, before the workers race to
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(study_path, output, storage, n_trials, i, stale_after_s),
                             daemon=False) for i in range(n_workers)]
        for p in procs:
            p.start()
        with DeferredInterrupt() as ctrl_c:
            try:
                _wait(procs, ctrl_c)
            except KeyboardInterrupt:  # a second Ctrl-C: stop now
                for p in procs:
                    p.terminate()
                raise
            failed = [p.exitcode for p in procs if p.exitcode != 0]

            def finish() -> RunResult:
                work = optuna.load_study(study_name=study.name, storage=storage_obj)
                fail_stale(work, stale_after_s)  # fail what dead workers left running
                return export(study, work)

            result = finish() if is_journal(study.storage) else \
                with_retry(finish, what="reading the trials for the result files", url=study.storage or "")
    result.elapsed_s = time.perf_counter() - start
    result.interrupted = ctrl_c.requested
    result.notes[:0] = notes
    if failed:
        print(f"warning: {len(failed)} worker(s) exited with codes {failed}", file=sys.stderr)
    return result


def _wait(procs: list, ctrl_c: DeferredInterrupt) -> None:
    """Join the workers; on Ctrl-C, pass it on once (each then stops after its batch in flight)."""
    forwarded = False
    while any(p.is_alive() for p in procs):
        if ctrl_c.requested and not forwarded:
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGINT)
            forwarded = True
        for p in procs:
            p.join(timeout=0.1)


def _worker_main(study_path: str, output: str | None, storage: str | None, n_trials: int | None, worker: int,
                 stale_after_s: float) -> None:
    try:
        study = _load(study_path, output, storage, n_trials)
        run_study(study, progress=False, worker=worker, stale_after_s=stale_after_s)
    except DseError as exc:  # one line, as the command itself would print, not a traceback
        print(f"error: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(2)
