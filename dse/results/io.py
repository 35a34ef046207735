"""Parquet and CSV I/O: atomic writes, units and provenance in the Arrow metadata."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dse.spec.errors import SpecError
from dse.spec.metrics import METRIC_UNITS
from dse.spec.registry import INPUT_FIELDS


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_parquet(df: pd.DataFrame, path: str | Path, *, units: Mapping[str, str] | None = None,
                  metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``df`` atomically; ``units[col]`` goes to the field metadata, ``metadata`` (JSON) to the schema's."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    units = units or {}
    fields = [f.with_metadata({b"unit": units[f.name].encode()}) if f.name in units else f for f in table.schema]
    schema_meta = dict(table.schema.metadata or {})
    for key, value in (metadata or {}).items():
        schema_meta[f"dse.{key}".encode()] = json.dumps(value, default=str).encode()
    table = table.cast(pa.schema(fields, metadata=schema_meta))
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_units(path: str | Path) -> dict[str, str]:
    """Column -> unit of a Parquet file, from the field metadata :func:`write_parquet` writes."""
    return {f.name: f.metadata[b"unit"].decode() for f in pq.read_schema(path) if f.metadata and b"unit" in f.metadata}


def display_unit(name: str, units: Mapping[str, str]) -> str:
    """The unit shown for a column: ``units``' (as :func:`read_units` gives), else the input registry's
    or the metric table's; blank for dimensionless (stored as ``1``) or unknown."""
    found = units.get(name) or (INPUT_FIELDS[name].unit if name in INPUT_FIELDS else METRIC_UNITS.get(name, ""))
    return "" if found == "1" else found


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV results table (SpecError if missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), "", "file not found", str(path))
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise SpecError(str(path), "", f"cannot read table: {exc.__class__.__name__}", str(path)) from None


def read_front(path: str | Path) -> pd.DataFrame:
    """A study's Pareto front: ``front.parquet`` in a results folder, or that file itself."""
    path = Path(path)
    return read_table(path / "front.parquet" if path.is_dir() else path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``dse.*`` schema metadata of a Parquet file, JSON-decoded, without the prefix."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode()[4:]: json.loads(v) for k, v in meta.items() if k.startswith(b"dse.")}

