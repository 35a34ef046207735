"""Request-length workloads for the serving stage: ``spaces/workloads.yaml`` -> dicts.

Only reads and checks the file; the moments are computed by
:func:`dse.model.serving_lengths.length_moments` (once per workload).
"""

from __future__ import annotations

from pathlib import Path

import yaml

WORKLOADS_PATH = Path(__file__).resolve().parents[2] / "spaces" / "workloads.yaml"
KINDS = {"fixed": ("value",), "uniform": ("low", "high"), "exponential": ("mean",),
         "lognormal": ("sigma",), "histogram": ("edges", "weights")}


def load_workloads(path: str | Path = WORKLOADS_PATH) -> dict[str, dict]:
    """Every workload of the file by name: ``{"in": dist, "out": dist, ...}`` (raises ValueError on a bad entry)."""
    data = yaml.safe_load(Path(path).read_text())["workloads"]
    for name, wl in data.items():
        for side in ("in", "out"):
            dist = wl.get(side)
            if not isinstance(dist, dict) or dist.get("kind") not in KINDS:
                raise ValueError(f"{path}: workloads.{name}.{side}: kind must be one of {sorted(KINDS)}")
            missing = [key for key in KINDS[dist["kind"]] if key not in dist]
            if dist["kind"] == "lognormal" and "median" not in dist and "mean" not in dist:
                missing.append("median or mean")
            if missing:
                raise ValueError(f"{path}: workloads.{name}.{side}: missing {', '.join(missing)}")
        if "source" not in wl:
            raise ValueError(f"{path}: workloads.{name}: every workload names its source")
    return data
