"""The project's own error types: every bad input surfaces as one of these."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DseError(Exception):
    """Base class of every error llm-dse raises on purpose."""


class SpecError(DseError, ValueError):
    """A spec, card, preset or design batch is invalid.

    The message is one line: ``FILE: KEY.PATH: RULE (got VALUE)``.
    """

    def __init__(self, file: str, key_path: str, rule: str, value: object = None) -> None:
        self.file = file
        self.key_path = key_path
        self.rule = rule
        self.value = value
        shown = _short_repr(value)
        where = f"{file}: " if file else ""
        key = key_path or "<root>"
        super().__init__(f"{where}{key}: {rule} (got {shown})")


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close valid name exists, else ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
