"""The area model against published die areas (``validation/die_areas.csv``).

Each row is one real die with its node, dense product peaks, the fraction of its compute the
product enables (peaks are divided by it to get the die's), SRAM, memory interface and source.
``role`` says which rows fixed a constant: ``anchor-<class>`` rows set that class's compute
density (:func:`fit_class_compute`), every other row is held out. The model is evaluated as one
monolithic die (``n_dies`` 1) since each row is one published die.

>>> report = die_area_errors()  # doctest: +SKIP
>>> report[["chip", "role", "published_mm2", "predicted_mm2", "error_pct"]]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dse.model.area import area_breakdown, node_params
from dse.spec.presets import data_dir
from dse.spec.registry import PLATFORM_CLASSES
from dse.spec.technology import class_codes, load_technology, mem_codes

MIB = 2.0**20
TERA = 1e12


def load_die_areas(path: str | Path | None = None) -> pd.DataFrame:
    """The published die areas table."""
    return pd.read_csv(Path(path) if path is not None else data_dir("validation") / "die_areas.csv")


def design_columns(rows: pd.DataFrame, tech: dict[str, Any]) -> dict[str, np.ndarray]:
    """Model inputs of each die: full-die peaks (product peaks / ``enabled_frac``), SI units."""
    enabled = rows["enabled_frac"].to_numpy(float)
    hw = {f"flop{b}_peak_flop_per_s": rows[f"flop{b}_peak_tflop_per_s"].to_numpy(float) * TERA / enabled
          for b in (32, 16, 8, 4)}
    hw.update(sram_bytes=rows["sram_mib"].to_numpy(float) * MIB,
              n_mem_units=rows["n_mem_units"].to_numpy(float),
              process_nm=rows["process_nm"].to_numpy(float),
              platform_class_code=class_codes(rows["platform_class"].to_numpy()),
              mem_technology_code=mem_codes(tech, rows["mem_technology"].to_numpy()),
              n_dies=np.ones(len(rows)))
    return hw


def die_area_errors(rows: pd.DataFrame | None = None, tech: dict[str, Any] | None = None) -> pd.DataFrame:
    """Predicted vs published area per chip: ``predicted_mm2``, ``error_pct`` (signed, of published)
    and the area terms (compute, SRAM, memory interfaces, uncore)."""
    rows = load_die_areas() if rows is None else rows
    tech = load_technology() if tech is None else tech
    area = area_breakdown(design_columns(rows, tech), tech)
    out = rows[["chip", "vendor", "platform_class", "process_nm", "role"]].copy()
    out["published_mm2"] = rows["die_area_mm2"].to_numpy(float)
    out["predicted_mm2"] = area["die_area_mm2"]
    out["error_pct"] = 100.0 * (out["predicted_mm2"] / out["published_mm2"] - 1.0)
    out["compute_mm2"] = area["compute_mm2"]
    out["sram_mm2"] = area["sram_mm2"]
    out["mem_if_mm2"] = area["mem_if_mm2"]
    out["uncore_mm2"] = area["mono_mm2"] * tech["uncore_frac"]
    return out


def fit_class_compute(rows: pd.DataFrame | None = None, tech: dict[str, Any] | None = None) -> dict[str, float]:
    """Compute density (mm2 per weighted TFLOP/s at the reference node) per class that
    makes each ``anchor-<class>`` die's predicted area equal its published one, with every other
    constant fixed; several anchors of a class give the geometric mean. Classes without an anchor
    are absent. Solves ``A (1 - uncore) = c * logic_scale * P_eff + A_sram + A_mem`` for ``c`` (the
    HBM-shoreline minimum is not applied: an anchor must not be shoreline-bound)."""
    rows = load_die_areas() if rows is None else rows
    tech = load_technology() if tech is None else tech
    anchors = rows[rows["role"].str.startswith("anchor-")]
    hw = design_columns(anchors, tech)
    node = node_params(tech, hw["process_nm"])
    area = area_breakdown(hw, tech)
    fixed = area["sram_mm2"] + area["mem_if_mm2"]
    available = anchors["die_area_mm2"].to_numpy(float) * (1.0 - tech["uncore_frac"]) - fixed
    c = available / (node["logic_scale"] * area["p_eff_tflop"])
    out = {}
    for cls in PLATFORM_CLASSES:
        mask = anchors["role"].to_numpy() == f"anchor-{cls}"
        if mask.any():
            out[cls] = float(np.exp(np.mean(np.log(c[mask]))))
    return out
