"""PIM mapping: decode GEMV-shaped operators executed by processing-in-memory units.

``pim_offload`` 1 maps decode attention, 2 every decode GEMV, onto PIM units where the
platform has them (compute and in-bank bandwidth both > 0). A mapped operator reads its
weights/KV in-bank at ``pim_bw_bytes_per_s``, computes at ``pim_peak_flop_per_s`` and moves
its activations over the host link each step; energy is priced per level by
:func:`dse.model.power.pim_dynamic_j`.
"""

from __future__ import annotations

import numpy as np

from dse.model import perf, power
from dse.model.workload import Array, Op


def pim_possible(hw: dict, k: dict) -> bool:
    """False when no design of the batch can map work to PIM (lets the hot path skip it)."""
    return bool(np.any(has_pim(hw)) and np.any(k["pim_offload"] > 0))


def has_pim(hw: dict) -> Array:
    """PIM units exist where they have both compute and in-memory bandwidth."""
    return (hw["pim_peak_flop_per_s"] > 0) & (hw["pim_bw_bytes_per_s"] > 0)


def with_pim(hw: dict, k: dict, name: str, op: Op, lo: Array, hi: Array, c_sum: Array,
             host: dict[str, Array]) -> dict[str, Array]:
    """Replace the host cost by the PIM cost where the decode operator is mapped to PIM.

    PIM units read weights/KV in-bank (``pim_bw_bytes_per_s``) and compute at 16-bit
    (``pim_peak_flop_per_s``); activations cross the host link each step.
    """
    level = 1.0 if name == "attn" else 2.0
    on_pim = (k["pim_offload"] >= level) & has_pim(hw)
    pim_flop_per_s = np.where(on_pim, hw["pim_peak_flop_per_s"], 1.0)
    pim_bytes_per_s = np.where(on_pim, hw["pim_bw_bytes_per_s"], 1.0)
    link_ok = on_pim & (hw["host_link_bw_bytes_per_s"] > 0)
    link_s = np.where(link_ok, op.act_bytes / np.where(link_ok, hw["host_link_bw_bytes_per_s"], 1.0), 0.0)
    flop1 = 0.0 if op.flop1 is None else op.flop1
    bytes1 = 0.0 if op.bytes1 is None else op.bytes1
    inbank0 = op.bytes0 - op.act_bytes
    steps, launch_s = host["steps"], host["launch_s"]
    pim_s = perf.sum_max_linear(op.flop0 / pim_flop_per_s, flop1 / pim_flop_per_s,
                                inbank0 / pim_bytes_per_s, bytes1 / pim_bytes_per_s, lo, hi, steps, c_sum)
    pim_s = pim_s + steps * link_s
    inbank = host["bytes"] - steps * op.act_bytes
    pim_j = power.pim_dynamic_j(hw, host["flop"], inbank, steps * op.act_bytes)
    return {
        **host,
        "time_s": np.where(on_pim, pim_s + steps * launch_s, host["time_s"]),
        "energy_j": np.where(on_pim, pim_j, power.op_energy_j(hw, host)),
        "on_pim": on_pim,
    }
