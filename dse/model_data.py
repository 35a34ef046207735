"""The static tables the model stages read, loaded once per process for the evaluator.

``tech``: :func:`dse.spec.technology.load_technology` (nodes, memory, packaging, TCO) plus the
per-unit bandwidth and capacity of ``spaces/memory_technologies.yaml`` as arrays in the
registry's memory-code order (:data:`dse.spec.registry.MEMORY_TECHNOLOGIES`);
``quality``: the compiled perplexity grids (:func:`dse.quality_table.load_quality_tables`);
``workloads``: the length moments of each workload of ``spaces/workloads.yaml`` in the
registry's code order (None for code 0, "none"); ``onchip``: the on-chip path energy rule's
constants (:func:`dse.spec.onchip_table.load_onchip_table`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from dse.model.quality import FAMILIES
from dse.model.serving_lengths import length_moments
from dse.quality_table import load_quality_tables
from dse.spec.errors import SpecError
from dse.spec.onchip_table import load_onchip_table
from dse.spec.registry import MEMORY_TECHNOLOGIES, WORKLOADS
from dse.spec.space import load_technologies
from dse.spec.technology import load_technology
from dse.spec.workloads import load_workloads


@cache
def model_data() -> dict[str, Any]:
    """``{"tech": ..., "quality": ...}`` (see the module docstring); files must list every memory code."""
    tech = load_technology()
    if tuple(tech["mem_names"]) != MEMORY_TECHNOLOGIES:
        raise SpecError("technology.yaml", "memory", "rows must be the registry's memory technologies in order",
                        list(tech["mem_names"]))
    units = load_technologies()
    if tuple(units) != MEMORY_TECHNOLOGIES:
        raise SpecError("memory_technologies.yaml", "technologies",
                        "rows must be the registry's memory technologies in order", list(units))
    tech = {**tech,
            "unit_bw_bytes_per_s": np.array([units[n]["bw_per_unit_bytes_per_s"] for n in MEMORY_TECHNOLOGIES]),
            "unit_capacity_bytes": np.array([units[n]["capacity_per_unit_bytes"] for n in MEMORY_TECHNOLOGIES])}
    workloads = load_workloads()
    if ("none", *workloads) != WORKLOADS:
        raise SpecError("workloads.yaml", "workloads", "names must be the registry's workloads in order",
                        list(workloads))
    moments = [None, *(length_moments(workloads[name]) for name in WORKLOADS[1:])]
    return {"tech": tech, "quality": load_quality_tables(), "workloads": moments, "onchip": load_onchip_table()}


def quality_family(model_name: str) -> float:
    """Row of the quality table for a model card name (-1: no data for this model)."""
    return float(FAMILIES.index(model_name)) if model_name in FAMILIES else -1.0
