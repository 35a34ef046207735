"""PIM mapping: decode GEMV-shaped operators executed by processing-in-memory units.

``pim_offload`` 1 maps decode attention, 2 every decode GEMV, onto PIM units where the
platform can run them: PIM compute and in-bank bandwidth both > 0 *and* a host link to carry
the activations (``host_link_bw_bytes_per_s`` > 0; without one an offload is impossible and the
operator stays on the host). A mapped operator

* reads its weights/KV in-bank at ``pim_bw_bytes_per_s`` and computes at ``pim_peak_flop_per_s``;
* in the formats the PIM units have: Aquabolt-XL (HBM-PIM) has FP16 SIMD units and GDDR6-AiM
  BF16 MACs, neither a 4/8-bit nor a 2:4-sparse datapath, so data mapped to PIM is stored and
  read as dense 16-bit (no quantisation or sparsity saving in-bank; FLOPs are the dense ones);
* reaches only the PIM-capable part of memory (``pim_capacity_bytes``, 0 = all of it; e.g.
  the 4 PIM dies of each 8-die Aquabolt-XL stack): a fraction ``reach_frac`` of its data lies
  there and runs in PIM, the rest runs on the host (:func:`pim_reach_frac`);
* moves its activations over the host link each step.

Host and PIM work do not overlap: an operator's PIM part and host part run one after the other,
and operators follow each other (Aquabolt-XL switches a bank between host and PIM mode, and the
host drives PIM through command sequences, so neither side computes during the other's turn).
Energy is priced per level by :func:`dse.model.power.pim_dynamic_j`.
"""

from __future__ import annotations

import numpy as np

from dse.model import perf, power
from dse.model.arrays import any_rows
from dse.model.parallel import knob
from dse.model.sharding import shard_dims
from dse.model.workload import Array, Op, stored_weight_bytes, weight_bytes_per_param

PIM_BITS = 16.0  # the PIM units' only arithmetic format (FP16 Aquabolt-XL, BF16 AiM)


def pim_possible(hw: dict, k: dict) -> bool:
    """False when no design of the batch can map work to PIM (lets the hot path skip it)."""
    return any_rows(can_offload(hw)) and any_rows(k["pim_offload"] > 0)


def has_pim(hw: dict) -> Array:
    """PIM units exist where they have both compute and in-memory bandwidth."""
    return (hw["pim_peak_flop_per_s"] > 0) & (hw["pim_bw_bytes_per_s"] > 0)


def can_offload(hw: dict) -> Array:
    """PIM units exist and a host link can feed them activations (no link: no offload)."""
    return has_pim(hw) & (hw["host_link_bw_bytes_per_s"] > 0)


def pim_data_bytes(m: dict, k: dict) -> dict[str, Array]:
    """Bytes PIM would hold on the bottleneck device, stored dense 16-bit: ``weights`` (every
    decode GEMV's matrices, a draft model included) and ``kv`` (the KV cache at the final context)."""
    s = shard_dims(m, k)
    devices = knob(k, "tp") * knob(k, "pp") * knob(k, "ep")
    weights = stored_weight_bytes(m, k, PIM_BITS / 8.0) / devices
    kv = (2.0 * s["layers"] * s["kv_heads"] * m["head_dim"] * (k["batch"] / knob(k, "ep"))
          * (k["in_len"] + k["out_len"]) * (PIM_BITS / 8.0))
    return {"weights": weights, "kv": kv}


def pim_reach_frac(m: dict, k: dict, hw: dict) -> Array:
    """Fraction of the offloaded data that fits in PIM-capable memory, ``min(1, cap / data)``.

    ``data`` is the KV cache (``pim_offload`` 1) or the KV cache plus all decode weights (2), at
    16 bits (:func:`pim_data_bytes`); ``cap`` is ``pim_capacity_bytes`` (0: all of memory, 1).
    The data is spread evenly, so every mapped operator runs this fraction in PIM.
    """
    data = pim_data_bytes(m, k)
    need = data["kv"] + np.where(k["pim_offload"] >= 2.0, data["weights"], 0.0)
    cap = np.asarray(hw.get("pim_capacity_bytes", 0.0), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.minimum(1.0, cap / need)
    return np.where(cap > 0, np.where(need > 0, frac, 1.0), 1.0)


def with_pim(hw: dict, k: dict, name: str, op: Op, lo: Array, hi: Array, c_sum: Array,
             host: dict[str, Array], reach_frac: Array = 1.0) -> dict[str, Array]:
    """The cost of a decode operator where it is mapped to PIM, else ``host`` unchanged.

    ``host`` is the operator's host cost as phase totals (:func:`dse.model.perf.op_totals`);
    ``reach_frac`` the fraction of its data in PIM-capable memory (:func:`pim_reach_frac`; 1
    when all memory is). The PIM part reads ``reach_frac`` of the in-bank data at 16 bits dense
    and does that share of the FLOPs, plus the activation transfer each step; the rest of the
    operator is the host cost scaled by ``1 - reach_frac``; the two parts run in series.
    """
    level = 1.0 if name == "attn" else 2.0
    on_pim = (k["pim_offload"] >= level) & can_offload(hw) & (np.asarray(reach_frac) > 0)
    frac = np.where(on_pim, reach_frac, 0.0)
    # the stored bytes of the data PIM reads, re-expressed as dense 16-bit (PIM has no other format)
    stored_bits = k["kv_bits"] if name == "attn" else 8.0 * weight_bytes_per_param(k)
    to16 = PIM_BITS / stored_bits
    pim_flop_per_s = np.where(on_pim, hw["pim_peak_flop_per_s"], 1.0)
    pim_bytes_per_s = np.where(on_pim, hw["pim_bw_bytes_per_s"], 1.0)
    link_bw = np.where(on_pim, hw["host_link_bw_bytes_per_s"], 1.0)
    flop1 = 0.0 if op.flop1 is None else op.flop1
    bytes1 = 0.0 if op.bytes1 is None else op.bytes1
    inbank0 = (op.bytes0 - op.act_bytes) * to16 * frac
    inbank1 = bytes1 * to16 * frac
    steps, launch_s = host["steps"], host["launch_s"]
    pim_s = perf.sum_max_linear(op.flop0 * frac / pim_flop_per_s, flop1 * frac / pim_flop_per_s,
                                inbank0 / pim_bytes_per_s, inbank1 / pim_bytes_per_s, lo, hi, steps, c_sum)
    pim_s = pim_s + steps * (op.act_bytes / link_bw + launch_s)
    inbank = perf.sum_linear_nonempty(inbank0, inbank1, steps, c_sum)
    pim_j = power.pim_dynamic_j(hw, host["flop"] * frac, inbank, steps * op.act_bytes)
    host_j = power.op_energy_j(hw, host)
    rest = 1.0 - frac
    return {
        **host,
        "time_s": np.where(on_pim, pim_s + rest * host["time_s"], host["time_s"]),
        "energy_j": np.where(on_pim, pim_j + rest * host_j, host_j),
        "on_pim": on_pim,
    }
