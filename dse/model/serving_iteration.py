"""Serving stage, part 1: the time and energy of one scheduler iteration from per-design coefficients.

Pure numpy. A continuous-batching engine runs *iterations*: one forward pass over a mixed
batch of prefill chunks and decode positions (Orca, OSDI'22; Sarathi-Serve, OSDI'24). This
module prices one iteration from a small set of per-design **coefficients** that the
per-operator model (:mod:`dse.model.workload`, :mod:`dse.model.perf`) produces once per
design (:func:`dse.model.serving_coeffs.serving_coeffs`). Every coefficient is an array
broadcastable to the design batch ``(n,)``; the five weight-GEMM rows are stacked on a
leading axis of length 5 (shape ``(5, n)`` or ``(5, 1)``).

Iteration features (token counts of one iteration; arrays ``(n,)`` or scalars)
=============================================================================
============  ===============================================================================
``n_tok``     tokens through the layer GEMMs: prefill-chunk tokens + ``q`` per decode sequence
``n_head``    tokens through the LM head: sequences whose prefill *completes* in this
              iteration (one logit row each) + ``q`` per decode sequence
``n_draft``   decode sequences (drives the speculative draft model; 0 without speculation)
``pf_pairs``  prefill attention (query, key) pairs: a chunk of ``k`` tokens at offset ``s``
              (tokens of the same prompt already in the cache) has ``k s + k (k+1) / 2``
``pf_tok``    prefill-chunk tokens (activations in/out and KV written)
``pf_kv``     KV tokens read by prefill chunks (``s`` per chunk: the earlier chunks' cache)
``dec_pairs`` decode attention pairs: ``q * c`` per decode sequence attending ``c`` tokens
``dec_tok``   decode query positions, ``q`` per decode sequence
``dec_kv``    KV tokens read by decode attention, ``c`` per decode sequence
============  ===============================================================================

``q`` = ``dec_queries`` (1, or ``spec_len + 1`` when verifying draft tokens). The decode step
``j`` (1-based) of a request with prompt ``P`` attends ``c = P + dec_tokens_per_iter * j``
tokens, as in the static model.

Coefficients (seconds ``_s`` and joules ``_j``; ``x`` is the row's driver token count)
=====================================================================================
Rows ``LIN_ROWS = (qkv, o, ffn, lm_head, draft)`` driven by ``(n_tok, n_tok, n_tok, n_head,
n_draft)``. For row ``r`` with driver ``x > 0``::

    t_r = max(x * lin_flop_s_per_tok[r], lin_w_s[r] + W_moe + x * lin_act_s_per_tok[r]) + lin_launch_s[r]

``lin_flop_s_per_tok`` = FLOPs per driver token / achievable FLOP/s (2 * layers * weights
used per token, 2:4 time saving included); ``lin_w_s`` = weight bytes read once per
iteration / achievable bytes/s; ``lin_act_s_per_tok`` = activation bytes per token /
achievable bytes/s; ``lin_launch_s`` = kernels * ``kernel_overhead_s``. ``W_moe`` is zero
except on the ffn row: ``moe_expert_w_s * E * (1 - (1 - k/E) ** n_tok)`` (expected distinct
experts touched by ``n_tok`` tokens routed to top-``k`` of ``E``; :func:`experts_touched`),
with ``lin_w_s[ffn]`` holding the router only. Attention, prefill and decode parts priced
separately (one kernel each, as FlashAttention varlen prefill + paged decode kernels)::

    t_pf  = max(pf_pairs * fa, pf_tok * ma + pf_kv * ka) + attn_launch_s
    t_dec = max(dec_pairs * fa, dec_tok * ma + dec_kv * ka) + attn_launch_s

with ``fa, ma, ka`` = ``attn_flop_s_per_pair`` (4 * layers * heads * head_dim FLOPs per pair /
FLOP/s), ``attn_act_s_per_tok`` (activations in/out + KV written per token / bytes/s),
``attn_kv_s_per_tok`` (KV bytes per cached token / bytes/s),
each counted only when its token count is positive. Decode attention's byte time is that of its
(sequence, KV head) streams when they are too few to draw the bandwidth
(:func:`dse.model.perf.attn_s_per_byte`: each stream reads at most ``attn_stream_bw_bytes_per_s``)::

    dec bytes term = (dec_tok * ma + dec_kv * ka) * max(1, attn_stream_seqs / n_dec),  n_dec = dec_tok / q

``attn_stream_seqs`` = achievable bytes/s / (stream rate x KV heads per device per sequence): the
decoding sequences below which the streams bound the read (0: not limited; prefill chunks never).
Plus the additive, un-overlapped collectives of a parallel replica
(:mod:`dse.model.serving_mapping`; zero on one device)::

    t_comm = fixed_s + fixed_s_per_tok * n_tok + fixed_s_per_head * n_head

(all-reduces per token through the layers, the LM head's vocabulary all-gather per head row).
Energy (no max: every FLOP and byte costs energy) mirrors the operator terms with the ``_j``
coefficients (``e_ops``), decode attention's times ``attn_dec_energy_ratio``
(:func:`dse.model.power.decode_attn_energy_ratio`); the collectives cost their link energy
(``fixed_j*``) and the devices draw their compute power while they wait in them,
``e_ops * t_comm / t_ops`` (as
:func:`dse.model.parallel.device_dynamic_j`: NCCL kernels spin the SMs).

**Exactness.** With one prefill iteration of ``batch * in_len`` tokens (no chunking, all
arrivals at t = 0) and ``ceil(out_len / tokens_per_verify)`` decode iterations of ``batch``
sequences, these are term for term the operators of :mod:`dse.model.pipeline` (weights read
once per pass, roofline per operator, decode attention's stream limit, launch overhead per kernel), so
:func:`static_batch_times` reproduces its ``ttft_s`` and ``tpot_s`` (tested). PIM offload
is not represented (decode operators on PIM are costed on the host).
"""

from __future__ import annotations

import numpy as np

from dse.model.jit import kernel
from dse.model.serving_jit import at2, grid_rows

LIN_ROWS: tuple[str, ...] = ("qkv", "o", "ffn", "lm_head", "draft")
FFN_ROW = 2
TIME_KEYS: tuple[str, ...] = (
    "lin_flop_s_per_tok", "lin_w_s", "lin_act_s_per_tok", "lin_launch_s", "moe_expert_w_s",
    "attn_flop_s_per_pair", "attn_act_s_per_tok", "attn_kv_s_per_tok", "attn_launch_s",
    "fixed_s", "fixed_s_per_tok", "fixed_s_per_head",
)
ENERGY_KEYS: tuple[str, ...] = (
    "lin_flop_j_per_tok", "lin_w_j", "lin_act_j_per_tok", "moe_expert_w_j",
    "attn_flop_j_per_pair", "attn_act_j_per_tok", "attn_kv_j_per_tok", "fixed_j", "fixed_j_per_tok",
    "fixed_j_per_head",
)
OTHER_KEYS: tuple[str, ...] = (
    "moe_n_experts", "moe_top_k", "dec_queries", "dec_tokens_per_iter", "static_power_w", "headroom_w",
    "kv_bytes_per_token", "kv_capacity_bytes", "attn_stream_seqs", "attn_dec_energy_ratio",
)
COEFF_KEYS: tuple[str, ...] = TIME_KEYS + ENERGY_KEYS + OTHER_KEYS
FEATURES: tuple[str, ...] = ("n_tok", "n_head", "n_draft", "pf_pairs", "pf_tok", "pf_kv",
                             "dec_pairs", "dec_tok", "dec_kv")


def experts_touched(c: dict, n_tok) -> np.ndarray:
    """Expected distinct experts hit by ``n_tok`` tokens, ``E (1 - (1 - k/E) ** n_tok)``; 1 for a dense model."""
    e = c["moe_n_experts"]
    return e * (1.0 - (1.0 - c["moe_top_k"] / e) ** n_tok)


def _drivers(f: dict) -> np.ndarray:
    """Driver token counts of the five GEMM rows, shape ``(5, ...)``."""
    return np.stack(np.broadcast_arrays(f["n_tok"], f["n_tok"], f["n_tok"], f["n_head"], f["n_draft"]))


def _moe_w(c: dict, n_tok, key: str):
    """The expert weights read by ``n_tok`` tokens (seconds or joules per ``key``)."""
    if np.all(np.asarray(c["moe_n_experts"]) == 1.0):  # dense: one "expert", always touched
        return c[key]
    return c[key] * experts_touched(c, n_tok)


def ops_time_s(c: dict, f: dict) -> np.ndarray:
    """Seconds of the operators of one iteration with features ``f`` (no collectives, no power cap)."""
    x = _drivers(f)
    w = np.broadcast_to(c["lin_w_s"], np.broadcast_shapes(np.shape(c["lin_w_s"]), x.shape)).copy()
    w[FFN_ROW] = w[FFN_ROW] + _moe_w(c, f["n_tok"], "moe_expert_w_s")
    rows = np.maximum(x * c["lin_flop_s_per_tok"], w + x * c["lin_act_s_per_tok"]) + c["lin_launch_s"]
    t = np.where(x > 0, rows, 0.0).sum(axis=0)
    fa, ma, ka, la = c["attn_flop_s_per_pair"], c["attn_act_s_per_tok"], c["attn_kv_s_per_tok"], c["attn_launch_s"]
    pf = np.maximum(f["pf_pairs"] * fa, f["pf_tok"] * ma + f["pf_kv"] * ka) + la
    dec = np.maximum(f["dec_pairs"] * fa, (f["dec_tok"] * ma + f["dec_kv"] * ka) * stream_factor(c, f)) + la
    return t + np.where(f["pf_tok"] > 0, pf, 0.0) + np.where(f["dec_tok"] > 0, dec, 0.0)


def stream_factor(c: dict, f: dict):
    """``max(1, attn_stream_seqs / n_dec)``, ``n_dec = dec_tok / dec_queries``: how much longer decode
    attention's bytes take when its (sequence, KV head) streams cannot draw the bandwidth (1 where
    there is no decode)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = c["attn_stream_seqs"] * c["dec_queries"] / f["dec_tok"]
    return np.where(f["dec_tok"] > 0, np.maximum(ratio, 1.0), 1.0)


def comm_time_s(c: dict, f: dict) -> np.ndarray:
    """Seconds of the replica's collectives in one iteration (zero on one device)."""
    return c["fixed_s"] + c["fixed_s_per_tok"] * f["n_tok"] + c["fixed_s_per_head"] * f["n_head"]


def iteration_time_s(c: dict, f: dict) -> np.ndarray:
    """Seconds of one iteration with features ``f`` (module docstring), before any power cap."""
    return ops_time_s(c, f) + comm_time_s(c, f)


def ops_energy_j(c: dict, f: dict) -> np.ndarray:
    """Dynamic joules of the operators of one iteration with features ``f``."""
    x = _drivers(f)
    w = np.broadcast_to(c["lin_w_j"], np.broadcast_shapes(np.shape(c["lin_w_j"]), x.shape)).copy()
    w[FFN_ROW] = w[FFN_ROW] + _moe_w(c, f["n_tok"], "moe_expert_w_j")
    rows = w + x * (c["lin_flop_j_per_tok"] + c["lin_act_j_per_tok"])
    e = np.where(x > 0, rows, 0.0).sum(axis=0)
    fa, ma, ka = c["attn_flop_j_per_pair"], c["attn_act_j_per_tok"], c["attn_kv_j_per_tok"]
    pf = f["pf_pairs"] * fa + f["pf_tok"] * ma + f["pf_kv"] * ka
    dec = (f["dec_pairs"] * fa + f["dec_tok"] * ma + f["dec_kv"] * ka) * c["attn_dec_energy_ratio"]
    return e + np.where(f["pf_tok"] > 0, pf, 0.0) + np.where(f["dec_tok"] > 0, dec, 0.0)


def link_energy_j(c: dict, f: dict) -> np.ndarray:
    """Link joules of the replica's collectives in one iteration (zero on one device)."""
    return c["fixed_j"] + c["fixed_j_per_tok"] * f["n_tok"] + c["fixed_j_per_head"] * f["n_head"]


def waiting_j(ops_j, ops_s, comm_s):
    """Compute power drawn while waiting in the collectives: ``ops_j * comm_s / ops_s`` joules
    (:func:`dse.model.parallel.device_dynamic_j`); zero without collectives (:func:`waiting_row`)."""
    (out,) = grid_rows(_waiting_rows, 1, ops_j, ops_s, comm_s)
    return out.reshape(np.broadcast_shapes(np.shape(ops_j), np.shape(ops_s), np.shape(comm_s)))


@kernel
def waiting_row(ops_j, ops_s, comm_s):
    """:func:`waiting_j` of numbers, inside kernels."""
    if comm_s > 0.0:
        return ops_j * comm_s / (ops_s if ops_s > 0.0 else np.inf)
    return 0.0


@kernel
def _waiting_rows(ops_j, ops_s, comm_s, out):
    for g in range(out.shape[0]):
        for i in range(out.shape[1]):
            out[g, i] = waiting_row(at2(ops_j, g, i), at2(ops_s, g, i), at2(comm_s, g, i))


def iteration_energy_j(c: dict, f: dict) -> np.ndarray:
    """Dynamic joules of one iteration with features ``f``: operators, waiting in the collectives,
    links (static power is added by the caller)."""
    ops_j = ops_energy_j(c, f)
    return ops_j + waiting_j(ops_j, ops_time_s(c, f), comm_time_s(c, f)) + link_energy_j(c, f)


def prefill_features(batch, in_len) -> dict:
    """Features of one unchunked prefill iteration of ``batch`` prompts of ``in_len`` tokens."""
    tok = batch * in_len
    z = 0.0 * tok
    return {"n_tok": tok, "n_head": batch + z, "n_draft": z, "pf_pairs": batch * in_len * (in_len + 1.0) * 0.5,
            "pf_tok": tok, "pf_kv": z, "dec_pairs": z, "dec_tok": z, "dec_kv": z}


def decode_features(c: dict, batch, context) -> dict:
    """Features of one decode iteration of ``batch`` sequences each attending ``context`` tokens."""
    q = c["dec_queries"]
    tok = batch * q
    z = 0.0 * tok
    return {"n_tok": tok, "n_head": tok, "n_draft": batch + z, "pf_pairs": z, "pf_tok": z, "pf_kv": z,
            "dec_pairs": tok * context, "dec_tok": tok, "dec_kv": batch * context}


def capped_s(time_s, dynamic_j, headroom_w):
    """Power cap as in the static model: ``max(time, dynamic energy / (tdp - static))``, seconds."""
    return np.maximum(time_s, dynamic_j / np.maximum(headroom_w, 1e-9))


def static_batch_times(c: dict, batch, in_len, out_len, max_steps: int | None = None) -> dict[str, np.ndarray]:
    """The static-batch model rebuilt from iterations: all ``batch`` requests arrive at t = 0
    with ``in_len``/``out_len`` tokens (point masses), one unchunked prefill iteration, then
    ``ceil(out_len / dec_tokens_per_iter)`` decode iterations in which step ``j`` attends
    ``in_len + dec_tokens_per_iter * j`` tokens. The power cap applies per phase (prefill;
    the decode phase as a whole) to the devices' dynamic energy (operators and waiting in the
    collectives, not the links), as in :func:`dse.model.pipeline.evaluate_arrays`.

    Returns ``ttft_s`` and ``tpot_s`` (decode time / out_len) and the phases' energies. Loops
    over decode steps (for the exactness check, not the hot path); ``max_steps`` bounds the loop.
    """
    tpv = c["dec_tokens_per_iter"]
    steps = np.ceil(out_len / tpv)
    n_loop = int(np.max(steps)) if max_steps is None else max_steps
    parts = [_phase_parts(c, prefill_features(batch, in_len))]
    dec = [0.0, 0.0, 0.0, 0.0]
    for j in range(1, n_loop + 1):
        on = j <= steps
        step = _phase_parts(c, decode_features(c, batch, in_len + tpv * float(j)))
        dec = [acc + np.where(on, v, 0.0) for acc, v in zip(dec, step, strict=True)]
    out = []
    for ops_s, comm_s, ops_j, link_j in (*parts, dec):
        device_j = ops_j + waiting_j(ops_j, ops_s, comm_s)
        time_s = capped_s(ops_s + comm_s, device_j, c["headroom_w"])
        out.append((time_s, device_j + link_j + c["static_power_w"] * time_s))
    (pre_s, pre_j), (dec_s, dec_j) = out
    return {"ttft_s": pre_s, "tpot_s": dec_s / out_len, "prefill_j": pre_j, "decode_j": dec_j}


def _phase_parts(c: dict, f: dict) -> tuple:
    """(operator seconds, collective seconds, operator joules, link joules) of one iteration."""
    return ops_time_s(c, f), comm_time_s(c, f), ops_energy_j(c, f), link_energy_j(c, f)
