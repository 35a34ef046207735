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
    # a string is redacted before repr: its end is the URL's end, so a password with spaces or quotes is found
    text = repr(redact(value)) if isinstance(value, str) else redact(repr(value))
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
_PARAM_PASSWORD = re.compile(r"(?i)([?&;]\s*(?:password|passwd|pwd)\s*=)")
_MASK = "***"


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``: storage URLs must never
    be printed or stored with their secret.

    Parsed, not pattern-matched on the password's characters: after each ``scheme://``, the
    user information ends at the last ``@`` before the next URL (or the end of ``text``), so a
    password may hold any character (spaces, quotes, ``@``, ``:``). A ``password=`` (``passwd``,
    ``pwd``) query parameter is masked up to the next ``&`` or ``;``. Where ``text`` goes on
    after a URL, more than the password may be masked, never less.
    """
    text = _redact_userinfo(text)
    out, pos = [], 0
    for m in _PARAM_PASSWORD.finditer(text):
        if m.start() < pos:
            continue
        end = len(text)
        for stop in "&;":
            i = text.find(stop, m.end())
            end = min(end, i) if i >= 0 else end
        out.append(text[pos:m.end()] + _MASK)
        pos = end
    return "".join(out) + text[pos:]


def _redact_userinfo(text: str) -> str:
    starts = [m for m in _SCHEME.finditer(text)]
    if not starts:
        return text
    out, pos = [], 0
    for i, m in enumerate(starts):
        stop = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        segment = text[m.end():stop]
        at, colon = segment.rfind("@"), segment.find(":")
        if 0 <= colon < at and "/" not in segment[:colon] and not segment[:colon].isspace():
            out.append(text[pos:m.end()] + segment[:colon + 1] + _MASK)
            pos = m.end() + at
    return "".join(out) + text[pos:]


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
