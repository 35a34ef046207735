"""Ctrl-C at a known point: the first SIGINT asks the loop to stop after the batch in flight.

A ``KeyboardInterrupt`` raised wherever the signal lands may cut a journal append or its
lock release in half (Optuna's lock then raises ``FileNotFoundError`` from its clean-up).
Instead the first SIGINT only sets a flag; the search loop checks it between batches,
saves what finished and exits as interrupted. A second SIGINT raises ``KeyboardInterrupt``
(the user insists); a stale lock it may leave is removed by the next run.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class DeferredInterrupt:
    """Context manager: SIGINT sets :attr:`requested` (``escalate``: a second one raises).

    Outside the main thread (where Python cannot install handlers) it does nothing and
    ``KeyboardInterrupt`` behaves as usual.
    """

    def __init__(self, *, escalate: bool = True) -> None:
        self.requested = False
        self.escalate = escalate
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and self.escalate:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
