"""The silicon-technology table (``spaces/technology.yaml``) as numpy arrays for the cost stage.

:func:`load_technology` reads the YAML once and returns a flat dict: scalars as floats,
per-node columns as arrays over ``node_nm`` (ascending), per-memory-technology columns as
arrays over ``mem_names`` (the file's order, which is also ``spaces/memory_technologies.yaml``'s),
and the compute density and precision weights per platform class as arrays in
:data:`PLATFORM_CLASSES` order (weights ``[class, bits]`` with bits 32, 16, 8, 4), so
integer codes index them directly (``dse.model.area.node_params`` / ``memory_params``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from dse.spec.errors import SpecError, check_keys
from dse.spec.presets import as_number, data_dir, read_yaml
from dse.spec.registry import PLATFORM_CLASSES

NODE_COLUMNS: tuple[str, ...] = ("logic_mtr_per_mm2", "sram_bitcell_um2", "wafer_usd", "defect_density_per_cm2",
                                 "idle_w_per_mm2")
MEMORY_COLUMNS: tuple[str, ...] = ("phy_mm2", "ctrl_mtr", "usd_per_gb", "background_w_per_unit", "hbm",
                                   "edge_mm_per_unit", "footprint_mm2")
PRECISION_BITS: tuple[int, ...] = (32, 16, 8, 4)
_TOP_KEYS = ("reference_node_nm", "reticle_mm2", "reticle_long_edge_mm", "reticle_short_edge_mm", "n_dies_max",
             "uncore_frac", "d2d_area_frac", "precision_area_weight", "multi_mode_frac",
             "class_compute_mm2_per_tflop", "sram_mm2_per_mb_ref", "nodes", "manufacturing", "memory",
             "packaging", "system", "tco", "sources")
_SECTIONS = {
    "manufacturing": ("wafer_diameter_mm", "edge_loss_mm", "scribe_mm", "yield_cluster_alpha"),
    "packaging": ("interposer_area_factor", "interposer_usd_base", "interposer_usd_per_mm2", "organic_area_factor",
                  "organic_usd_per_mm2", "bump_usd_per_mm2", "bonding_yield_per_component", "assembly_test_frac"),
    "system": ("host_usd_per_device", "markup_frac"),
    "tco": ("lifetime_years", "usd_per_kwh", "pue", "hours_per_year"),
}


def default_path() -> Path:
    """The built-in table."""
    return data_dir("spaces") / "technology.yaml"


def load_technology(path: str | Path | None = None) -> dict[str, Any]:
    """The technology table as a flat dict of floats and arrays (see the module docstring)."""
    file = Path(path) if path is not None else default_path()
    return dict(_load(str(file), file.stat().st_mtime))


@cache
def _load(file: str, _mtime: float) -> dict[str, Any]:
    raw = read_yaml(Path(file))
    if not isinstance(raw, dict):
        raise SpecError(file, "", "must be a mapping", raw)
    check_keys(file, "", raw, _TOP_KEYS)
    out: dict[str, Any] = {}
    for key in ("reference_node_nm", "reticle_mm2", "reticle_long_edge_mm", "reticle_short_edge_mm", "n_dies_max",
                "uncore_frac", "d2d_area_frac", "multi_mode_frac", "sram_mm2_per_mb_ref"):
        out[key] = as_number(file, key, raw.get(key))
    for section, keys in _SECTIONS.items():
        block = raw.get(section)
        if not isinstance(block, dict):
            raise SpecError(file, section, "must be a mapping", block)
        check_keys(file, section, block, keys)
        for key in keys:
            out[key] = as_number(file, f"{section}.{key}", block.get(key))
    weights = raw.get("precision_area_weight") or {}
    check_keys(file, "precision_area_weight", weights, PLATFORM_CLASSES)
    rows = []
    for cls in PLATFORM_CLASSES:
        row = weights.get(cls) or {}
        check_keys(file, f"precision_area_weight.{cls}", row, tuple(f"b{b}" for b in PRECISION_BITS))
        rows.append([as_number(file, f"precision_area_weight.{cls}.b{b}", row.get(f"b{b}")) for b in PRECISION_BITS])
    out["class_area_weight"] = np.array(rows)  # [class, precision in PRECISION_BITS order]
    classes = raw.get("class_compute_mm2_per_tflop") or {}
    check_keys(file, "class_compute_mm2_per_tflop", classes, PLATFORM_CLASSES)
    out["class_compute_mm2_per_tflop"] = np.array(
        [as_number(file, f"class_compute_mm2_per_tflop.{c}", classes.get(c)) for c in PLATFORM_CLASSES])
    nodes = raw.get("nodes") or {}
    if not isinstance(nodes, dict) or len(nodes) < 2:
        raise SpecError(file, "nodes", "must map at least two process nodes (nm) to their values", nodes)
    node_nm = sorted(as_number(file, f"nodes.{n}", n, minimum=1.0) for n in nodes)
    out["node_nm"] = np.array(node_nm)
    by_nm = {float(n): v for n, v in nodes.items()}
    for col in NODE_COLUMNS:
        out[col] = np.array([as_number(file, f"nodes.{n:g}.{col}", (by_nm[n] or {}).get(col)) for n in node_nm])
    memory = raw.get("memory") or {}
    if not isinstance(memory, dict) or not memory:
        raise SpecError(file, "memory", "must map memory technologies to their values", memory)
    out["mem_names"] = tuple(memory)
    for name, row in memory.items():
        check_keys(file, f"memory.{name}", row or {}, MEMORY_COLUMNS)
    for col in MEMORY_COLUMNS:
        out[col] = np.array([as_number(file, f"memory.{n}.{col}", (memory[n] or {}).get(col)) for n in memory])
    return out


def mem_codes(tech: dict[str, Any], names) -> np.ndarray:
    """Row indices in ``tech``'s memory table of technology ``names`` (SpecError for an unknown one)."""
    table = list(tech["mem_names"])
    codes = []
    for name in np.atleast_1d(names):
        if name not in table:
            raise SpecError("technology.yaml", "memory", "unknown memory technology", name)
        codes.append(table.index(name))
    return np.array(codes, dtype=np.int64)


def class_codes(names) -> np.ndarray:
    """Indices in :data:`PLATFORM_CLASSES` of platform-class ``names``."""
    return np.array([PLATFORM_CLASSES.index(n) for n in np.atleast_1d(names)], dtype=np.int64)
