"""Per-operator breakdown of one design: FLOPs, bytes, time, bound and energy share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dse.api import check_columns
from dse.model import perf
from dse.model.perf import op_totals
from dse.model.pipeline import phase_costs
from dse.model.power import op_energy_j
from dse.model.workload import executed_knobs, weight_bytes_per_param
from dse.spec.errors import SpecError, did_you_mean
from dse.spec.presets import ModelCard, Platform, load_model, load_platform
from dse.spec.registry import KNOB_DEFAULTS


def explain(model: str | ModelCard, platform: str | Platform, **knobs: float) -> pd.DataFrame:
    """One row per (phase, operator) plus a ``static`` row per phase.

    Columns: ``phase``, ``operator``, ``flop`` (FLOP), ``main_memory_bytes`` (main-memory
    traffic, B), ``time_s``, ``time_frac`` (of the phase), ``bound`` (compute/memory/pim),
    ``energy_j``, ``energy_frac`` (of the phase). Times are before the TDP cap (the cap
    stretches a whole phase). The knobs and the platform's hardware fields pass the same
    checks as :func:`dse.evaluate` (SpecError naming the field).

    >>> df = explain("llama-2-7b", "h100-sxm", batch=8)
    >>> sorted(set(df["phase"]))
    ['decode', 'prefill']
    """
    card, plat = load_model(model), load_platform(platform)
    unknown = sorted(set(knobs) - set(KNOB_DEFAULTS))
    if unknown:
        raise SpecError("", unknown[0], f"unknown knob{did_you_mean(unknown[0], KNOB_DEFAULTS)}", unknown[0])
    k = {**KNOB_DEFAULTS, **{n: float(v) for n, v in knobs.items()}}
    check_columns(k)
    hw = plat.fields
    check_columns(hw)
    k = executed_knobs(k, hw)  # as the evaluator runs it (FP8 without FP8 units: W8A16)
    if not hw["tdp_w"] > hw["static_power_w"]:
        raise SpecError("", "tdp_w", "must exceed static_power_w", hw["tdp_w"])
    costs = phase_costs(card.fields, k, hw, weight_bytes_per_param(k))
    rows = []
    for phase, ops in costs.items():
        for name, c in ops.items():
            c = op_totals(c)
            on_pim = bool(c.get("on_pim", False))
            if on_pim:
                bound = "pim"
            else:
                compute_s = float(c["flop"]) * float(c["s_per_flop"])
                memory_s = float(c["bytes"]) * float(perf.mem_s_per_byte(hw))
                bound = "compute" if compute_s >= memory_s else "memory"
            rows.append({"phase": phase, "operator": name, "flop": float(c["flop"]),
                         "main_memory_bytes": float(c["bytes"]),
                         "time_s": float(c["time_s"]), "bound": bound, "energy_j": float(op_energy_j(hw, c))})
        phase_s = sum(r["time_s"] for r in rows if r["phase"] == phase)
        rows.append({"phase": phase, "operator": "static", "flop": 0.0, "main_memory_bytes": 0.0, "time_s": 0.0,
                     "bound": "", "energy_j": hw["static_power_w"] * phase_s})
    df = pd.DataFrame(rows)
    for col in ("time_s", "energy_j"):
        totals = df.groupby("phase")[col].transform("sum")
        df[col.replace("_s", "_frac").replace("_j", "_frac")] = np.where(totals > 0, df[col] / totals, 0.0)
    return df[["phase", "operator", "flop", "main_memory_bytes", "time_s", "time_frac", "bound", "energy_j",
               "energy_frac"]]
