"""A study with ``sampler: exhaustive``: every design of a finite space, the exact front.

The sweep (:mod:`dse.sweep.engine`) keeps only the feasible front and a uniform sample, so memory
stays bounded; the result files have the same columns as a search's, rebuilt from the
design indices: ``front.parquet`` is the exact front, ``trials.parquet`` the sample plus
the front (``design_index`` identifies a design).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from dse.loading import INVALID_INPUT, space_evaluator
from dse.results.io import read_metadata, read_table
from dse.results.tables import design_table, front_of, write_results
from dse.runtime import tune_malloc
from dse.spec.errors import SpecError
from dse.spec.study import Study
from dse.sweep.engine import INDEX_COLUMN, merge_fronts, sweep
from dse.sweep.lock import output_lock


@dataclass
class RunResult:
    """What a study run (a search or a sweep) did and where its files are."""

    n_trials: int
    n_new: int
    n_feasible: int
    front_size: int
    elapsed_s: float
    paths: dict[str, Path]
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


BACKENDS = ("loky", "threading", "multiprocessing", "dask")  # joblib's, and dask's through its parallel_config


@dataclass(frozen=True)
class SweepOptions:
    """How to run the sweep: joblib ``n_jobs``/``backend``, a shard ``(i, n)``, chunk size."""

    n_jobs: int = -1
    backend: str | None = None
    shard: tuple[int, int] | None = None
    chunk_size: int = 1 << 18

    def __post_init__(self) -> None:
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs == 0:
            raise SpecError("--n-jobs", "n_jobs", "must be >= 1 processes, or negative (-1: all cores, -2: all but "
                            "one)", self.n_jobs)
        if self.backend is not None and self.backend not in BACKENDS:
            raise SpecError("--backend", "backend", f"must be one of {list(BACKENDS)}", self.backend)
        if self.shard is not None and (not isinstance(self.shard, (tuple, list)) or len(self.shard) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in self.shard)
                or not 0 <= self.shard[0] < self.shard[1]):
            raise SpecError("--shard", "shard", "must be I/N with 0 <= I < N", self.shard)


def run_exhaustive(study: Study, *, progress: bool = True, options: SweepOptions | None = None) -> RunResult:
    """Sweep the study's space exhaustively and write its result files (one run per output folder)."""
    opts = options or SweepOptions()
    if study.space.size is None:
        raise SpecError(study.file, "sampler.name", "exhaustive needs a finite space (every float knob needs a step)",
                        study.sampler)
    with output_lock(study.output) as removed:
        result = _sweep_study(study, progress, opts)
    if removed:
        result.notes.append(f"removed stale files of a killed run: {', '.join(removed)}")
    return result


def _sweep_study(study: Study, progress: bool, opts: SweepOptions) -> RunResult:
    space = study.space
    start = time.perf_counter()
    constraints = [(c.metric, c.min, c.max) for c in study.constraints]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=space.size, unit="design", unit_scale=True, dynamic_ncols=True)

    def report(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    tune_malloc()
    chunk_size = opts.chunk_size
    if opts.shard is not None:  # enough chunks for every shard to get a share
        chunk_size = min(chunk_size, max(1024, -(-space.size // (4 * opts.shard[1]))))
    try:  # joblib registers external backends (dask) through parallel_config only
        with joblib.parallel_config(backend=opts.backend) if opts.backend else contextlib.nullcontext():
            factory = functools.partial(space_evaluator, space)
            one_chunk = opts.backend is None and space.size <= chunk_size  # no worker processes to start
            res = sweep(space, factory, study.objectives, constraints, chunk_size=chunk_size,
                        n_jobs=1 if one_chunk else opts.n_jobs, shard=opts.shard, progress=report)
    finally:
        if bar is not None:
            bar.close()
    front_idx = res.front[INDEX_COLUMN].to_numpy(dtype=np.int64)
    sample_idx = res.sample[INDEX_COLUMN].to_numpy(dtype=np.int64)
    index = np.unique(np.concatenate([front_idx, sample_idx]))
    trials = design_table(study, space.params_at(index))
    trials.insert(0, INDEX_COLUMN, index)
    knobs = [k.name for k in space.knobs]
    front = front_of(trials[np.isin(index, front_idx)], study.objectives, knobs)
    extra = {"sampler": "exhaustive", "n_evaluated": res.n_evaluated, "n_feasible": res.n_feasible,
             "space_size": space.size, "shard": list(opts.shard) if opts.shard else None,
             "points_per_s": res.points_per_s}
    paths = write_results(study, trials, front, extra)
    notes = []
    if res.n_invalid:
        notes.append(f"{res.n_invalid:,} designs infeasible ({INVALID_INPUT}): an input outside its valid range or "
                     "not finite (a derived value, say); see that column in trials.parquet")
    points = space.size if opts.shard is None else None
    if points is not None and res.n_evaluated < points:
        notes.append(f"the space's {points:,} points are {res.n_evaluated:,} distinct designs (a knob that its "
                     "`when` switches off repeats a design): each evaluated once")
    return RunResult(res.n_evaluated, res.n_evaluated, res.n_feasible, len(front), time.perf_counter() - start,
                     paths, notes=notes)


def merge_shards(frames: list[pd.DataFrame], study: Study) -> pd.DataFrame:
    """The exact front of several shard ``front.parquet`` tables of one study."""
    return front_of(merge_fronts(frames, study.objectives), study.objectives, [k.name for k in study.space.knobs])


def merge_shard_folders(study: Study, folders: Sequence[str | Path]) -> RunResult:
    """Merge the result folders of one study's sweep shards into its exact front, written to
    ``study.output``; a SpecError when the folders are not exactly the shards ``0/N .. N-1/N``
    of this study (another study's or spec's shard, a whole sweep, a shard missing or repeated)."""
    start = time.perf_counter()
    if not folders:
        raise SpecError("dse merge", "shards", "at least one shard folder is required", list(folders))
    seen: dict[int, str] = {}
    fronts, trials, n_shards, n_evaluated, n_feasible = [], [], None, 0, 0
    for folder in folders:
        path = Path(folder) / "front.parquet" if Path(folder).is_dir() else Path(folder)
        fronts.append(read_table(path))
        meta = read_metadata(path)
        shard = meta.get("shard")
        if meta.get("study") != study.name or meta.get("spec_hash") != study.spec_hash:
            raise SpecError(str(path), "shards", f"not a shard of this study ({study.name}, spec {study.spec_hash}): "
                            "it is study", f"{meta.get('study')}, spec {meta.get('spec_hash')}")
        if not (isinstance(shard, list) and len(shard) == 2):
            raise SpecError(str(path), "shards", "not a shard (a whole sweep or a search): nothing to merge", shard)
        i, n = shard
        if n_shards is not None and n != n_shards:
            raise SpecError(str(path), "shards", f"is one of {n} shards, the others of {n_shards}", f"{i}/{n}")
        if i in seen:
            raise SpecError(str(path), "shards", f"shard {i}/{n} given twice (also {seen[i]})", str(folder))
        n_shards, seen[i] = n, str(folder)
        trials.append(read_table(path.with_name("trials.parquet")))
        n_evaluated += int(meta.get("n_evaluated") or 0)
        n_feasible += int(meta.get("n_feasible") or 0)
    missing = [f"{i}/{n_shards}" for i in range(n_shards or 0) if i not in seen]
    if missing:
        raise SpecError("dse merge", "shards", f"the shard set is incomplete: missing {', '.join(missing)}",
                        sorted(f"{i}/{n_shards}" for i in seen))
    with output_lock(study.output):
        front = merge_shards(fronts, study)
        all_trials = pd.concat(trials, ignore_index=True).drop_duplicates(subset=[INDEX_COLUMN])
        paths = write_results(study, all_trials, front, {"sampler": "exhaustive", "n_evaluated": n_evaluated,
                                                         "n_feasible": n_feasible, "space_size": study.space.size,
                                                         "merged_shards": [str(f) for f in folders]})
    return RunResult(n_evaluated, 0, n_feasible, len(front), time.perf_counter() - start, paths)
