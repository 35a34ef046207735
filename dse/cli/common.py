"""What every command shares: the parser class, knob flags from the registry, output-path
checks and table printing.

Nothing heavy is imported here (no pandas, numpy, Optuna, SciPy, matplotlib): ``dse --help``
builds every parser from this module and the registry alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from dse.spec.errors import DseError, SpecError, did_you_mean
from dse.spec.registry import HARDWARE_FIELD_NAMES, KNOBS, Field

EXIT_BAD_INPUT = 2
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux: longer names cannot be opened anyway
_METAVARS = {"int": "N", "float": "X", "code": "CODE", "flag": "0|1"}


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line ``error: ...`` (exit 2), like every
    other bad input, and whose help keeps the examples' line breaks and shows defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see '{self.prog} --help')".replace("\n", " "), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps description/epilog line breaks; appends ``(default: X)`` to a flag's help unless the
    help already states its default or the flag has none (required, switches)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is argparse.SUPPRESS or isinstance(default, bool)
                or action.required or not action.option_strings):
            return text
        shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) \
            if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


def flag(name: str) -> str:
    """``w_bits`` -> ``--w-bits``."""
    return "--" + name.replace("_", "-")


def _number(field: Field):  # noqa: ANN202 - an argparse type callable
    """Parse one value of ``field``: a finite number; int/code/flag kinds must be whole numbers; a
    categorical field also takes its choice names (``--quant-method awq``, ``--workload sharegpt-vllm-paper``)."""

    def parse(text: str) -> float | int:
        code = field.code_of(text) if field.choices else None
        if code is not None:
            return int(code)
        try:
            value = float(text)
        except ValueError:
            if field.choices:
                raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(field.choices)} (or their "
                                                 f"codes){did_you_mean(text, field.choices)}") from None
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if field.kind != "float":
            if value != int(value):
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
            return int(value)
        return value

    return parse


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--<knob>`` flag per registry knob (``nargs='+'``: several values give a grid), its help
    the registry's (meaning, unit, range, default). New registry entries appear automatically."""
    group = parser.add_argument_group("design knobs (several values: every combination)")
    for f in KNOBS:
        default = None if f.default is None else [f.default if f.kind == "float" else int(f.default)]
        group.add_argument(flag(f.name), dest=f.name, type=_number(f), nargs="+", default=default,
                           metavar=_METAVARS[f.kind], help=f.cli_help())
    group.add_argument("--set", metavar="FIELD=VALUE", nargs="+", default=[],
                       help="override hardware fields of the preset, SI units (`dse list hardware` lists them), "
                            "e.g. mem_bw_bytes_per_s=4e12 (default: the preset's values)")


def knob_values(args: argparse.Namespace) -> dict[str, list]:
    """Knob name -> the values given on the command line (or the default), in registry order; a knob
    without a registry default that is not given is left out (the model's own source supplies it)."""
    return {f.name: list(getattr(args, f.name)) for f in KNOBS if getattr(args, f.name, None) is not None}


def overrides(items: Sequence[str]) -> dict[str, float]:
    """``--set FIELD=VALUE`` items as hardware-field overrides (names checked against the registry)."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise SpecError("--set", item, "must be FIELD=VALUE", item)
        if key not in HARDWARE_FIELD_NAMES:
            raise SpecError("--set", key, f"unknown hardware field{did_you_mean(key, HARDWARE_FIELD_NAMES)}", key)
        try:
            out[key] = float(value)
        except ValueError:
            raise SpecError("--set", key, "must be a number", value) from None
    return out


# ---- output paths: checked before any work, so that a bad one leaves nothing behind ------------

def _path(text: str, option: str) -> Path:
    if not text or "\0" in text:
        raise SpecError(option, "path", "must be a non-empty path without NUL characters", text)
    if len(text) > MAX_PATH_CHARS or any(len(part) > 255 for part in Path(text).parts):
        raise SpecError(option, "path", "too long (a name has at most 255 characters, a path 4096)",
                        f"{len(text)} characters")
    return Path(text)


def _writable_folder(folder: Path, option: str, value: str) -> None:
    """Probe by creating (and at once removing) a file: permission bits alone say nothing for root
    or on a read-only mount."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".dse-probe-", dir=folder)
    except OSError as exc:
        raise SpecError(option, str(folder), f"folder is not writable ({exc.strerror})", value) from None
    os.close(fd)
    os.unlink(probe)


def output_file(text: str, option: str = "--out") -> Path:
    """A file the command will write: not a folder, in an existing writable folder (no folder is
    created for it, so that a typo cannot make one at the file-system root)."""
    path = _path(text, option)
    if path.is_dir():
        raise SpecError(option, str(path), "is a folder: give a file name", text)
    parent = path.parent
    if not parent.is_dir():
        rule = "is not a folder" if parent.exists() else "folder does not exist (create it first)"
        raise SpecError(option, str(parent), rule, text)
    _writable_folder(parent, option, text)
    if path.exists() and not os.access(path, os.W_OK):
        raise SpecError(option, str(path), "file is not writable", text)
    return path


def output_folder(text: str, option: str = "--output") -> Path:
    """A folder the command will create or write into: not a file; the nearest existing
    ancestor must be a writable folder."""
    path = _path(text, option)
    if path.exists() and not path.is_dir():
        raise SpecError(option, str(path), "is a file, not a folder", text)
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise SpecError(option, str(ancestor), "is a file, not a folder", text)
    _writable_folder(ancestor if ancestor.exists() else Path("."), option, text)
    return path


def storage_url(text: str | None, option: str = "--storage") -> str | None:
    """A ``--storage`` value: a URL (``scheme://...``) or a journal file path, never a folder."""
    if text is None:
        return None
    if "://" in text:
        if "\0" in text:
            raise SpecError(option, "url", "must not contain NUL characters", text)
        return text
    output_file(text, option)
    return text


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (got {text})")
    return value


def say(text: str = "") -> None:
    """Print a line of results to stdout."""
    print(text)


def note(text: str) -> None:
    """Print a status or warning line to stderr (stdout stays data only)."""
    print(text, file=sys.stderr)


def table_text(df: Any, **kwargs: Any) -> str:
    """A DataFrame as aligned text, floats with 4 significant digits."""
    return df.to_string(index=False, float_format=lambda x: f"{x:.4g}", **kwargs)


def fail(message: str) -> NoReturn:
    """Stop the command with a one-line error (exit 2)."""
    raise DseError(message)
