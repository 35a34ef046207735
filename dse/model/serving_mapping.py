"""Serving stage, part 3: the iteration coefficients of a parallel replica and of a static design.

Pure numpy. :func:`dse.model.serving_coeffs.serving_coeffs` prices one device holding the whole
model. A replica of ``tp * pp * ep`` devices runs each iteration on every device at once:

* time terms become the bottleneck device's (the shard factors of
  :func:`dse.model.sharding.shard_factors`: FLOPs, weights, activations, KV and kernels per row);
* the tensor/expert-parallel collectives of an iteration are affine in its tokens: the
  all-reduces (and all-to-alls) in the tokens through the layers, the LM head's vocabulary
  all-gather in the head rows. The stage's ``comm_s`` at (1, 1), (2, 1) and (1, 2) (tokens,
  head rows) gives ``fixed_s``, ``fixed_s_per_tok`` and ``fixed_s_per_head`` (serialised with
  compute, as in the static model without overlap), their link energy ``fixed_j*``; while
  waiting in them the devices draw their compute power
  (:func:`dse.model.serving_iteration.waiting_j`, as :func:`dse.model.parallel.device_dynamic_j`);
* energy terms are the whole replica's (every device runs its share: the per-device terms times
  the devices), and so are static power and the power-cap headroom;
* the KV cache is the replica's: every device's free memory after its weights and workspace,
  at the replica's bytes per token (KV heads replicated when ``n_kv_heads < tp``);
* decode attention's stream limit (``attn_stream_seqs``, the decoding sequences below which the
  (sequence, KV head) streams bound the KV read) is the bottleneck device's: a device holds
  ``ceil(n_kv_heads / tp)`` KV heads of ``1 / (ep * pp)`` of the replica's sequences (one
  micro-batch of its ep group), the static model's ``streams`` (:func:`dse.model.pipeline.phase_costs`).

**Pipelines** (``pp > 1``) run as ``pp`` virtual engines (vLLM's pipeline-parallel scheduler,
TensorRT-LLM's in-flight micro-batches): the running sequences form ``pp`` micro-batches that
move through the stages one behind the other, and every sequence advances one iteration per
*round*. The coefficients price a round: the bottleneck (last) stage's work on one micro-batch
(the shard factors at ``micro_batches = pp``), ``pp`` times (every micro-batch passes it), plus the
``pp - 1`` stage-to-stage sends of one micro-batch (``p2p_path_s``, added to the collectives).
A round is thus the latency of one micro-batch's trip through equal stages; shorter stages
(without the LM head) make it an upper bound by at most ``(pp - 1)`` LM-head passes. The token
budget and sequence limit apply per micro-batch (``pp`` times per round, :func:`round_limits`).
The KV cache is bounded by the busiest stage (its ``ceil(L / pp)`` layers' share of a token).

:func:`point_moments` gives the length moments of a point-mass workload (each design's own
``in_len``/``out_len``), with which the serving stage prices a static design's requests.
"""

from __future__ import annotations

import numpy as np

from dse.model import parallel, sharding
from dse.model.serving_iteration import LIN_ROWS
from dse.model.serving_lengths import STOPLOSS_GRID, avg_var_factor

Array = np.ndarray | float
_TIME_TERMS = {"lin_flop_s_per_tok": "flop", "lin_w_s": "store", "lin_act_s_per_tok": "act", "lin_launch_s": "kernels"}
_ENERGY_TERMS = {"lin_flop_j_per_tok": "flop", "lin_w_j": "store", "lin_act_j_per_tok": "act"}
_ATTN_TERMS = {"attn_flop_s_per_pair": "flop", "attn_act_s_per_tok": "act", "attn_kv_s_per_tok": "kv",
               "attn_launch_s": "kernels", "attn_flop_j_per_pair": "flop", "attn_act_j_per_tok": "act",
               "attn_kv_j_per_tok": "kv"}


def replica_coeffs(c: dict, m: dict, k: dict, hw: dict, weights_per_device_bytes: Array,
                   weights_bytes: Array) -> dict:
    """The coefficients ``c`` of one whole-model device rewritten for a ``tp * pp * ep`` replica
    (see the module docstring; ``k["micro_batches"]`` is taken as ``pp``); ``hw`` must carry
    usable link fields; ``weights_per_device_bytes`` is the busiest device's footprint without
    a batch."""
    pp = k["pp"]
    k = {**k, "micro_batches": pp}
    f = sharding.shard_factors(m, k)
    devices = k["tp"] * k["ep"] * pp
    out = dict(c)
    for key, factor in _TIME_TERMS.items():  # pp passes of the bottleneck stage per round
        out[key] = _rows(c[key]) * _factor_rows(f, factor) * pp
    for key, factor in _ENERGY_TERMS.items():  # every device, each micro-batch
        out[key] = _rows(c[key]) * _factor_rows(f, factor) * (devices * pp)
    for key, factor in _ATTN_TERMS.items():
        energy = key.endswith("_j_per_pair") or key.endswith("_j_per_tok")
        out[key] = c[key] * f["attn"][factor] * (devices * pp if energy else pp)
    # streams per sequence on the device: KV heads x the device's share of the sequences (kv / kernels)
    out["attn_stream_seqs"] = c["attn_stream_seqs"] * (f["attn"]["kernels"] / f["attn"]["kv"])
    out["moe_expert_w_s"] = c["moe_expert_w_s"] * f["ffn"]["store"] * pp
    out["moe_expert_w_j"] = c["moe_expert_w_j"] * f["ffn"]["store"] * (devices * pp)
    comm = parallel.stage_comms(m, k, hw, ((1.0, 1.0), (2.0, 1.0), (1.0, 2.0)))  # one set-up, three passes
    for unit, key in (("s", "comm_s"), ("j", "energy_j")):
        # a round: pp micro-batches' collectives at the bottleneck stage and one micro-batch's sends
        # (the link energy already counts every micro-batch)
        one, tok, head = ((x[key] * pp + x["p2p_path_s"]) if unit == "s" else x[key] for x in comm)
        per_tok, per_head = tok - one, head - one
        out[f"fixed_{unit}_per_tok"], out[f"fixed_{unit}_per_head"] = per_tok, per_head
        out[f"fixed_{unit}"] = np.maximum(one - per_tok - per_head, 0.0)
    out["static_power_w"] = c["static_power_w"] * devices
    out["headroom_w"] = c["headroom_w"] * devices
    kv_heads_share = np.ceil(m["n_kv_heads"] / k["tp"]) * k["tp"] / m["n_kv_heads"]
    out["kv_bytes_per_token"] = c["kv_bytes_per_token"] * kv_heads_share
    stages = m["n_layers"] / np.ceil(m["n_layers"] / pp)  # tokens the busiest stage's room holds, as stages
    free = c["kv_capacity_bytes"] + weights_bytes - weights_per_device_bytes
    out["kv_capacity_bytes"] = free * (k["tp"] * k["ep"] * stages)
    return out


def round_limits(sched: dict, pp: Array) -> dict:
    """The scheduler limits of a round of ``pp`` virtual engines: ``token_budget`` and ``max_seqs``
    apply per micro-batch, so a round carries ``pp`` times each."""
    if np.all(np.asarray(pp) == 1.0):
        return sched
    return {**sched, "token_budget": sched["token_budget"] * pp, "max_seqs": sched["max_seqs"] * pp, "engines": pp}


def _rows(x: np.ndarray) -> np.ndarray:
    """A per-row coefficient as ``(rows, n)`` or ``(rows, 1)``."""
    return np.reshape(x, (len(LIN_ROWS), -1))


def _factor_rows(f: dict, factor: str) -> np.ndarray:
    """One shard factor of every GEMM row, stacked as ``(rows, n)`` or ``(rows, 1)``."""
    return np.stack(np.broadcast_arrays(*(np.reshape(np.asarray(f[r][factor], float), -1) for r in LIN_ROWS)))


def point_moments(in_len: Array, out_len: Array) -> dict[str, np.ndarray]:
    """Length moments (:func:`dse.model.serving_lengths.length_moments`' keys) of requests that all
    have ``in_len`` prompt and ``out_len`` output tokens (arrays per design). No stop-loss table:
    ``in_point`` (= ``in_len``) stands for it, the stage reads ``max(in_len - grid, 0)`` where it
    needs it (:func:`dse.model.serving_stoploss.stoploss_of`, :func:`point_stoploss`)."""
    p, o = np.asarray(in_len, dtype=float), np.asarray(out_len, dtype=float)
    p, o = np.broadcast_arrays(p, o)
    return {"in_mean": p, "in_sq_mean": p * p, "in_p50": p, "in_p90": p, "out_mean": o, "out_sq_mean": o * o,
            "out_p50": o, "out_p90": o, "out_inv_mean": 1.0 / o, "out_inv_sq_mean": 1.0 / (o * o),
            "out_avg_var_factor": np.full(o.shape, float(avg_var_factor(np.array([1.0]))[0])),
            "in_out_mean": p * o, "in_point": p}


def point_stoploss(in_len) -> np.ndarray:
    """The stop-loss tables of point masses at ``in_len`` (1-D), one row each: ``(len(in_len), G)``."""
    return np.maximum(np.asarray(in_len, dtype=float)[:, None] - STOPLOSS_GRID, 0.0)
