"""Exhaustive sweep of a finite design space: parallel chunks, a streaming Pareto front.

Designs are numbered ``0 .. space.size - 1``; chunk ``c`` holds indices
``[c * chunk_size, (c + 1) * chunk_size)``. Each joblib task evaluates a run of chunks and
returns only their feasible non-dominated rows and their share of the plot sample; the
parent folds these in as they arrive, so memory stays bounded by the front, the sample
and the tasks in flight, whatever the size of the space. Shard ``(i, n)`` takes chunks
``i, i + n, ...``; :func:`merge_fronts` combines shard fronts into exactly the front one
run gives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import joblib
import numpy as np
import pandas as pd

from dse.loading import INVALID_INPUT
from dse.results.pareto import ParetoArchive, pareto_mask
from dse.spec.errors import SpecError, did_you_mean
from dse.spec.metrics import MODEL_CONSTRAINTS

INDEX_COLUMN = "design_index"
FEASIBLE_COLUMN = "feasible"
MEMORY_CONSTRAINT = "g_memory_bytes"  # always applied: the design must fit, <= 0
_TASK_POINTS = 1 << 20  # designs per joblib task at most (amortises dispatch and the factory call)
_TASKS_PER_WORKER = 4  # at least this many tasks per worker when the space allows (load balance)

Table = dict[str, np.ndarray]
Evaluate = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


class FiniteSpace(Protocol):
    """A finite design space whose designs are numbered ``0 .. size - 1``.

    A space may also have ``distinct_at(index) -> bool array | None``: False for an index
    that repeats the design of another (it is then skipped: not evaluated, not counted).
    """

    size: int

    def columns_at(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Design columns (SI floats, or int codes for 'model'/'platform') of int64 indices."""
        ...


@dataclass(frozen=True)
class SweepResult:
    """What a sweep found.

    ``front``: the feasible non-dominated designs, one row each (``design_index``, the
    design columns, every metric), sorted by ``design_index``. ``sample``: a uniform
    random sample of every evaluated design, the same columns plus ``feasible``.
    ``n_evaluated``: distinct designs evaluated (indices that repeat a design are skipped).
    """

    front: pd.DataFrame
    sample: pd.DataFrame
    n_evaluated: int
    n_feasible: int
    elapsed_s: float
    n_invalid: int = 0  # designs with an input outside its valid range (infeasible, see dse.loading)

    @property
    def points_per_s(self) -> float:
        """Designs evaluated per second of wall time."""
        return self.n_evaluated / self.elapsed_s if self.elapsed_s > 0 else math.inf


@dataclass(frozen=True)
class _Plan:
    """What every task needs besides the space and the evaluator factory."""

    size: int
    chunk_size: int
    objectives: tuple[str, ...]
    maximize: tuple[bool, ...]
    constraints: tuple[tuple[str, float, float], ...]  # (name, lower, upper) bounds, inclusive
    sample_size: int
    sample_cap: int  # sample keys <= this are candidates (bottom-k pre-filter)


@dataclass
class _Partial:
    """One task's (or the parent's running) share of the result."""

    front: ParetoArchive
    sample: Table
    n_evaluated: int = 0
    n_feasible: int = 0
    n_invalid: int = 0


def sweep(space: FiniteSpace, make_evaluator: Callable[[], Evaluate],
          objectives: Sequence[tuple[str, bool]], constraints: Sequence[tuple] = (), *,
          chunk_size: int = 1 << 18, n_jobs: int = -1, backend: str | None = None,
          shard: tuple[int, int] | None = None, sample_size: int = 10_000,
          progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Evaluate every design of ``space`` (or of one shard) and keep the Pareto front.

    ``make_evaluator()`` returns the metric function (columns -> metric arrays); each
    task calls it once, so it must pickle for process backends:
    ``functools.partial(dse.loading.space_evaluator, space)`` for a :class:`dse.spec.space.Space`,
    or ``functools.partial(dse.Evaluator, model=..., platform=...)``.
    ``objectives``: ``(name, maximize)`` pairs; ``constraints``: ``(name, upper)`` or
    ``(name, lower, upper)`` (None: unbounded), feasible when ``lower <= value <= upper``,
    on top of ``g_memory_bytes <= 0``; names are metrics or design columns.
    ``n_jobs``/``backend`` go to :class:`joblib.Parallel`. ``shard=(i, n)`` evaluates
    chunks ``i, i + n, ...`` only. ``progress(done, total)`` gets design counts as tasks finish.

    >>> factory = functools.partial(space_evaluator, space)  # doctest: +SKIP
    >>> res = sweep(space, factory, [("decode_tokens_per_s", True), ("tpot_s", False)],
    ...             [("ttft_s", 0.5)])  # doctest: +SKIP
    >>> res.front[["design_index", "decode_tokens_per_s", "tpot_s"]]  # doctest: +SKIP
    """
    start_s = time.perf_counter()
    plan, empty = _plan(space, make_evaluator, objectives, constraints, chunk_size, sample_size)
    chunks = _shard_chunks(plan, shard)
    total = _points_in(chunks, plan)
    result = _Partial(ParetoArchive(plan.maximize), _with_feasible(empty, np.zeros(0, dtype=bool)))
    result.front.update(np.empty((0, len(plan.objectives))), empty)
    if progress:
        progress(0, total)
    tasks = _task_chunks(chunks, plan.chunk_size, joblib.effective_n_jobs(n_jobs))
    with joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="generator_unordered") as parallel:
        for part in parallel(joblib.delayed(_run_task)(space, make_evaluator, run, plan) for run in tasks):
            _fold(result, part, plan.sample_size)
            if progress:
                progress(result.n_evaluated, total)
    return SweepResult(front=_frame(result.front.payload), sample=_frame(result.sample),
                       n_evaluated=result.n_evaluated, n_feasible=result.n_feasible,
                       elapsed_s=time.perf_counter() - start_s, n_invalid=result.n_invalid)


def merge_fronts(fronts: Sequence[pd.DataFrame], objectives: Sequence[tuple[str, bool]]) -> pd.DataFrame:
    """Front of the union of shard fronts (``SweepResult.front`` tables), as one run gives.

    A design present in several inputs counts once.
    """
    if not fronts:
        raise SpecError("", "fronts", "at least one front table is required", fronts)
    union = pd.concat(list(fronts), ignore_index=True).drop_duplicates(INDEX_COLUMN)
    names = [name for name, _ in objectives]
    missing = [n for n in names if n not in union.columns]
    if missing:
        raise SpecError("", "objectives", f"not a front column{did_you_mean(missing[0], union.columns)}", missing[0])
    keep = pareto_mask(union[names].to_numpy(dtype=np.float64), [bool(m) for _, m in objectives])
    return _sorted(union[keep])


def _plan(space: FiniteSpace, make_evaluator: Callable[[], Evaluate], objectives: Sequence[tuple[str, bool]],
          constraints: Sequence[tuple], chunk_size: int, sample_size: int) -> tuple[_Plan, Table]:
    """Validate the arguments against one probe design; return the plan and an empty table."""
    size = space.size
    if size is None:
        raise SpecError("", "space", "is not finite (a knob is continuous): give it a step or choices", size)
    size = int(size)
    if size < 1:
        raise SpecError("", "space", "has no designs", size)
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise SpecError("", "chunk_size", "must be a positive integer", chunk_size)
    if int(sample_size) != sample_size or sample_size < 0:
        raise SpecError("", "sample_size", "must be an integer >= 0", sample_size)
    if not objectives:
        raise SpecError("", "objectives", "at least one (name, maximize) pair is required", objectives)
    probe = _evaluate(space, make_evaluator(), np.zeros(1, dtype=np.int64))
    if MEMORY_CONSTRAINT not in probe:
        raise SpecError("", "make_evaluator", f"the evaluator must return '{MEMORY_CONSTRAINT}'", sorted(probe))
    names = [name for name in probe if name != INDEX_COLUMN]
    for key, items, lengths in (("objectives", objectives, (2,)), ("constraints", constraints, (2, 3))):
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) not in lengths:
                form = "(name, maximize)" if key == "objectives" else "(name, upper) or (name, lower, upper)"
                raise SpecError("", f"{key}[{i}]", f"must be {form}", item)
            if item[0] not in names:
                raise SpecError("", f"{key}[{i}]", f"unknown metric or column{did_you_mean(item[0], names)}",
                                item[0])
    bounds = tuple(_bounds(i, c) for i, c in enumerate(constraints))
    expected = 4 * sample_size + 64  # sample candidates kept overall, on average: >> sample_size
    cap = min(2**64 - 1, (expected * 2**64) // size)
    plan = _Plan(size, int(chunk_size), tuple(n for n, _ in objectives), tuple(bool(m) for _, m in objectives),
                 bounds, int(sample_size), cap)
    return plan, _take(probe, np.zeros(0, dtype=np.int64))


def _bounds(i: int, constraint: tuple) -> tuple[str, float, float]:
    """``(name, lower, upper)`` of a constraint given as ``(name, upper)`` or ``(name, lower, upper)``."""
    name, *given = constraint
    lower, upper = ([None] + given) if len(given) == 1 else given
    try:
        low = -math.inf if lower is None else float(lower)
        high = math.inf if upper is None else float(upper)
    except (TypeError, ValueError):
        raise SpecError("", f"constraints[{i}]", "bounds must be numbers or None", constraint) from None
    if math.isnan(low) or math.isnan(high) or low > high:
        raise SpecError("", f"constraints[{i}]", "needs lower <= upper", constraint)
    return str(name), low, high


def _shard_chunks(plan: _Plan, shard: tuple[int, int] | None) -> range:
    """Chunk numbers evaluated by ``shard`` (all when None)."""
    n_chunks = -(-plan.size // plan.chunk_size)
    if shard is None:
        return range(n_chunks)
    if (not isinstance(shard, (tuple, list)) or len(shard) != 2
            or not all(isinstance(x, (int, np.integer)) for x in shard) or not 0 <= shard[0] < shard[1]):
        raise SpecError("", "shard", "must be (i, n) with 0 <= i < n", shard)
    return range(int(shard[0]), n_chunks, int(shard[1]))


def _points_in(chunks: range, plan: _Plan) -> int:
    """Designs in the given chunks (the last chunk of the space may be short)."""
    short = -plan.size % plan.chunk_size
    last = -(-plan.size // plan.chunk_size) - 1
    return len(chunks) * plan.chunk_size - (short if last in chunks else 0)


def _task_chunks(chunks: range, chunk_size: int, n_workers: int) -> Iterator[range]:
    """Consecutive runs of ``chunks``, one per task: big enough to amortise, many enough to balance."""
    per_task = max(1, min(_TASK_POINTS // chunk_size, len(chunks) // (_TASKS_PER_WORKER * max(1, n_workers))))
    for i in range(0, len(chunks), per_task):
        yield chunks[i:i + per_task]


def _run_task(space: FiniteSpace, make_evaluator: Callable[[], Evaluate], chunks: range, plan: _Plan) -> _Partial:
    """Evaluate some chunks; keep their feasible non-dominated rows and sample candidates."""
    evaluate = make_evaluator()
    part = _Partial(ParetoArchive(plan.maximize), {})
    for chunk in chunks:
        start = chunk * plan.chunk_size
        index = np.arange(start, min(start + plan.chunk_size, plan.size), dtype=np.int64)
        _add_chunk(part, space, evaluate, index, plan)
    return part


def _add_chunk(part: _Partial, space: FiniteSpace, evaluate: Evaluate, index: np.ndarray, plan: _Plan) -> None:
    """Evaluate one chunk into ``part`` (a function, so the chunk's arrays die on return)."""
    distinct_at = getattr(space, "distinct_at", None)
    stands = distinct_at(index) if distinct_at is not None else None
    if stands is not None:  # indices that repeat a design (a knob switched off by a condition) are skipped
        index = index[stands]
        if not len(index):
            return
    table = _evaluate(space, evaluate, index)
    feasible = _feasible(table, plan.constraints)
    rows = np.flatnonzero(feasible)
    values = np.column_stack([table[name][rows] for name in plan.objectives])
    on_front = pareto_mask(values, plan.maximize)
    part.front.update(values[on_front], _take(table, rows[on_front]))
    if plan.sample_size:
        picked = np.flatnonzero(_sample_keys(index) <= np.uint64(plan.sample_cap))
        candidates = _with_feasible(_take(table, picked), feasible[picked])
        part.sample = _smallest_rows(_concat(part.sample, candidates), plan.sample_size)
    part.n_evaluated += len(index)
    part.n_feasible += len(rows)
    if INVALID_INPUT in table:
        part.n_invalid += int(np.count_nonzero(table[INVALID_INPUT] > 0))


def _evaluate(space: FiniteSpace, evaluate: Evaluate, index: np.ndarray) -> Table:
    """``design_index``, the design columns and the metrics of the designs ``index``."""
    columns = space.columns_at(index)
    metrics = evaluate(columns)
    return {INDEX_COLUMN: index, **{name: np.broadcast_to(np.asarray(v), index.shape)
                                    for name, v in {**columns, **metrics}.items()}}


def _feasible(table: Table, constraints: tuple[tuple[str, float, float], ...]) -> np.ndarray:
    """Rows that fit in memory and meet every ``lower <= value <= upper`` constraint."""
    ok = table[MEMORY_CONSTRAINT] <= 0
    for name in MODEL_CONSTRAINTS:  # the model's own constraints, where the evaluator computed them
        if name in table:
            ok &= table[name] <= 0
    for name, lower, upper in constraints:
        ok &= (table[name] >= lower) & (table[name] <= upper)
    return ok


def _fold(into: _Partial, part: _Partial, sample_size: int) -> None:
    """Add a task's share to the running result."""
    into.front.merge(part.front)
    if part.sample:
        into.sample = _smallest_rows(_concat(into.sample, part.sample), sample_size)
    into.n_evaluated += part.n_evaluated
    into.n_feasible += part.n_feasible
    into.n_invalid += part.n_invalid


def _sample_keys(index: np.ndarray) -> np.ndarray:
    """Pseudo-random uint64 key per design index (splitmix64; a bijection, so no ties).

    The sample is the designs with the ``sample_size`` smallest keys: uniform without
    replacement and independent of chunking, sharding and worker count.
    """
    z = index.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest keys (all when there are fewer), in no order."""
    if len(keys) <= k:
        return np.arange(len(keys))
    return np.argpartition(keys, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)


def _smallest_rows(table: Table, k: int) -> Table:
    return _take(table, _smallest(_sample_keys(table[INDEX_COLUMN]), k))


def _take(table: Table, rows: np.ndarray) -> Table:
    return {name: col[rows] for name, col in table.items()}


def _concat(a: Table, b: Table) -> Table:
    return {name: np.concatenate((a[name], b[name])) for name in b} if a else b


def _with_feasible(table: Table, feasible: np.ndarray) -> Table:
    return {**table, FEASIBLE_COLUMN: feasible}


def _frame(table: Table) -> pd.DataFrame:
    return _sorted(pd.DataFrame(table))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(INDEX_COLUMN, kind="stable").reset_index(drop=True)
