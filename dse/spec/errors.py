"""The project's own error types: every bad input surfaces as one of these."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence


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
        super().__init__(f"{where}{key}: {rule} (got {shown})".translate(_LINE_BREAKS))

    def __reduce__(self) -> tuple:  # picklable across worker processes
        return (type(self), (self.file, self.key_path, self.rule, self.value))


_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def _short_repr(value: object, limit: int = 80) -> str:
    text = redact(repr(value).replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]*):[^\s'\"]*@")
_PARAM_PASSWORD = re.compile(r"(?i)\b((?:password|passwd|pwd)=)[^&;\s'\"]*")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it (``user:PASSWORD@host``, ``password=``
    parameters) replaced by ``***``: storage URLs must never be printed with their secret."""
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close valid name exists, else ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_keys(file: str, path: str, mapping: dict, allowed: Sequence[str]) -> None:
    """SpecError naming the first key of ``mapping`` not in ``allowed``, with a did-you-mean."""
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise SpecError(file, where, f"unknown key{did_you_mean(str(key), allowed)}", mapping[key])
