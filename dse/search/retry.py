"""Riding out a shared database's bad moments: retry with back-off, for a bounded time.

A PostgreSQL (or MySQL, SQLite) storage shared by many workers fails transiently: several
processes creating its tables at once on a fresh database collide (``IntegrityError``), a
server restart drops every connection (``OperationalError``, which Optuna re-raises as
``StorageInternalError``). A worker retries the failed step with exponential back-off
(0.2 s doubling to 5 s) and reconnects (``pool_pre_ping``); after :data:`RETRY_FOR_S`
seconds of failures in a row it stops with one line. What was told before is saved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from optuna.exceptions import StorageInternalError

from dse.spec.errors import DseError, redact

RETRY_FOR_S = 120.0  # a server restart takes seconds; longer than this is an outage
OPEN_RETRY_FOR_S = 30.0  # opening: a wrong host or password should not keep the user waiting long
_FIRST_DELAY_S, _MAX_DELAY_S = 0.2, 5.0
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying: Optuna's wrapper of one, or one from the driver (through
    SQLAlchemy's ``DBAPIError``); not a malformed URL or a missing driver."""
    if isinstance(exc, StorageInternalError):
        return True
    names = {(c.__module__, c.__name__) for c in type(exc).__mro__}
    return ("sqlalchemy.exc", "DBAPIError") in names or any(m.startswith(("psycopg", "pymysql", "sqlite3")) and
                                                             n in ("OperationalError", "InterfaceError")
                                                             for m, n in names)


def with_retry(step: Callable[[], T], *, what: str, url: str, retry_for_s: float = RETRY_FOR_S,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """``step()``, retried on transient database errors for up to ``retry_for_s`` seconds, then
    a :class:`DseError` naming the storage (password redacted), the step and the last error."""
    delay, first_failure = _FIRST_DELAY_S, None
    while True:
        try:
            return step()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            if now - first_failure >= retry_for_s:
                cause = str(exc.__cause__ or exc).strip().splitlines()
                raise DseError(f"storage {redact(url)}: {what} kept failing for {retry_for_s:.0f} s "
                               f"({type(exc.__cause__ or exc).__name__}: {redact(cause[0] if cause else '')[:120]}); "
                               "the finished trials are saved: run the same command again to resume") from None
            sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)
