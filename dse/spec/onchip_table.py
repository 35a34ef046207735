"""The on-chip energy table (``spaces/onchip_energy.yaml``) as arrays.

:func:`load_onchip_table` reads the YAML once and returns the flat dict that
:mod:`dse.model.onchip_energy` takes: per-node columns over ``node_nm`` (ascending), the memory
interface energy in :data:`MEMORY_TECHNOLOGIES` order, the architecture columns in
:data:`ARCHITECTURES` order, the default architecture per platform class, and per preset its
architecture code, die areas on the path and die-to-die energy
(:mod:`dse.validation.onchip_presets` applies the rule to the presets).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from dse.spec.errors import SpecError, check_keys
from dse.spec.presets import as_number, data_dir, read_yaml
from dse.spec.registry import MEMORY_TECHNOLOGIES, PLATFORM_CLASSES

#: Load-path architectures (rows of ``architectures`` in spaces/onchip_energy.yaml), in code order.
ARCHITECTURES: tuple[str, ...] = ("gpu", "soc", "cpu", "asic", "fpga")
_TOP = ("reference_node_nm", "nodes", "memory_interface_pj_per_bit", "d2d_pj_per_bit", "architectures",
        "class_architecture", "presets", "sources")
_NODE_COLUMNS = ("logic_pj", "wire_pj_per_bit_mm")
_ARCH_COLUMNS = ("path_factor", "route_factor", "load_pj_per_bit")


def default_path() -> Path:
    """The built-in table."""
    return data_dir("spaces") / "onchip_energy.yaml"


def load_onchip_table(path: str | Path | None = None) -> dict[str, Any]:
    """The on-chip energy table as a flat dict of floats and arrays (see the module docstring)."""
    file = Path(path) if path is not None else default_path()
    return dict(_load(str(file), file.stat().st_mtime))


def _mapping(file: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict) or not value:
        raise SpecError(file, key, "must be a non-empty mapping", value)
    return value


@cache
def _load(file: str, _mtime: float) -> dict[str, Any]:
    raw = _mapping(file, "", read_yaml(Path(file)))
    check_keys(file, "", raw, _TOP)
    nodes = _mapping(file, "nodes", raw.get("nodes"))
    node_nm = sorted(as_number(file, f"nodes.{n}", n, minimum=1.0) for n in nodes)
    by_nm = {float(n): _mapping(file, f"nodes.{n}", v) for n, v in nodes.items()}
    out: dict[str, Any] = {"node_nm": np.array(node_nm), "reference_node_nm": as_number(
        file, "reference_node_nm", raw.get("reference_node_nm"), minimum=1.0)}
    for col in _NODE_COLUMNS:
        out[col] = np.array([as_number(file, f"nodes.{n:g}.{col}", by_nm[n].get(col), minimum=1e-12)
                             for n in node_nm])
    ref = np.log(out["reference_node_nm"])
    out["reference_logic_pj"] = float(np.exp(np.interp(ref, np.log(out["node_nm"]), np.log(out["logic_pj"]))))
    mem = _mapping(file, "memory_interface_pj_per_bit", raw.get("memory_interface_pj_per_bit"))
    if tuple(mem) != MEMORY_TECHNOLOGIES:
        raise SpecError(file, "memory_interface_pj_per_bit", "rows must be the registry's memory technologies "
                        "in order", list(mem))
    out["mem_interface_pj_per_bit"] = np.array([as_number(file, f"memory_interface_pj_per_bit.{m}", mem[m])
                                                for m in MEMORY_TECHNOLOGIES])
    d2d = _mapping(file, "d2d_pj_per_bit", raw.get("d2d_pj_per_bit"))
    out["d2d_pj_per_bit"] = {k: as_number(file, f"d2d_pj_per_bit.{k}", v) for k, v in d2d.items()}
    archs = _mapping(file, "architectures", raw.get("architectures"))
    if tuple(archs) != ARCHITECTURES:
        raise SpecError(file, "architectures", f"rows must be {list(ARCHITECTURES)} in order", list(archs))
    for col in _ARCH_COLUMNS:
        out[col] = np.array([as_number(file, f"architectures.{a}.{col}", _mapping(
            file, f"architectures.{a}", archs[a]).get(col)) for a in ARCHITECTURES])
    classes = _mapping(file, "class_architecture", raw.get("class_architecture"))
    check_keys(file, "class_architecture", classes, PLATFORM_CLASSES)
    out["class_arch_code"] = np.array([_arch_code(file, f"class_architecture.{c}", classes.get(c))
                                       for c in PLATFORM_CLASSES], dtype=np.int64)
    out["presets"] = {name: _preset(file, name, entry, out["d2d_pj_per_bit"])
                      for name, entry in _mapping(file, "presets", raw.get("presets")).items()}
    out["sources"] = _mapping(file, "sources", raw.get("sources"))
    _check_sources(file, raw)
    return out


def _arch_code(file: str, key: str, name: Any) -> int:
    if name not in ARCHITECTURES:
        raise SpecError(file, key, f"must be one of {list(ARCHITECTURES)}", name)
    return ARCHITECTURES.index(name)


def _preset(file: str, name: str, entry: Any, d2d: dict[str, float]) -> dict[str, Any]:
    entry = _mapping(file, f"presets.{name}", entry)
    check_keys(file, f"presets.{name}", entry, ("arch", "path_mm2", "crossings"))
    areas = entry.get("path_mm2")
    if not isinstance(areas, list) or not areas:
        raise SpecError(file, f"presets.{name}.path_mm2", "must be a non-empty list of die areas (mm2)", areas)
    crossings = entry.get("crossings") or {}
    check_keys(file, f"presets.{name}.crossings", crossings, tuple(d2d))
    return {"arch_code": _arch_code(file, f"presets.{name}.arch", entry.get("arch")),
            "path_mm2": [as_number(file, f"presets.{name}.path_mm2", a, minimum=1e-6) for a in areas],
            "crossings": {k: as_number(file, f"presets.{name}.crossings.{k}", n) for k, n in crossings.items()},
            "d2d_pj_per_bit": sum(d2d[k] * as_number(file, f"presets.{name}.crossings.{k}", n)
                                  for k, n in crossings.items())}


def _check_sources(file: str, raw: dict) -> None:
    """Every number of the table has a source string at the same key path (sections by row or column)."""
    src = raw["sources"]

    def need(path: str) -> None:
        node: Any = src
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                raise SpecError(file, f"sources.{path}", "missing source", None)
            node = node[part]
        if isinstance(node, str) and not node.strip():
            raise SpecError(file, f"sources.{path}", "empty source", node)

    need("reference_node_nm")
    for col in _NODE_COLUMNS:
        need(f"nodes.{col}")
    for m in MEMORY_TECHNOLOGIES:
        need(f"memory_interface_pj_per_bit.{m}")
    for k in raw["d2d_pj_per_bit"]:
        need(f"d2d_pj_per_bit.{k}")
    for a in ARCHITECTURES:
        for col in _ARCH_COLUMNS:
            need(f"architectures.{a}.{col}")
    need("class_architecture")
    for name in raw["presets"]:
        need(f"presets.{name}")
