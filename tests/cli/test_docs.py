"""The registry tables in docs/ARCHITECTURE.md are generated, and kept up to date by this test."""

from __future__ import annotations

from pathlib import Path

from dse.cli import docs, listing
from dse.spec.registry import KNOBS, Field

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"


def test_architecture_tables_are_up_to_date():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert docs.marked(text) == ["knobs", "hardware", "card", "metrics"]
    assert docs.update(text) == text, "run: python -m dse.cli.docs docs/ARCHITECTURE.md"
    for f in KNOBS:
        assert f"| `{f.name}` |" in text


def test_update_rewrites_only_between_markers(monkeypatch):
    stale = ("intro\n<!-- knobs:start -->\nold table\n<!-- knobs:end -->\n"
             "<!-- other:start -->\nkept\n<!-- other:end -->\n")
    new = docs.update(stale)
    assert new.startswith("intro\n<!-- knobs:start -->\n| name | unit |") and "old table" not in new
    assert new.endswith("<!-- knobs:end -->\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    assert docs.update(new) == new
    # a knob appended to the registry makes the page stale
    extra = Field("tp_degree", "1", 1.0, 1.0, 64.0, "int", "mapping", "tensor-parallel devices")
    monkeypatch.setitem(listing.REGISTRY, "knobs", (*KNOBS, extra))
    assert "| `tp_degree` | 1 | 1 | [1, 64] | int | mapping | tensor-parallel devices |" in docs.update(new)


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    path = tmp_path / "doc.md"
    path.write_text("<!-- metrics:start -->\n<!-- metrics:end -->\n")
    assert docs.main([str(path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert docs.main([str(path)]) == 0
    assert "| `ttft_s` | s | lower |" in path.read_text()
    assert docs.main([str(path), "--check"]) == 0
