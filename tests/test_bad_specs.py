"""Hostile and malformed input (tests/bad_specs): one line ``error: FILE: KEY: RULE (got VALUE)``,
exit code 2, no traceback, nothing written.

Each corpus file is a study, space, preset or card (its name says which) whose header says
what the error must contain::

    # expect: <substring of the rule>
    # key: <key path>
    # file: <the file the error names, when not this one>   (optional)
    # cli: no-output      (optional: run without --output, so the spec's own output is used)
    # xfail: <reason>     (optional: a known gap, strict so that a fix is noticed)

A study runs with ``dse run``; a space through a one-line study naming it; a preset or a
card with ``dse eval``. Every run has an empty working directory and an output folder
(or file) in ``tmp_path``; both must stay empty.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dse.cli.main import main
from dse.loading import load_study
from dse.spec.errors import redact

CORPUS = Path(__file__).parent / "bad_specs"
FILES = sorted(CORPUS.glob("*.yaml"))
KINDS = ("study", "space", "preset", "card")
ABSOLUTE_OUTPUT = Path("/tmp/dse-bad-spec-absolute-output")  # study_output_absolute.yaml


def header(path: Path) -> dict[str, str]:
    """The ``# name: value`` lines at the top of a corpus file."""
    out = {}
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.startswith("# "):
            break
        name, _, value = line[2:].partition(": ")
        out[name] = value
    return out


def argv(path: Path, head: dict[str, str], tmp_path: Path) -> list[str]:
    """The ``dse`` command line that loads the corpus file ``path``."""
    out = tmp_path / "out"
    kind = path.name.split("_", 1)[0]
    if kind == "study":
        return ["run", str(path), "--quiet"] + ([] if head.get("cli") == "no-output" else ["--output", str(out)])
    if kind == "space":
        study = tmp_path / "wrapper.yaml"
        study.write_text(f"space: {json.dumps(str(path))}\n")
        return ["run", str(study), "--quiet", "--output", str(out)]
    table = ["--format", "csv", "--out", str(tmp_path / "designs.csv")]
    if kind == "preset":
        return ["eval", "--platform", str(path), "--model", "llama-2-7b", *table]
    return ["eval", "--platform", "h100-sxm", "--model", str(path), *table]


def check(code: int, stdout: str, stderr: str, path: Path, head: dict[str, str]) -> None:
    """The contract of DESIGN.md 3.4 for one failed run."""
    assert code == 2, stderr
    assert "Traceback" not in stdout + stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: "), line
    assert f"{head.get('file', path.name)}: {head['key']}" in line, line
    assert head["expect"] in line, line
    assert re.search(r" \(got .*\)$", line), line


def _param(path: Path) -> object:
    reason = header(path).get("xfail")
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(path, id=path.stem, marks=marks)


def test_corpus_covers_every_kind():
    assert len(FILES) >= 40
    for path in FILES:
        head = header(path)
        assert path.name.split("_", 1)[0] in KINDS, path.name
        assert head.get("expect") and head.get("key"), f"{path.name}: needs '# expect:' and '# key:' lines"
        assert next(iter(head)) == "expect", f"{path.name}: '# expect:' must be the first line"


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_bad_spec_is_one_line_error(path, tmp_path, monkeypatch, capsys):
    head = header(path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code = main(argv(path, head, tmp_path))
    captured = capsys.readouterr()
    check(code, captured.out, captured.err, path, head)
    assert not (tmp_path / "out").exists() and not (tmp_path / "designs.csv").exists()
    assert not any(cwd.iterdir()), sorted(p.name for p in cwd.iterdir())
    assert not ABSOLUTE_OUTPUT.exists()


@pytest.mark.parametrize("name", ["study_unknown_key.yaml", "space_yaml_deep_nesting.yaml"])
def test_bad_spec_in_a_fresh_process(name, tmp_path):
    path = CORPUS / name
    head = header(path)
    proc = subprocess.run([sys.executable, "-m", "dse", *argv(path, head, tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    check(proc.returncode, proc.stdout, proc.stderr, path, head)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["wrapper.yaml"] if name.startswith("space") else [])


PASSWORD_URL = "postgresql+psycopg://user:secret@127.0.0.1:1/db"


@pytest.mark.parametrize("spec, extra", [
    (f"storage: {PASSWORD_URL}", []),  # valid URL, no server: fails when opened
    (f"storag: {PASSWORD_URL}", []),  # a typo: the unknown key's value is shown
    ("", ["--storage", "redis://user:secret@127.0.0.1:1/0"]),  # unsupported scheme
    ("", ["--storage", "postgresql://127.0.0.1:1/db?user=u&password=secret"]),
    ("", ["--storage", "postgresql://user:my secret@127.0.0.1:1/db"]),  # issue 9.13: any character
    ("", ["--storage", "postgresql://user:it's secret@127.0.0.1:1/db"]),
    ("", ["--storage", 'postgresql://user:"secret"@127.0.0.1:1/db']),
    ("", ["--storage", "redis://user:a 'b\" secret@127.0.0.1:1/0"]),
    ("storage: 'postgresql://user:my \"secret\"@127.0.0.1:1/db'", []),
    ("storage: \"postgresql://h:1/db?password=my 'secret\"", []),
])
def test_storage_password_is_never_printed(spec, extra, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "pg.yaml"
    study.write_text(f"space: quickstart\nmodel: llama-2-7b\nbudget: {{n_trials: 4}}\n{spec}\n")
    code = main(["run", str(study), "--quiet", "--output", str(tmp_path / "out"), *extra])
    out, err = capfd.readouterr()
    assert code == 2, err
    assert "secret" not in out + err
    assert "***" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url", [PASSWORD_URL, "postgresql://user:my 'secret\"@127.0.0.1:1/db",
                                 "postgresql://127.0.0.1:1/db?password=my secret&user=u"])
def test_storage_password_stays_out_of_the_result_metadata(url):
    study = load_study({"space": "quickstart", "model": "llama-2-7b", "storage": url})
    assert study.storage == url  # what the search opens
    assert "secret" not in json.dumps(study.raw)  # what the result files record


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://user:secret@host:5432/db", "postgresql+psycopg://user:***@host:5432/db"),
    ("mysql://:secret@host/db", "mysql://:***@host/db"),
    ("postgresql://user:se@cret@host/db", "postgresql://user:***@host/db"),
    ("postgresql://host/db?user=u&password=secret&x=1", "postgresql://host/db?user=u&password=***&x=1"),
    ("postgresql://user:pa ss@host/db", "postgresql://user:***@host/db"),
    ("postgresql://user:it's@host/db", "postgresql://user:***@host/db"),
    ('postgresql://user:say "x"@host/db', "postgresql://user:***@host/db"),
    ("""postgresql://user:a 'b" c:d@e@host:5432/db""", "postgresql://user:***@host:5432/db"),
    ("postgresql://host/db?user=u&password=a b'c\"d&x=1", "postgresql://host/db?user=u&password=***&x=1"),
    ("see postgresql://u:a b@h/db and mysql://v:c d@h2/x", "see postgresql://u:***@h/db and mysql://v:***@h2/x"),
    ("postgresql://user@host:5432/db", "postgresql://user@host:5432/db"),
    ("sqlite:///results/s.db", "sqlite:///results/s.db"),
    ("results/s/optuna.journal", "results/s/optuna.journal"),
])
def test_redact(url, shown):
    assert redact(url) == shown


def test_output_inside_results_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"space": "quickstart", "model": "llama-2-7b"}
    assert load_study({**spec, "name": "a"}).output == Path("results/a")
    assert load_study({**spec, "output": "results/edge/run-1"}).output == Path("results/edge/run-1")
    assert load_study({**spec, "output": "/elsewhere"}, output="/elsewhere").output == Path("/elsewhere")
    assert load_study({**spec, "storage": "results/shared.journal"}).storage == "results/shared.journal"
    assert load_study(spec, storage="/var/tmp/s.journal").storage == "/var/tmp/s.journal"  # the command line may
    assert not (tmp_path / "results").exists()  # loading writes nothing
