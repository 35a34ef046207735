"""Optuna search driver: batched ask/tell over a vectorised evaluator, resumable storage.

Measured with Optuna 5.0 on a 2-core machine (``shared/reference/optuna.md``): in-memory
ask+tell costs 0.4-0.9 ms per trial, a journal file 7-9 ms, SQLite 37-52 ms, while bulk
``add_trials`` costs 0.5 ms per trial on a journal. So by default the sampler runs on an
in-memory study and every finished batch is checkpointed to a journal file in the output
folder with ``add_trials``; a restart replays the journal into memory and continues. A
SIGKILL loses at most the batch in flight. With an explicit storage URL (PostgreSQL for
many workers), trials are asked and told on that storage directly so workers share it.
"""

from __future__ import annotations

import bisect
import inspect
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dse.loading import space_evaluator
from dse.results.pareto import hypervolume_2d, pareto_mask
from dse.results.tables import design_table, front_of, violations, write_results
from dse.spec.errors import SpecError, did_you_mean, redact
from dse.spec.space import Knob, Space, _is_strings
from dse.spec.study import Study

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPEC_HASH_ATTR = "dse_spec_hash"
STALE_AFTER_S = 60.0  # a RUNNING trial this old belongs to a dead worker (a batch takes milliseconds)
# On a shared RDB every ask re-reads the RUNNING trials (optuna.md, pitfall P5): keep batches small.
SHARED_BATCH = 8
RACE_MARGIN = 256  # concurrent claims beyond this many free slots cannot overshoot the budget


def distributions(space: Space) -> dict[str, BaseDistribution]:
    """One Optuna distribution per knob (SI values; string categoricals keep their names)."""
    out: dict[str, BaseDistribution] = {}
    for k in space.knobs:
        out[k.name] = _distribution(k)
    return out


def _distribution(k: Knob) -> BaseDistribution:
    if k.kind == "categorical":
        return CategoricalDistribution(list(k.choices))
    if k.kind == "int":
        return IntDistribution(int(k.low), int(k.high), log=k.log, step=int(k.step or 1))
    return FloatDistribution(k.low, k.high, log=k.log, step=k.step)


class IncrementalNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II whose generation lookup reads only the trials completed since its last call.

    Optuna's ``get_trial_generation`` re-scans every completed trial for each new trial,
    O(n^2) over a study (a third of a 5,000-trial run here). It needs only the highest
    generation among completed trials and how many have it, a running summary, valid
    when completed trials are only ever appended: true in the single-process loop of
    :func:`run_study`, which therefore uses this class there (and Optuna's elsewhere).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._seen = 0  # completed trials already summarised
        self._max_generation = 0
        self._max_generation_count = 0

    def get_trial_generation(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
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


_SAMPLERS: dict[str, type] = {
    "nsga2": optuna.samplers.NSGAIISampler, "nsga3": optuna.samplers.NSGAIIISampler,
    "tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler, "random": optuna.samplers.RandomSampler,
    "qmc": optuna.samplers.QMCSampler, "grid": optuna.samplers.GridSampler,
}
_SAMPLER_DEFAULTS: dict[str, dict[str, Any]] = {  # population = batch: one generation per batch (optuna.md)
    "nsga2": {"population_size": None}, "nsga3": {"population_size": None}, "tpe": {"multivariate": True},
}
MIN_POPULATION = 20  # a population of the batch size, but never a degenerate one (batch 1)
GRID_MAX_POINTS = 1_000_000


def make_sampler(name: str, options: dict[str, Any], seed: int, batch_size: int, space: Space, *,
                 file: str = "", append_only: bool = False) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for a study's ``sampler`` section; option names are checked first.

    ``append_only``: trials complete in number order in one process (see
    :class:`IncrementalNSGAIISampler`)."""
    cls = _SAMPLERS.get(name)
    if cls is None:
        raise SpecError(file, "sampler.name", "no Optuna sampler for this name", name)
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "seed", "search_space")]
    for key in options:
        if key not in allowed:
            raise SpecError(file, f"sampler.options.{key}", f"not an option of {cls.__name__}"
                            f"{did_you_mean(key, allowed)}", options[key])
    opts = {k: (max(batch_size, MIN_POPULATION) if v is None else v)
            for k, v in _SAMPLER_DEFAULTS.get(name, {}).items()}
    opts.update(options)
    args: list[Any] = []
    if name == "grid":
        if (space.size or GRID_MAX_POINTS + 1) > GRID_MAX_POINTS:
            raise SpecError(file, "sampler.name", "grid materialises every point: use exhaustive above 1e6",
                            space.size)
        args = [{k.name: list(k.choices) if k.kind == "categorical" else k.values().tolist() for k in space.knobs}]
    if append_only and cls is optuna.samplers.NSGAIISampler:
        cls = IncrementalNSGAIISampler
    try:
        return cls(*args, seed=seed, **opts)
    except (TypeError, ValueError) as exc:
        raise SpecError(file, "sampler.options", f"rejected by {cls.__name__}: {exc}", options) from None


class CheckpointJournal(optuna.storages.journal.JournalFileBackend):
    """A journal file that flushes each append to the OS but fsyncs once per checkpoint.

    Optuna's backend fsyncs every trial (about 0.5 ms each here); written data already
    survives the death of the process (it is in the page cache), so one fsync per
    checkpoint keeps the SIGKILL guarantee and adds power-loss safety at the checkpoint.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with optuna.storages.journal._file.get_lock_file(self._lock):
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with open(self._file_path, "ab") as fh:
                fh.write(text.encode("utf-8"))

    def sync(self) -> None:
        """Make everything appended so far durable."""
        with open(self._file_path, "ab") as fh:
            os.fsync(fh.fileno())


def _sqlite_wal(storage: optuna.storages.RDBStorage) -> None:
    """Write-ahead log and normal sync on SQLite: 34 -> 20 ms per trial measured (optuna.md)."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # reconnect with the pragmas


def repair_journal(path: Path) -> None:
    """Drop a torn last line left by a killed writer (Optuna would fail on the next append)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        fh.seek(size - block)
        tail = fh.read(block)
        cut = tail.rfind(b"\n")
        fh.truncate(size - block + cut + 1 if cut >= 0 else 0)


def _params_arrays(space: Space, trials: list) -> dict[str, np.ndarray]:
    cats = space.categories()
    params = [t.params for t in trials]  # each read of FrozenTrial.params copies the dict
    out = {}
    for k in space.knobs:
        values = [p[k.name] for p in params]
        if k.kind == "categorical" and _is_strings(k.choices):
            out[k.name] = np.array([cats[k.name].index(v) for v in values], dtype=float)
        else:
            out[k.name] = np.array(values, dtype=float)
    return out


@dataclass
class RunResult:
    """What a study run did and where its files are."""

    n_trials: int
    n_new: int
    n_feasible: int
    front_size: int
    elapsed_s: float
    paths: dict[str, Path]
    interrupted: bool = False


class _Progress:
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


def _is_journal(url: str | None) -> bool:
    """The default storage or a journal file path (checkpointed from memory, not shared)."""
    return url is None or url.endswith((".journal", ".log"))


def _open_storage(study: Study) -> tuple[Any, CheckpointJournal | None]:
    """(Optuna storage, checkpoint backend or None) for the study: a journal file by default."""
    if study.storage is None:
        study.output.mkdir(parents=True, exist_ok=True)
        path = (study.output / "optuna.journal").resolve()
        repair_journal(path)
        backend = CheckpointJournal(str(path))
        return optuna.storages.JournalStorage(backend), backend
    url = study.storage
    if url.startswith(("sqlite", "postgresql", "mysql")):
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs = {"connect_args": {"timeout": 60}}
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as exc:  # noqa: BLE001 - report any driver/connection failure as bad input
            raise SpecError(study.file, "storage", f"cannot open: {exc.__class__.__name__}", url) from None
        if url.startswith("sqlite"):
            _sqlite_wal(storage)
        return storage, None
    if _is_journal(url):
        path = Path(url).resolve()
        repair_journal(path)
        backend = CheckpointJournal(str(path))
        return optuna.storages.JournalStorage(backend), backend
    raise SpecError(study.file, "storage", "unsupported storage URL (sqlite:///, postgresql+psycopg://, or a "
                    ".journal file)", redact(url))


def run_study(study: Study, *, progress: bool = True, stop: Callable[[], bool] | None = None,
              worker: int | None = None, stale_after_s: float = STALE_AFTER_S) -> RunResult:
    """Run (or resume) a study to its budget (``n_trials`` complete trials) and write its result files.

    Ctrl-C stops after saving everything finished so far; running again resumes. With a
    shared storage (an RDB URL, or ``worker`` set by :func:`run_workers`), trials are
    asked and told on that storage so that any number of processes and machines share
    the study; trials left RUNNING by a dead worker for ``stale_after_s`` are failed
    and replaced. A ``worker`` process writes no result files (its parent does).
    """
    if study.sampler == "exhaustive":
        from dse.sweep.study import run_exhaustive  # imports this module: resolved at call time
        return run_exhaustive(study, progress=progress)
    start = time.perf_counter()
    seed = study.seed + (worker or 0)
    shared = worker is not None or not _is_journal(study.storage)
    sampler = make_sampler(study.sampler, study.sampler_options, seed, study.batch_size, study.space,
                           file=study.file, append_only=not shared)  # validates before anything is written
    storage, journal = _open_storage(study)  # the first thing that writes
    stored = _load_stored(study, storage)
    if shared:
        work = optuna.load_study(study_name=study.name, storage=storage, sampler=sampler)
    else:
        work = optuna.create_study(directions=_directions(study), sampler=sampler)
        work.add_trials(stored.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    dists = distributions(study.space)
    evaluator = space_evaluator(study.space)
    n_before = _n_complete(work)
    bar = _Progress(study.n_trials, n_before, progress)
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
                free = _free_slots(work, study.n_trials, stale_after_s)
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
                trials = _within_budget(work, trials, study.n_trials)
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
    result.n_new = _n_complete(work) - n_before
    result.elapsed_s = time.perf_counter() - start
    result.interrupted = interrupted
    return result


def _directions(study: Study) -> list[str]:
    return ["maximize" if up else "minimize" for _, up in study.objectives]


def _load_stored(study: Study, storage: Any) -> optuna.Study:
    """Create or load the stored study; refuse one whose searched spec differs."""
    try:
        stored = optuna.create_study(storage=storage, study_name=study.name, directions=_directions(study),
                                     load_if_exists=True)
    except ValueError as exc:
        raise SpecError(study.file, "objectives", f"stored study differs: {exc}", study.name) from None
    old_hash = stored.user_attrs.get(SPEC_HASH_ATTR)
    if old_hash is None:
        stored.set_user_attr(SPEC_HASH_ATTR, study.spec_hash)
    elif old_hash != study.spec_hash:
        raise SpecError(study.file, "", "the spec changed since this study was started: use a new output folder "
                        "or name", study.output)
    return stored


def _evaluate_trials(study: Study, evaluator: Any, work: optuna.Study, trials: list
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Objective values, constraint values and constraint names of asked trials (FAIL them on error)."""
    try:
        params = _params_arrays(study.space, trials)
        metrics = evaluator(study.space.columns(params))
    except BaseException:
        for t in trials:
            work.tell(t, state=TrialState.FAIL, skip_if_finished=True)
        raise
    cons = violations(metrics, study.constraints)
    values = np.stack([metrics[m] for m, _ in study.objectives], axis=1)
    return values, np.stack(list(cons.values()), axis=1), list(cons)


_LIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def _free_slots(work: optuna.Study, n_trials: int, stale_after_s: float) -> int | None:
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


def _within_budget(work: optuna.Study, trials: list, n_trials: int) -> list:
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


def run_workers(study_path: str, n_workers: int, *, output: str | None = None, storage: str | None = None,
                n_trials: int | None = None, stale_after_s: float = STALE_AFTER_S, progress: bool = True
                ) -> RunResult:
    """Run a study with ``n_workers`` local processes sharing its storage, then export once.

    Each worker loads the spec itself and samples with seed ``seed + worker``; the same
    command on other machines (same storage URL) joins the same study.
    """
    from dse.loading import load_study

    def load() -> Study:
        st = load_study(study_path, output=output, storage=storage)
        return replace(st, n_trials=n_trials) if n_trials is not None else st

    study = load()
    start = time.perf_counter()
    storage_obj, _ = _open_storage(study)
    _load_stored(study, storage_obj)  # create it once, before the workers race to
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(study_path, output, storage, n_trials, i, stale_after_s),
                         daemon=False) for i in range(n_workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    work = optuna.load_study(study_name=study.name, storage=storage_obj)
    _free_slots(work, study.n_trials, stale_after_s)  # fail what dead workers left running
    result = export(study, work)
    result.elapsed_s = time.perf_counter() - start
    if failed:
        print(f"warning: {len(failed)} worker(s) exited with codes {failed}", file=sys.stderr)
    return result


def _worker_main(study_path: str, output: str | None, storage: str | None, n_trials: int | None, worker: int,
                 stale_after_s: float) -> None:
    from dse.loading import load_study

    study = load_study(study_path, output=output, storage=storage)
    if n_trials is not None:
        study = replace(study, n_trials=n_trials)
    run_study(study, progress=False, worker=worker, stale_after_s=stale_after_s)


def _n_complete(work: optuna.Study) -> int:
    return len(work.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


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


def export(study: Study, work: optuna.Study) -> RunResult:
    """Rebuild every completed trial's metrics (the model is deterministic) and write the result files."""
    trials = work.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = _params_arrays(study.space, trials) if trials else {k.name: np.zeros(0) for k in study.space.knobs}
    table = design_table(study, params, np.array([t.number for t in trials], dtype=np.int64))
    front = front_of(table, study.objectives, [k.name for k in study.space.knobs])
    paths = write_results(study, table, front, {"sampler": study.sampler, "storage": redact(study.storage or
                                                                                           "journal")})
    return RunResult(len(table), 0, int(table["feasible"].sum()), len(front), 0.0, paths)
