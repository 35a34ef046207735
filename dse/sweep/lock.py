"""One run at a time per output folder: an advisory lock, and the clean-up of what a killed
run left behind.

The lock is ``flock`` on ``<folder>/.dse.lock`` (the kernel drops it when the process dies,
however it dies), so a second run into the same folder is refused at once with one line
instead of interleaving its trials with the first's. Holding it, nothing else writes the
folder: temporary files of an atomic write and Optuna's journal lock files found there are
stale (a killed run's), and are removed.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dse.spec.errors import DseError

LOCK_NAME = ".dse.lock"
# temporary files of dse.results.io.atomic_write; Optuna journal file locks (symlink and renames)
STALE_PATTERNS = (".*.parquet.*.tmp", ".*.png.*.tmp", ".*.csv.*.tmp", "*.journal.lock", "*.journal.lock*.rename")


@contextmanager
def output_lock(folder: Path, *, name: str = LOCK_NAME, stale: tuple[str, ...] = STALE_PATTERNS,
                what: str = "") -> Iterator[list[str]]:
    """Hold ``folder`` (created if missing) through the lock file ``name``; yields the names of the
    stale files (glob ``stale`` patterns) removed. Raises :class:`DseError` (one line, naming
    ``what``, by default the folder) when another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DseError(f"{what or folder} is in use by another dse run (pid {holder}): wait for it to finish, "
                       "or give another --output" + (" or --storage" if what else "")) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield remove_stale(folder, stale)
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with a waiting run)


def remove_stale(folder: Path, patterns: tuple[str, ...] = STALE_PATTERNS) -> list[str]:
    """Remove the stale temporary and journal-lock files in ``folder`` (call only while holding it)."""
    removed = []
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path.name)
    return removed
