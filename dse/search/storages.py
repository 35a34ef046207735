"""Where a study's trials live: a checkpointed journal file by default (:mod:`dse.search.journal`),
or a shared RDB.

Measured with Optuna 5.0 on a 2-core machine (``shared/reference/optuna.md``): in-memory
ask+tell costs 0.4-0.9 ms per trial, a journal file 7-9 ms, SQLite 37-52 ms, while bulk
``add_trials`` costs 0.5 ms per trial on a journal. So by default the sampler runs on an
in-memory study and every finished batch is checkpointed to a journal file in the output
folder with ``add_trials``; a restart replays the journal into memory and continues. A
SIGKILL loses at most the batch in flight. With an explicit storage URL (PostgreSQL for
many workers), trials are asked and told on that storage directly so workers share it.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import optuna

from dse.results.tables import violations
from dse.search.journal import CheckpointJournal, repair_journal
from dse.search.retry import OPEN_RETRY_FOR_S, with_retry
from dse.spec.errors import DseError, SpecError, redact
from dse.spec.metrics import MODEL_CONSTRAINTS
from dse.spec.study import Study
from dse.sweep.lock import output_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPEC_HASH_ATTR = "dse_spec_hash"
CONSTRAINTS_ATTR = "dse_constraint_names"  # study user attr: what each trial's constraints list holds
DEFAULT_JOURNAL = "optuna.journal"


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


def is_journal(url: str | None) -> bool:
    """The default storage or a journal file path (checkpointed from memory, not shared)."""
    return url is None or url.endswith((".journal", ".log"))


def journal_path(study: Study) -> Path | None:
    """The journal file of a study's storage, None for an RDB."""
    if study.storage is None:
        return (study.output / DEFAULT_JOURNAL).resolve()
    return Path(study.storage).resolve() if is_journal(study.storage) else None


def hold_output(study: Study, held: contextlib.ExitStack) -> list[str]:
    """Lock the study's output folder and its journal (if elsewhere) for this run, until ``held``
    closes; return the stale files of a killed run that were removed (see :mod:`dse.sweep.lock`)."""
    removed = held.enter_context(output_lock(study.output))
    journal = journal_path(study)
    if journal is not None and journal.parent != study.output.resolve():
        removed += held.enter_context(output_lock(journal.parent, name=f".{journal.name}.dse.lock",
                                                  stale=(f"{journal.name}.lock", f"{journal.name}.lock*.rename"),
                                                  what=str(journal)))
    return removed


def open_storage(study: Study, *, repair: bool = True) -> tuple[Any, CheckpointJournal | None, list[str]]:
    """(Optuna storage, checkpoint backend or None, notes) for the study: a journal file by default.

    ``repair``: make a journal replayable first (:func:`dse.search.journal.repair_journal`;
    only where no other process writes it); the notes say what was dropped."""
    path = journal_path(study)
    if path is not None:
        if study.storage is None:
            study.output.mkdir(parents=True, exist_ok=True)
        notes = repair_journal(path) if repair else []
        backend = CheckpointJournal(str(path))
        try:
            return optuna.storages.JournalStorage(backend), backend, notes
        except Exception as exc:  # noqa: BLE001 - whatever the replay trips on: one line, not a traceback
            raise SpecError(str(path), "", f"the journal cannot be replayed ({exc.__class__.__name__}): move it "
                            "away to start the study afresh", str(exc)[:80]) from None
    url = study.storage
    if url.startswith(("sqlite", "postgresql", "mysql")):
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs = {"connect_args": {"timeout": 60}}
        try:  # processes starting together on a fresh database race to create its tables: retried
            storage = with_retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs=kwargs),
                                 what="opening it", url=url, retry_for_s=OPEN_RETRY_FOR_S)
        except DseError:
            raise
        except Exception as exc:  # noqa: BLE001 - report any driver/connection failure as bad input
            raise SpecError(study.file, "storage", f"cannot open: {exc.__class__.__name__}", url) from None
        if url.startswith("sqlite"):
            _sqlite_wal(storage)
        return storage, None, []
    raise SpecError(study.file, "storage", "unsupported storage URL (sqlite:///, postgresql+psycopg://, or a "
                    ".journal file)", redact(url))


def directions(study: Study) -> list[str]:
    """Optuna's study directions of the study's objectives."""
    return ["maximize" if up else "minimize" for _, up in study.objectives]


def load_stored(study: Study, storage: Any) -> optuna.Study:
    """Create or load the stored study; refuse one whose searched spec differs. On a shared
    database, transient errors (several processes creating the study at once) are retried."""
    if journal_path(study) is None:
        return with_retry(lambda: _load_stored(study, storage), what="creating or loading the study",
                          url=study.storage or "", retry_for_s=OPEN_RETRY_FOR_S)
    return _load_stored(study, storage)


def _load_stored(study: Study, storage: Any) -> optuna.Study:
    try:
        stored = optuna.create_study(storage=storage, study_name=study.name, directions=directions(study),
                                     load_if_exists=True)
    except ValueError as exc:
        raise SpecError(study.file, "objectives", f"stored study differs: {exc}", study.name) from None
    old_hash = stored.user_attrs.get(SPEC_HASH_ATTR)
    if old_hash is None:
        stored.set_user_attr(SPEC_HASH_ATTR, study.spec_hash)
    elif old_hash != study.spec_hash:
        raise SpecError(study.file, "", "the spec changed since this study was started: use a new output folder "
                        "or name", study.output)
    if stored.metric_names is None:  # the dashboard and trials_dataframe show these, not "Objective 0"
        set_metric_names(stored, study)
    if CONSTRAINTS_ATTR not in stored.user_attrs:
        stored.set_user_attr(CONSTRAINTS_ATTR, constraint_names(study))
    return stored


def set_metric_names(work: optuna.Study, study: Study) -> None:
    """Name the Optuna study's objectives after the study's metrics (an API Optuna still calls experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        work.set_metric_names([m for m, _ in study.objectives])


def constraint_names(study: Study) -> list[str]:
    """Names of the study's constraint columns, in the order of each trial's Optuna constraints list."""
    model = dict.fromkeys(MODEL_CONSTRAINTS, 0.0)
    return list(violations({**model, **{c.metric: 0.0 for c in study.constraints}}, study.constraints))
