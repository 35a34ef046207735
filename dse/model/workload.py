"""Workload model: a decoder reduced to operators with closed-form FLOPs and bytes.

Every function is pure over numpy arrays (or scalars, which broadcast). ``m`` holds
model-card fields (:mod:`dse.spec.registry`), ``k`` the software knobs:

=================  =============================================================
``batch``          sequences decoded together
``in_len``         prompt tokens per sequence
``out_len``        generated tokens per sequence (= decode steps)
``w_bits``         weight bits (4, 8, 16, ...)
``a_bits``         activation bits; ``w_bits < a_bits`` is weight-only quantisation:
                   the kernel dequantises and computes at ``a_bits``
``kv_bits``        KV-cache bits
``w_sparsity_frac`` unstructured weight sparsity (0..1), stored as values + 1-bit bitmap
``nm_sparse``      1: 2:4 structured sparsity (half the weights + 2-bit indices);
                   halves matrix FLOPs only where the hardware supports it natively
``pim_offload``    0 none, 1 decode attention on PIM, 2 every decode GEMV on PIM
``spec_len``       speculative decoding: draft tokens per verification step (0 = off)
``spec_accept_frac`` probability that the target accepts each draft token
``spec_draft_frac`` draft model size as a fraction of the target's weights
=================  =============================================================

Speculative decoding (the survey's "fast decoding"): each verification step runs the
target on ``spec_len + 1`` positions per sequence (weights read once) after ``spec_len``
draft steps, and yields on average ``(1 - a**(g+1)) / (1 - a)`` tokens (``g`` draft
tokens, acceptance ``a``; Leviathan et al., ICML 2023).

Operators per layer: ``qkv`` (fused Q/K/V projection), ``attn`` (scores + context
over the KV cache, flash-style), ``o`` (output projection), ``ffn`` (gate/up/down,
MoE experts and router); once per model: ``lm_head``. Norms, RoPE and residual adds
are counted as kernels (launch overhead) and activation traffic, not FLOPs.

Decode operators are linear in the attended context ``c`` (tokens in the cache,
including the new one): ``flop = flop0 + flop1 * c`` and likewise for bytes; the
step generating output token ``t`` (1-based) attends ``c = in_len + t`` tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dse.model import jit
from dse.model.arrays import Array, all_rows, any_rows, fused, ndim
from dse.spec.registry import KNOB_BY_NAME

FP8_METHOD = float(KNOB_BY_NAME["quant_method"].choices.index("fp8"))
BITMAP_INDEX_BITS = 1.0  # per original weight, unstructured sparsity
NM_INDEX_BITS = 2.0  # per kept weight, 2:4 structured sparsity (position within the group of 4)


class Op(NamedTuple):
    """One operator of one phase, summed over the layers it appears in.

    ``flop0 + flop1 * c`` FLOPs and ``bytes0 + bytes1 * c`` main-memory bytes, where
    ``c`` is the attended context; ``flop1``/``bytes1`` are None for operators that do
    not depend on it (everything but decode attention).
    ``act_bytes`` is the part of ``bytes0`` that is activations (what crosses the
    host link when the operator runs in memory).
    ``kernels`` is the launches per step. Precision: weight GEMMs run at
    ``max(w_bits, a_bits)`` (and skip half their FLOPs with 2:4 sparsity where the
    hardware supports it), attention at ``max(a_bits, kv_bits)``.
    """

    flop0: Array
    flop1: Array
    bytes0: Array
    bytes1: Array
    act_bytes: Array
    kernels: Array


def executed_knobs(k: dict, hw: dict) -> dict:
    """The knobs as the device runs them: an FP8 weight-and-activation design (``quant_method``
    fp8, ``a_bits < 16``) on a device without FP8 arithmetic (``fp8_native`` 0: Ampere, TPU v5e,
    CPUs, FPGAs) runs as W8A16, FP8 weights dequantised to 16-bit activations, as vLLM's FP8
    Marlin kernels do on Ampere: ``a_bits`` becomes 16 there (time, bytes, energy and quality
    follow). Anything else is unchanged; ``k`` is returned as is when no row changes."""
    fp8 = hw["fp8_native"]
    if ndim(fp8) == 0 and fp8 > 0:
        return k
    method, a_bits = k["quant_method"], k["a_bits"]
    if ndim(method) == 0 and method != FP8_METHOD:
        return k
    fallback = (method == FP8_METHOD) & (a_bits < 16.0) & (fp8 <= 0)
    if not any_rows(fallback):
        return k
    return {**k, "a_bits": np.where(fallback, 16.0, a_bits)}


def weight_bytes_per_param(k: dict) -> Array:
    """Stored bytes per original weight with quantisation and sparsity (never more than dense)."""
    return fused(_weight_bytes_rows, 1, k["w_bits"], k["w_sparsity_frac"], k["nm_sparse"])[0]


@jit.kernel
def weight_bytes_at(w_bits: float, w_sparsity_frac: float, nm_sparse: float) -> float:
    """:func:`weight_bytes_per_param` of one design (compiled): values plus a 1-bit bitmap with
    unstructured sparsity, half the values plus 2-bit indices with 2:4 sparsity (which wins)."""
    dense = w_bits / 8.0
    stored = dense
    if w_sparsity_frac > 0.0:
        stored = (1.0 - w_sparsity_frac) * dense + BITMAP_INDEX_BITS / 8.0
    if nm_sparse > 0.0:
        stored = 0.5 * dense + 0.5 * NM_INDEX_BITS / 8.0
    return np.minimum(stored, dense)


@jit.kernel
def _weight_bytes_rows(w_bits, w_sparsity_frac, nm_sparse, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = weight_bytes_at(jit.at(w_bits, i), jit.at(w_sparsity_frac, i), jit.at(nm_sparse, i))


def layer_params(m: dict) -> dict[str, Array]:
    """Weight elements per layer by operator (all experts for the FFN)."""
    qkv = m["d_model"] * (m["n_heads"] + 2.0 * m["n_kv_heads"]) * m["head_dim"]
    o = m["n_heads"] * m["head_dim"] * m["d_model"]
    ffn_one = (2.0 + m["ffn_gated"]) * m["d_model"] * m["d_ff"]
    router = np.where(m["n_experts"] > 1, m["d_model"] * m["n_experts"], 0.0)
    return {"qkv": qkv, "o": o, "ffn_expert": ffn_one, "router": router}


def n_params(m: dict) -> Array:
    """Total weights: layers + embedding + (untied) LM head; norms and biases ignored."""
    p = layer_params(m)
    per_layer = p["qkv"] + p["o"] + p["ffn_expert"] * m["n_experts"] + p["router"]
    embed = m["vocab_size"] * m["d_model"]
    return m["n_layers"] * per_layer + embed * (2.0 - m["tied_embeddings"])


def experts_touched(m: dict, tokens: Array) -> Array:
    """Expected distinct experts hit by ``tokens`` tokens routed uniformly to top-k of E."""
    e = m["n_experts"]
    if all_rows(e == 1.0):
        return 1.0
    return e * (1.0 - (1.0 - m["n_experts_active"] / e) ** tokens)


def _linear(layers: Array, tokens: Array, params: Array, flop_params: Array, act_elems: Array, kernels: Array,
            a_bits: Array, wbytes: Array) -> Op:
    """A weight GEMM/GEMV in ``layers`` layers (:func:`linear_at`)."""
    flop, nbytes, act = fused(_linear_rows, 3, layers, tokens, params, flop_params, act_elems, a_bits, wbytes)
    return Op(flop, None, nbytes, None, act, layers * kernels)


@jit.kernel
def linear_at(layers: float, tokens: float, params: float, flop_params: float, act_elems: float, a_bits: float,
              wbytes: float) -> tuple[float, float, float]:
    """``(flop, bytes, act_bytes)`` of a weight GEMM/GEMV in ``layers`` layers, one design (compiled):
    ``2 * tokens * flop_params`` FLOPs each; weights read once per pass, ``act_elems`` activations of
    ``a_bits`` per token in and out."""
    a = (layers * act_elems) * (tokens * (a_bits / 8.0))
    return (2.0 * layers * flop_params) * tokens, (layers * params) * wbytes + a, a


@jit.kernel
def _linear_rows(layers, tokens, params, flop_params, act_elems, a_bits, wbytes, flop, nbytes, act):  # noqa: ANN001
    for i in range(flop.shape[0]):
        flop[i], nbytes[i], act[i] = linear_at(jit.at(layers, i), jit.at(tokens, i), jit.at(params, i),
                                               jit.at(flop_params, i), jit.at(act_elems, i), jit.at(a_bits, i),
                                               jit.at(wbytes, i))


LINEAR_OPS: tuple[str, ...] = ("qkv", "o", "ffn")  # per layer; then attention, then the LM head


def linear_operands(m: dict, tokens: Array, head_tokens: Array) -> dict[str, tuple[Array, ...]]:
    """``(layers, tokens, params, flop_params, act_elems, kernels)`` of each weight GEMM of a pass of
    ``tokens`` tokens, ``head_tokens`` of them into the LM head (:func:`linear_at`; ``kernels`` per layer)."""
    nl = m["n_layers"]
    d, h, kv, hd = m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    p = layer_params(m)
    v = m["vocab_size"]
    return {
        "qkv": (nl, tokens, p["qkv"], p["qkv"], d + (h + 2.0 * kv) * hd, 3.0),
        "o": (nl, tokens, p["o"], p["o"], h * hd + 2.0 * d, 2.0),
        "ffn": (nl, tokens, p["ffn_expert"] * experts_touched(m, tokens) + p["router"],
                p["ffn_expert"] * m["n_experts_active"] + p["router"],
                2.0 * d + (1.0 + m["ffn_gated"]) * m["d_ff"] * m["n_experts_active"],
                4.0 + np.where(m["n_experts"] > 1, 2.0, 0.0)),
        "lm_head": (1.0, head_tokens, v * d, v * d, d + v, 2.0),
    }


def attention_operands(m: dict) -> tuple[Array, ...]:
    """Per-token constants of attention over all layers, scalar factors grouped first (one-model
    batches: numbers): prefill ``pairs``, ``act_per`` and ``kv_per`` (:func:`prefill_attn_at`), then
    decode ``pairs`` and ``kv_seq`` (:func:`decode_attn_at`, with ``act_per`` and ``kv_per``)."""
    nl, h, kv, hd = m["n_layers"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    return 2.0 * nl * h * hd, nl * hd * (2.0 * h + 2.0 * kv), nl * hd * 2.0 * kv, 4.0 * nl * h * hd, 2.0 * nl * kv * hd


def decode_queries(k: dict) -> Array:
    """Positions per sequence in a decode step, ``spec_len + 1`` (verifying the draft tokens); the
    scalar 1 when no design of the batch speculates."""
    return k["spec_len"] + 1.0 if any_rows(k["spec_len"] > 0) else 1.0


def tokens_per_verify(k: dict) -> Array:
    """Expected tokens generated per verification step, ``(1 - a**(g+1)) / (1 - a)`` (1 without speculation)."""
    a, g = k["spec_accept_frac"], k["spec_len"]
    return (1.0 - a ** (g + 1.0)) / (1.0 - a)


def phase_ops(m: dict, k: dict, wb: Array, tokens: Array, prefill: bool) -> dict[str, Op]:
    """Operators of one prefill pass (``tokens = batch * in_len``) or one decode step
    (``tokens = batch * queries``, ``queries`` positions per sequence: 1, or ``spec_len + 1``
    when verifying draft tokens).

    Per-layer operators are summed over ``n_layers``; ``lm_head`` runs on the last
    position of each sequence in prefill and on every decode position. ``wb`` is
    :func:`weight_bytes_per_param` of ``k``.
    """
    a_bits = k["a_bits"]
    b = k["batch"]
    lin = linear_operands(m, tokens, b if prefill else tokens)
    ops = {name: _linear(*lin[name], a_bits, wb) for name in LINEAR_OPS}
    pairs, act_per, kv_per, dec_pairs, kv_seq = attention_operands(m)
    if prefill:  # causal: QK^T and PV over L(L+1)/2 pairs
        flop, nbytes, act = fused(_prefill_attn_rows, 3, pairs, act_per, kv_per, b, k["in_len"], a_bits, k["kv_bits"])
        ops["attn"] = Op(flop, None, nbytes, None, act, 2.0 * m["n_layers"])
    else:  # every query position attends the cache; the cache is read once per step
        flop1, bytes0, bytes1, act = fused(_decode_attn_rows, 4, dec_pairs, act_per, kv_per, kv_seq, b, tokens, a_bits,
                                           k["kv_bits"])
        ops["attn"] = Op(0.0, flop1, bytes0, bytes1, act, 2.0 * m["n_layers"])
    ops["lm_head"] = _linear(*lin["lm_head"], a_bits, wb)
    return ops


@jit.kernel
def prefill_attn_at(pairs: float, act_per: float, kv_per: float, batch: float, in_len: float, a_bits: float,
                    kv_bits: float) -> tuple[float, float, float]:
    """``(flop, bytes, act_bytes)`` of causal prefill attention, one design (compiled)."""
    bl = batch * in_len
    a = (act_per * bl) * (a_bits / 8.0)
    return (pairs * bl) * (in_len + 1.0), (kv_per * bl) * (kv_bits / 8.0) + a, a


@jit.kernel
def _prefill_attn_rows(pairs, act_per, kv_per, batch, in_len, a_bits, kv_bits, flop, nbytes, act):  # noqa: ANN001
    for i in range(flop.shape[0]):
        flop[i], nbytes[i], act[i] = prefill_attn_at(jit.at(pairs, i), jit.at(act_per, i), jit.at(kv_per, i),
                                                     jit.at(batch, i), jit.at(in_len, i), jit.at(a_bits, i),
                                                     jit.at(kv_bits, i))


@jit.kernel
def decode_attn_at(pairs: float, act_per: float, kv_per: float, kv_seq: float, batch: float, tokens: float,
                   a_bits: float, kv_bits: float) -> tuple[float, float, float, float]:
    """``(flop1, bytes0, bytes1, act_bytes)`` of decode attention, one design (compiled)."""
    kv_b = kv_bits / 8.0
    a = (act_per * tokens) * (a_bits / 8.0)
    return pairs * tokens, (kv_per * tokens) * kv_b + a, (kv_seq * batch) * kv_b, a


@jit.kernel
def _decode_attn_rows(pairs, act_per, kv_per, kv_seq, batch, tokens, a_bits, kv_bits,  # noqa: ANN001
                      flop1, bytes0, bytes1, act):
    for i in range(flop1.shape[0]):
        flop1[i], bytes0[i], bytes1[i], act[i] = decode_attn_at(
            jit.at(pairs, i), jit.at(act_per, i), jit.at(kv_per, i), jit.at(kv_seq, i), jit.at(batch, i),
            jit.at(tokens, i), jit.at(a_bits, i), jit.at(kv_bits, i))


def draft_op(m: dict, k: dict, wb: Array) -> Op:
    """The ``spec_len`` draft-model steps of one verification step, as one weight-GEMV operator.

    The draft has ``spec_draft_frac`` of the target's weights (stored like them) and
    ``n_layers * sqrt(spec_draft_frac)`` layers (depth and width shrink together) of
    11 kernels each; its KV cache traffic is neglected.
    """
    g, b = k["spec_len"], k["batch"]
    params = k["spec_draft_frac"] * n_params(m)
    act = g * b * (2.0 * m["d_model"]) * (k["a_bits"] / 8.0)
    kernels = g * (11.0 * m["n_layers"] * np.sqrt(k["spec_draft_frac"]) + 2.0)
    return Op(2.0 * g * b * params, None, g * params * wb + act, None, act, kernels)


def stored_weight_bytes(m: dict, k: dict, wb: Array) -> Array:
    """Bytes of every weight the model stores, ``wb`` bytes each, the draft model included."""
    return fused(_stored_weight_rows, 1, n_params(m), wb, k["spec_len"], k["spec_draft_frac"])[0]


@jit.kernel
def stored_weight_bytes_at(params: float, wb: float, spec_len: float, spec_draft_frac: float) -> float:
    """:func:`stored_weight_bytes` of one design (compiled): ``params`` weights of ``wb`` bytes and the draft's."""
    return params * wb * (1.0 + (spec_draft_frac if spec_len > 0.0 else 0.0))


@jit.kernel
def _stored_weight_rows(params, wb, spec_len, spec_draft_frac, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = stored_weight_bytes_at(jit.at(params, i), jit.at(wb, i), jit.at(spec_len, i),
                                        jit.at(spec_draft_frac, i))


def memory_bytes(m: dict, k: dict, wb: Array) -> Array:
    """Footprint: weights (``wb`` bytes each, draft model included) + KV cache at full context
    + peak prefill activations + logits (one compiled pass)."""
    widest = np.maximum((m["n_heads"] + 2.0 * m["n_kv_heads"]) * m["head_dim"],
                        (1.0 + m["ffn_gated"]) * m["d_ff"] * m["n_experts_active"])
    return fused(_memory_rows, 1, n_params(m), wb, k["spec_len"], k["spec_draft_frac"],
                 2.0 * m["n_layers"] * m["n_kv_heads"] * m["head_dim"], k["batch"], k["in_len"], k["out_len"],
                 k["kv_bits"], m["d_model"] + widest, k["a_bits"], m["vocab_size"])[0]


@jit.kernel
def _memory_rows(params, wb, spec_len, spec_draft_frac, kv_per_token, batch, in_len, out_len, kv_bits,  # noqa: ANN001
                 act_width, a_bits, vocab, out):
    for i in range(out.shape[0]):
        b, length = jit.at(batch, i), jit.at(in_len, i)
        weights = stored_weight_bytes_at(jit.at(params, i), jit.at(wb, i), jit.at(spec_len, i),
                                         jit.at(spec_draft_frac, i))
        kv_cache = ((jit.at(kv_per_token, i) * b) * (length + jit.at(out_len, i))) * (jit.at(kv_bits, i) / 8.0)
        acts = ((b * length) * jit.at(act_width, i)) * (jit.at(a_bits, i) / 8.0)
        out[i] = ((weights + kv_cache) + acts) + (b * jit.at(vocab, i)) * 4.0
