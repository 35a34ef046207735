"""The parser: every command documented (description, examples, help with defaults and units),
knob flags derived from the registry, `dse list`, and a light `dse --help`."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from dse.cli import common
from dse.cli import main as cli_main
from dse.cli.main import COMMANDS, build_parser, main
from dse.spec import registry
from dse.spec.metrics import METRIC_TABLE
from dse.spec.registry import CARD_FIELDS, HARDWARE_FIELDS, KNOBS, Field

HEAVY = ("pandas", "optuna", "scipy", "matplotlib", "torch", "pyarrow")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return dict(action.choices)


def test_every_command_has_a_description_an_example_and_documented_flags():
    subs = _subparsers(build_parser())
    assert set(subs) == {c.name for c in COMMANDS}
    for name, p in subs.items():
        assert p.description and len(p.description) > 40, name
        assert p.epilog and p.epilog.startswith("example") and f"dse {name}" in p.epilog, name
        help_text = p.format_help()
        for action in p._actions:  # noqa: SLF001
            if isinstance(action, argparse._HelpAction):  # noqa: SLF001
                continue
            assert action.help, (name, action.dest)
            shown = p._get_formatter()._expand_help(action)  # noqa: SLF001 - the text --help prints for it
            documented = ("default" in shown or "required" in shown or action.nargs == 0
                          or not action.option_strings or action.dest in ("survey", "markdown"))
            assert documented, (name, action.dest, shown)
        assert "usage: dse " + name in help_text


def test_numeric_flags_state_their_unit():
    """Every flag taking a number names its unit in the help (s, bit, token, N = a count, ...)."""
    for name, p in _subparsers(build_parser()).items():
        for action in p._actions:  # noqa: SLF001
            numeric = action.type in (int, float, common.positive_int, common.positive_float) or \
                getattr(action.type, "__qualname__", "").startswith("_number")
            if not numeric:
                continue
            field = registry.KNOB_BY_NAME.get(action.dest) if name in ("eval", "explain") else None
            if field is not None:
                assert action.help == field.cli_help()
                continue
            assert any(u in action.help for u in (" s)", " s ", "seconds", "tokens", "sequences", "positions",
                                                  "repeats", "jobs", "processes", "designs", "rows", "sizes",
                                                  "index", "GPUs")), (name, action.dest, action.help)


def test_knob_flags_come_from_the_registry():
    p = _subparsers(build_parser())["eval"]
    flags = {a.dest: a for a in p._actions if a.option_strings}  # noqa: SLF001
    for f in KNOBS:
        action = flags[f.name]
        assert common.flag(f.name) in action.option_strings
        assert action.nargs == "+" and action.help == f.cli_help()
        assert action.default == (None if f.default is None else [f.default])
    args = p.parse_args(["--platform", "h100-sxm", "--model", "llama-2-7b", "--batch", "1", "8", "--w-bits", "4.5"])
    assert args.batch == [1, 8] and all(isinstance(b, int) for b in args.batch)  # int knobs parse as ints
    assert args.w_bits == [4.5]


def test_a_new_registry_knob_gets_a_flag_and_a_list_row(monkeypatch, capsys):
    """Other engineers append knobs: the CLI picks them up without an edit."""
    new = Field("tp_degree", "1", 1.0, 1.0, 64.0, "int", "mapping", "tensor-parallel devices")
    monkeypatch.setattr(common, "KNOBS", (*KNOBS, new))
    p = _subparsers(build_parser())["explain"]
    args = p.parse_args(["--platform", "h100-sxm", "--model", "llama-2-7b", "--tp-degree", "2", "4"])
    assert args.tp_degree == [2, 4]
    text = " ".join(p.format_help().split())
    assert "--tp-degree N [N ...] tensor-parallel devices; 1..64 (default 1)" in text


@pytest.mark.parametrize("what, fields", [("knobs", KNOBS), ("hardware", HARDWARE_FIELDS), ("card", CARD_FIELDS)])
def test_list_registry(what, fields, capsys):
    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "unit", "default"]
    assert [line.split()[0] for line in lines[1:]] == [f.name for f in fields]
    for f, line in zip(fields, lines[1:], strict=True):
        assert f.doc in line and ("required" if f.default is None else f"{f.default:g}") in line


def test_list_metrics_models_platforms_samplers(capsys):
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr().out
    assert all(m.name in out for m in METRIC_TABLE)
    assert main(["list", "models"]) == 0
    assert "llama-2-7b" in capsys.readouterr().out
    assert main(["list", "platforms"]) == 0
    assert "h100-sxm" in capsys.readouterr().out
    assert main(["list", "samplers"]) == 0
    assert "nsga2" in capsys.readouterr().out.split()
    assert main(["list", "studies"]) == 0
    assert "quickstart" in capsys.readouterr().out.split()


def test_list_markdown(capsys):
    assert main(["list", "knobs", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| name | unit |") and out.count("\n") == len(KNOBS) + 2
    assert main(["list", "models", "--markdown"]) == 2
    assert capsys.readouterr().err.startswith("error: --markdown: models: only for")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["eval", "--help"], ["run", "--help"],
                                  ["calibrate", "--help"], ["list", "knobs"]])
def test_help_and_version_import_nothing_heavy(argv):
    """`dse --help` stays fast (under 0.5 s, measured in benchmarks/) because it imports no heavy package."""
    code = ("import sys\nfrom dse.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []", out


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--platform", "h100-sxm", "--model", "llama-2-7b", "--batch", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: dse eval: argument --batch: 'x' is not a number"), err
    with pytest.raises(SystemExit):
        main(["nope"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: dse: argument COMMAND: invalid choice"), err


def test_commands_are_dataclasses_with_callables():
    for cmd in cli_main.COMMANDS:
        assert dataclasses.is_dataclass(cmd) and callable(cmd.run) and callable(cmd.add_arguments)


def _examples():
    for cmd in COMMANDS:
        for line in cmd.examples.splitlines():
            if line.startswith("  dse "):
                yield cmd.name, line.split("#")[0].split()[1:]


@pytest.mark.parametrize("name, argv", list(_examples()))
def test_every_example_parses_and_names_real_presets(name, argv):
    from dse.spec.presets import builtin_names

    assert argv[0] == name
    build_parser().parse_args(argv)
    for flag_, kind in (("--platform", "platforms"), ("--model", "models")):
        if flag_ in argv:
            i = argv.index(flag_) + 1
            while i < len(argv) and not argv[i].startswith("--"):
                assert argv[i] in builtin_names(kind) or argv[i].endswith(".yaml"), argv[i]
                i += 1
