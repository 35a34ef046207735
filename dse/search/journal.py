"""The journal file: appends checkpointed once per batch, and its repair before a run reads it.

A journal is Optuna's log of operations, one JSON object a line. A killed writer leaves a
torn last line; a disk or a hand may leave a zeroed block, random bytes, a garbage or a
duplicated line, or a trial with a parameter outside its distribution or a non-finite
value. Optuna's replay stops with a traceback at any of these. :func:`repair_journal`
reads the file line by line first: unreadable and duplicated lines are dropped, a trial
that cannot be replayed is kept as FAIL (so later operations still find their trial
ids), the original is kept beside it as ``<name>.damaged``, and the caller gets a note
naming what was dropped. Call it only while no other process writes the file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

_OP_CODES = {op.value for op in JournalOperation}


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


class _Checker:
    """Whether a logged parameter lies in its logged distribution (distributions parsed once)."""

    def __init__(self) -> None:
        self._dists: dict[str, BaseDistribution | None] = {}

    def param_ok(self, dist_json: Any, internal: Any) -> bool:
        if not isinstance(dist_json, str):
            return False
        if dist_json not in self._dists:
            try:
                self._dists[dist_json] = json_to_distribution(dist_json)
            except (ValueError, KeyError, TypeError):
                self._dists[dist_json] = None
        dist = self._dists[dist_json]
        try:
            return dist is not None and _finite(internal) and bool(dist._contains(internal))
        except (TypeError, ValueError, IndexError):
            return False


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number(x: Any) -> bool:
    """A number Optuna accepts as an objective value: not NaN (an infinite metric is documented)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def _values_ok(values: Any) -> bool:
    return values is None or (isinstance(values, list) and all(_number(v) for v in values))


def _check_line(log: dict, checker: _Checker) -> tuple[dict | None, str]:
    """(the operation to keep, or None to drop it; what was wrong, '' if nothing)."""
    op = log.get("op_code")
    if op == JournalOperation.CREATE_TRIAL:
        params, dists = log.get("params") or {}, log.get("distributions") or {}
        ok = isinstance(params, dict) and isinstance(dists, dict) and \
            all(name in dists and checker.param_ok(dists[name], v) for name, v in params.items())
        if ok and _values_ok(log.get("values")) and (log.get("value") is None or _number(log.get("value"))):
            return log, ""
        failed = {**log, "state": TrialState.FAIL.value, "value": None, "values": None, "params": {},
                  "distributions": {}}
        return failed, "trial"
    if op == JournalOperation.SET_TRIAL_PARAM:
        if checker.param_ok(log.get("distribution"), log.get("param_value_internal")):
            return log, ""
        return None, "param"
    if op == JournalOperation.SET_TRIAL_STATE_VALUES and not _values_ok(log.get("values")):
        return {**log, "state": TrialState.FAIL.value, "values": None}, "trial"
    return log, ""


def repair_journal(path: Path) -> list[str]:
    """Make the journal at ``path`` replayable; return notes naming what was dropped ([] if sound)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn = lines.pop() != b""  # the text after the last newline: empty unless a writer died mid-line
    kept: list[bytes] = []
    seen: set[bytes] = set()
    unreadable, duplicated, failed, params = [], [], [], []
    checker = _Checker()
    for number, line in enumerate(lines, start=1):
        try:
            log = json.loads(line)
            readable = isinstance(log, dict) and log.get("op_code") in _OP_CODES and "worker_id" in log
        except (ValueError, UnicodeDecodeError):
            readable = False
        if not readable:
            unreadable.append(number)
            continue
        if line in seen:
            duplicated.append(number)
            continue
        seen.add(line)
        fixed, problem = _check_line(log, checker)
        if problem == "trial":
            failed.append(number)
        elif problem == "param":
            params.append(number)
        if fixed is not None:
            kept.append(line if fixed is log else json.dumps(fixed, separators=(",", ":")).encode())
    what = [f"{len(unreadable)} unreadable line(s) {_ranges(unreadable)}" if unreadable else "",
            f"{len(duplicated)} duplicated line(s) {_ranges(duplicated)}" if duplicated else "",
            f"{len(params)} parameter(s) outside the space {_ranges(params)}" if params else "",
            f"{len(failed)} trial(s) with a parameter outside the space or a NaN value, kept as failed "
            f"{_ranges(failed)}" if failed else ""]
    damage = [w for w in what if w]
    if not (damage or torn):
        return []
    damaged = path.with_name(path.name + ".damaged")
    if damage:
        os.replace(path, damaged)
    tmp = path.with_name(f".{path.name}.repair.tmp")
    tmp.write_bytes(b"".join(line + b"\n" for line in kept))
    os.replace(tmp, path)
    if not damage:  # only a torn last line: a killed writer, routine
        return []
    return [f"{path.name} was damaged: dropped {'; '.join(damage)}; the original is kept as {damaged.name}"]


def _ranges(numbers: list[int]) -> str:
    """``(lines 3-5, 9)`` for [3, 4, 5, 9] (at most 5 ranges shown)."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans[:5])
    return f"(line{'s' if len(numbers) > 1 else ''} {text}{', ...' if len(spans) > 5 else ''})"
