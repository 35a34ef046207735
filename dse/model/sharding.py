"""Sharding: one replica's operators and footprint as the bottleneck device holds and runs them.

The mapping is :mod:`dse.model.parallel`'s (its module docstring: tensor, pipeline and expert
parallelism, placement, the last stage as the bottleneck): here are the per-device sizes
(:func:`shard_dims`), the factors from a replica's operator to one device's
(:func:`shard_factors`), the operators scaled by them (:func:`shard_ops`) and the busiest
device's memory (:func:`memory_bytes_per_device`). Pure functions of arrays or numbers.
"""

from __future__ import annotations

import numpy as np

from dse.model import jit
from dse.model.arrays import fused, ndim
from dse.model.parallel import is_single_device, knob
from dse.model.workload import (
    LINEAR_OPS,
    Array,
    Op,
    attention_operands,
    decode_attn_at,
    draft_op,
    layer_params,
    linear_at,
    linear_operands,
    prefill_attn_at,
    stored_weight_bytes_at,
)


def shard_dims(m: dict, k: dict) -> dict[str, Array]:
    """Per-device sizes on the bottleneck (last) stage for one micro-batch.

    ``heads``/``kv_heads``: ceil(heads / tp); ``layers``: ceil(n_layers / pp);
    ``experts``: ceil(E / ep) stored; ``token_frac``: the device's share of the replica's
    tokens in dense operators, ``1 / (ep * micro_batches)``; ``expert_token_frac``: its
    share of the routed expert work, ``experts / max(ep, E) / micro_batches``.
    """
    names = ("heads", "kv_heads", "layers", "experts", "token_frac", "expert_token_frac")
    return dict(zip(names, fused(_dims_rows, len(names), knob(k, "tp"), knob(k, "pp"), knob(k, "ep"),
                                 knob(k, "micro_batches"), m["n_heads"], m["n_kv_heads"], m["n_layers"],
                                 m["n_experts"]), strict=True))


@jit.kernel
def _dims_rows(tp, pp, ep, mb, n_heads, n_kv_heads, n_layers, n_experts,  # noqa: ANN001
               heads, kv_heads, layers, experts, token_frac, expert_token_frac):
    for i in range(heads.shape[0]):
        t, e, m, n_e = jit.at(tp, i), jit.at(ep, i), jit.at(mb, i), jit.at(n_experts, i)
        stored = np.ceil(n_e / e)
        heads[i] = np.ceil(jit.at(n_heads, i) / t)
        kv_heads[i] = np.ceil(jit.at(n_kv_heads, i) / t)
        layers[i] = np.ceil(jit.at(n_layers, i) / jit.at(pp, i))
        experts[i] = stored
        token_frac[i] = 1.0 / (e * m)
        expert_token_frac[i] = stored / np.maximum(e, n_e) / m


def shard_factors(m: dict, k: dict) -> dict[str, dict[str, Array]]:
    """Per-operator factors from the replica's operator to one device's (last stage, one
    micro-batch): ``flop`` (flop0, flop1), ``store`` (the non-activation part of bytes0:
    weights, or the KV written by attention), ``kv`` (bytes1, the KV read by decode
    attention), ``act`` (activation bytes) and ``kernels``. All exactly 1 on one device.
    """
    return shard_factors_of(m, k, shard_dims(m, k))


def shard_factors_of(m: dict, k: dict, s: dict[str, Array]) -> dict[str, dict[str, Array]]:
    """:func:`shard_factors` from the knobs' :func:`shard_dims` ``s`` (one compiled pass per operator,
    :func:`factors_at`)."""
    args = _factor_args(m, k, s)
    factors = {}
    for name, code in OP_CODES.items():
        flop, store, kv, act, kernels = fused(_factor_rows, 5, code, *args)
        factors[name] = {"flop": flop, "store": store, "kv": kv, "act": act, "kernels": kernels}
    return factors


OP_CODES: dict[str, int] = {"qkv": 0, "o": 1, "attn": 2, "ffn": 3, "lm_head": 4, "draft": 5}  # inside kernels
OP_CODES_ATTN = OP_CODES["attn"]


def _factor_args(m: dict, k: dict, s: dict[str, Array]) -> tuple[Array, ...]:
    """The arguments of :func:`factors_at` but the operator's code."""
    return (knob(k, "tp"), s["heads"], s["kv_heads"], s["layers"], s["experts"], s["token_frac"],
            s["expert_token_frac"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"], m["n_layers"],
            m["n_experts"], m["ffn_gated"], m["d_ff"], m["n_experts_active"], m["vocab_size"])


@jit.kernel
def factors_at(code: int, fargs: tuple, i: int) -> tuple[float, float, float, float, float]:
    """``(flop, store, kv, act, kernels)`` factors of operator ``code`` (:data:`OP_CODES`) of design ``i``
    (:func:`shard_factors`) from the factor arguments ``fargs`` (:func:`_factor_args`: ``tp``, the
    knobs' :func:`shard_dims`, the model card's fields; numbers or arrays). ``lf``: the stage's share
    of the layers, ``lt`` that times the device's share of the tokens."""
    tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts, gated, d_ff, n_active, vocab = fargs
    tp, hs, kvs, layers, experts, tok = (jit.at(tp, i), jit.at(hs, i), jit.at(kvs, i), jit.at(layers, i),
                                         jit.at(experts, i), jit.at(tok, i))
    etok, d, h, kv, hd, n_layers = (jit.at(etok, i), jit.at(d, i), jit.at(h, i), jit.at(kv, i), jit.at(hd, i),
                                    jit.at(n_layers, i))
    n_experts, gated, d_ff, n_active, vocab = (jit.at(n_experts, i), jit.at(gated, i), jit.at(d_ff, i),
                                               jit.at(n_active, i), jit.at(vocab, i))
    if code >= 4:  # the LM head (and the draft model) once, on the last stage, vocabulary split by tp
        per_tp = 1.0 / tp
        head_flop = tok * per_tp
        act = tok * ((d + vocab * per_tp) / (d + vocab)) if code == 4 else head_flop
        return head_flop, per_tp, head_flop, act, 1.0
    lf = layers / n_layers
    lt = lf * tok
    if code == 0:  # Q + K + V heads on the device
        q_kv = hs + 2.0 * kvs
        store = lf * (q_kv / (h + 2.0 * kv))
        flop = store * tok
        return flop, store, flop, lt * ((d + q_kv * hd) / (d + (h + 2.0 * kv) * hd)), lf
    if code == 1:
        head_frac = hs / h
        flop = lt * head_frac
        return flop, lf * head_frac, flop, lt * ((hs * hd + 2.0 * d) / (h * hd + 2.0 * d)), lf
    if code == 2:  # Q heads compute, KV heads store and read
        flop = lt * (hs / h)
        kv_tok = lt * (kvs / kv)
        return flop, kv_tok, kv_tok, lt * ((hs + kvs) / (h + kv)), lf
    per_tp = 1.0 / tp  # the FFN: experts split by ep, each by tp
    width = (1.0 + gated) * d_ff * n_active
    flop = lf * etok * per_tp
    act = lf * (((2.0 * d) * tok + width * (etok * per_tp)) / (2.0 * d + width))
    return flop, lf * (experts / n_experts) * per_tp, flop, act, lf


@jit.kernel
def _factor_rows(code, tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts,  # noqa: ANN001
                 gated, d_ff, n_active, vocab, flop, store, kv_out, act, kernels):
    fargs = (tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts, gated, d_ff, n_active, vocab)
    for i in range(flop.shape[0]):
        flop[i], store[i], kv_out[i], act[i], kernels[i] = factors_at(code, fargs, i)


def shard_ops(ops: dict[str, Op], m: dict, k: dict, s: dict[str, Array] | None = None,
              other_phase: dict[str, Op] | None = None) -> dict[str, Op]:
    """The operators of one replica pass (:func:`dse.model.workload.phase_ops`, ``draft_op``)
    as run by the bottleneck device: last pipeline stage, one micro-batch, its tp/ep share.

    ``s``: :func:`shard_dims` of ``m, k`` when the caller has them. Without them, returns ``ops``
    itself (same objects) when nothing is sharded; with them, unit factors return the operands bit
    for bit. ``other_phase``: the other phase's operators on the device, whose launches are taken as
    they are (an operator launches the same kernels per step in both phases). One compiled pass per
    operator (:func:`shard_op`).
    """
    if s is None:
        if is_single_device(k):
            return dict(ops)
        s = shard_dims(m, k)
    args = _factor_args(m, k, s)
    other = {} if other_phase is None else other_phase
    return {name: shard_op(op, OP_CODES[name], args, getattr(other.get(name), "kernels", None))
            for name, op in ops.items()}


def shard_op(op: Op, code: int, args: tuple[Array, ...], kernels: Array | None = None) -> Op:
    """One replica operator (:data:`OP_CODES` ``code``) scaled to one device, its factors
    (:func:`factors_at` of ``args``, :func:`_factor_args`) formed in the pass and never stored.
    ``bytes0 = store * (bytes0 - act) + act_factor * act``, written so that unit factors return the
    operands bit for bit. ``kernels``: its launches on the device where the caller has them."""
    if op.flop1 is None:
        flop0, bytes0, act, launches = fused(_shard_rows, 4, code, *args, op.flop0, op.bytes0, op.act_bytes,
                                             op.kernels, 0.0)
        return Op(0.0 if _is_zero(op.flop0) else flop0, None, bytes0, None, act,
                  launches if kernels is None else kernels)
    flop1, bytes0, act, launches, bytes1 = fused(_shard_rows, 5, code, *args, op.flop1, op.bytes0, op.act_bytes,
                                                 op.kernels, op.bytes1)
    return Op(op.flop0, flop1, bytes0, bytes1, act, launches if kernels is None else kernels)


@jit.kernel
def _shard_rows(code, tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts,  # noqa: ANN001
                gated, d_ff, n_active, vocab, flop, nbytes, act, kernels, kv_bytes, *outs):
    """:func:`shard_op` over the designs: ``flop`` (flop0, or flop1 of a context-dependent operator),
    ``bytes0``, ``act_bytes``, ``kernels`` and, with a fifth output, ``bytes1`` (``kv_bytes``)."""
    xs = (tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts, gated, d_ff, n_active, vocab,
          flop, nbytes, act, kernels, kv_bytes)
    if len(outs) == 5:
        _shard_code_rows(code, xs, (outs[0], outs[1], outs[2], outs[3], outs[4]), True)
    else:  # the first output stands in for the fifth, unwritten
        _shard_code_rows(code, xs, (outs[0], outs[1], outs[2], outs[3], outs[0]), False)


@jit.kernel
def _shard_code_rows(code, xs, outs, with_kv):  # noqa: ANN001
    """One loop per operator code, each with the code and ``with_kv`` constants (the factors'
    branches fold away)."""
    if code == 0.0:
        _shard_loop(0, xs, outs, with_kv)
    elif code == 1.0:
        _shard_loop(1, xs, outs, with_kv)
    elif code == 2.0:
        _shard_loop(2, xs, outs, with_kv)
    elif code == 3.0:
        _shard_loop(3, xs, outs, with_kv)
    elif code == 4.0:
        _shard_loop(4, xs, outs, with_kv)
    else:
        _shard_loop(5, xs, outs, with_kv)


@jit.inlined
def _shard_loop(code, xs, outs, with_kv):  # noqa: ANN001
    fargs = xs[:17]
    flop, nbytes, act, kernels, kv_bytes = xs[17:]
    flop_out, bytes_out, act_out, kernels_out, kv_out = outs
    for i in range(flop_out.shape[0]):
        f_flop, f_store, f_kv, f_act, f_kernels = factors_at(code, fargs, i)
        flop_out[i], bytes_out[i], act_out[i] = scale_at(jit.at(flop, i), jit.at(nbytes, i), jit.at(act, i), f_flop,
                                                         f_store, f_act)
        kernels_out[i] = jit.at(kernels, i) * f_kernels
        if with_kv:
            kv_out[i] = jit.at(kv_bytes, i) * f_kv


@jit.kernel
def scale_at(flop: float, nbytes: float, act: float, f_flop: float, f_store: float,
             f_act: float) -> tuple[float, float, float]:
    """``(flop, bytes0, act_bytes)`` of one operator on the device from the replica's, one design
    (compiled): ``bytes0 = store * (bytes0 - act) + act_factor * act``, written so that unit factors
    return the operands bit for bit."""
    return flop * f_flop, nbytes * f_store + act * (f_act - f_store), act * f_act


def device_ops(m: dict, k: dict, wb: Array, s: dict[str, Array], dec_tokens: Array, draft: bool,
               ) -> tuple[dict[str, Op], dict[str, Op], Array]:
    """The prefill and decode operators (:func:`dse.model.workload.phase_ops`; with ``draft``, the
    decode's ``draft_op``) as the bottleneck device runs them, from the knobs' :func:`shard_dims` ``s``:
    :func:`shard_ops` of both phases, bit for bit, with each operator built and scaled in one compiled
    pass for both phases (its factors formed once, the replica's operator never stored). ``dec_tokens``:
    the replica's tokens in a decode step. Third: decode attention's KV read per kernel launch on the
    device relative to the replica's (:func:`shard_factors`' attention ``kv / kernels``: its (sequence,
    KV head) streams per sequence and KV head of the replica), from the same pass."""
    b, a_bits, kv_bits = k["batch"], k["a_bits"], k["kv_bits"]
    pre_lin, dec_lin = linear_operands(m, b * k["in_len"], b), linear_operands(m, dec_tokens, dec_tokens)
    args = _factor_args(m, k, s)
    pre: dict[str, Op] = {}
    dec: dict[str, Op] = {}

    def linear(name: str) -> None:
        layers, pre_tokens, pre_params, flop_params, act_elems, kernels = pre_lin[name]
        dec_params = dec_lin[name][2]
        pf, pb, pa, launches, df, db, da = fused(
            _device_linear_rows, 7, OP_CODES[name], *args, layers, pre_tokens, dec_lin[name][1], pre_params,
            dec_params, flop_params, act_elems, layers * kernels, a_bits, wb)
        pre[name], dec[name] = Op(pf, None, pb, None, pa, launches), Op(df, None, db, None, da, launches)

    for name in LINEAR_OPS:
        linear(name)
    pairs, act_per, kv_per, dec_pairs, kv_seq = attention_operands(m)
    pf, pb, pa, launches, df1, db0, db1, da, kv_per_launch = fused(
        _device_attn_rows, 9, *args, pairs, act_per, kv_per, dec_pairs, kv_seq, b, k["in_len"], dec_tokens, a_bits,
        kv_bits, 2.0 * m["n_layers"])
    pre["attn"], dec["attn"] = Op(pf, None, pb, None, pa, launches), Op(0.0, df1, db0, db1, da, launches)
    linear("lm_head")
    if draft:
        dec["draft"] = shard_op(draft_op(m, k, wb), OP_CODES["draft"], args)
    return pre, dec, kv_per_launch


@jit.kernel
def _device_linear_rows(code, tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers,  # noqa: ANN001
                        n_experts, gated, d_ff, n_active, vocab, op_layers, pre_tokens, dec_tokens, pre_params,
                        dec_params, flop_params, act_elems, launches, a_bits, wb, *outs):
    """A weight GEMM of both phases on the device (:func:`device_ops`): ``(flop0, bytes0, act_bytes)`` of
    prefill, its ``kernels``, then decode's ``(flop0, bytes0, act_bytes)``; one loop per operator code."""
    xs = (tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts, gated, d_ff, n_active, vocab,
          op_layers, pre_tokens, dec_tokens, pre_params, dec_params, flop_params, act_elems, launches, a_bits, wb)
    if code == 0.0:
        _device_linear_loop(0, xs, outs)
    elif code == 1.0:
        _device_linear_loop(1, xs, outs)
    elif code == 3.0:
        _device_linear_loop(3, xs, outs)
    else:
        _device_linear_loop(4, xs, outs)


@jit.inlined
def _device_linear_loop(code, xs, outs):  # noqa: ANN001
    fargs = xs[:17]
    op_layers, pre_tokens, dec_tokens, pre_params, dec_params, flop_params, act_elems, launches, a_bits, wb = xs[17:]
    pre_flop, pre_bytes, pre_act, kernels_out, dec_flop, dec_bytes, dec_act = outs
    for i in range(pre_flop.shape[0]):
        f_flop, f_store, _, f_act, f_kernels = factors_at(code, fargs, i)
        nl, fp, ae, ab, w = (jit.at(op_layers, i), jit.at(flop_params, i), jit.at(act_elems, i), jit.at(a_bits, i),
                             jit.at(wb, i))
        flop, nbytes, act = linear_at(nl, jit.at(pre_tokens, i), jit.at(pre_params, i), fp, ae, ab, w)
        pre_flop[i], pre_bytes[i], pre_act[i] = scale_at(flop, nbytes, act, f_flop, f_store, f_act)
        kernels_out[i] = jit.at(launches, i) * f_kernels
        flop, nbytes, act = linear_at(nl, jit.at(dec_tokens, i), jit.at(dec_params, i), fp, ae, ab, w)
        dec_flop[i], dec_bytes[i], dec_act[i] = scale_at(flop, nbytes, act, f_flop, f_store, f_act)


@jit.kernel
def _device_attn_rows(tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts,  # noqa: ANN001
                      gated, d_ff, n_active, vocab, pairs, act_per, kv_per, dec_pairs, kv_seq, batch, in_len,
                      dec_tokens, a_bits, kv_bits, launches, pre_flop, pre_bytes, pre_act, kernels_out, dec_flop1,
                      dec_bytes0, dec_bytes1, dec_act, kv_per_launch):
    """Attention of both phases on the device (:func:`device_ops`): prefill's ``(flop0, bytes0,
    act_bytes)``, its ``kernels``, then decode's ``(flop1, bytes0, bytes1, act_bytes)`` and its KV read per
    launch (``kv / kernels``)."""
    fargs = (tp, hs, kvs, layers, experts, tok, etok, d, h, kv, hd, n_layers, n_experts, gated, d_ff, n_active, vocab)
    for i in range(pre_flop.shape[0]):
        f_flop, f_store, f_kv, f_act, f_kernels = factors_at(OP_CODES_ATTN, fargs, i)
        ap, kp, b = jit.at(act_per, i), jit.at(kv_per, i), jit.at(batch, i)
        ab, kb = jit.at(a_bits, i), jit.at(kv_bits, i)
        flop, nbytes, act = prefill_attn_at(jit.at(pairs, i), ap, kp, b, jit.at(in_len, i), ab, kb)
        pre_flop[i], pre_bytes[i], pre_act[i] = scale_at(flop, nbytes, act, f_flop, f_store, f_act)
        kernels_out[i] = jit.at(launches, i) * f_kernels
        flop1, nbytes, kv_read, act = decode_attn_at(jit.at(dec_pairs, i), ap, kp, jit.at(kv_seq, i), b,
                                                     jit.at(dec_tokens, i), ab, kb)
        dec_flop1[i], dec_bytes0[i], dec_act[i] = scale_at(flop1, nbytes, act, f_flop, f_store, f_act)
        dec_bytes1[i] = kv_read * f_kv
        kv_per_launch[i] = f_kv / f_kernels


def memory_bytes_per_device(m: dict, k: dict, wb: Array) -> Array:
    """Footprint of the busiest device, bytes: its stage's weights (tp/ep shares; the first
    and last stage each hold one vocabulary matrix when pp > 1) + its KV cache (layers / pp,
    KV heads / tp, sequences / ep) + peak prefill activations of a micro-batch + logits.
    Equals :func:`dse.model.workload.memory_bytes` on one device, bit for bit.
    """
    return memory_bytes_of(m, k, wb, shard_dims(m, k))


def memory_bytes_of(m: dict, k: dict, wb: Array, s: dict[str, Array]) -> Array:
    """:func:`memory_bytes_per_device` from the knobs' :func:`shard_dims` ``s`` (one compiled pass)."""
    p = layer_params(m)
    return fused(_memory_rows, 1, knob(k, "tp"), knob(k, "pp"), knob(k, "ep"), knob(k, "micro_batches"), m["d_model"],
                 m["n_heads"], m["n_kv_heads"], m["head_dim"], m["n_experts"], m["vocab_size"], m["tied_embeddings"],
                 m["ffn_gated"], m["d_ff"], m["n_experts_active"], p["qkv"], p["o"], p["ffn_expert"], p["router"],
                 wb, k["spec_len"], k["spec_draft_frac"], k["in_len"], k["out_len"], k["batch"], k["kv_bits"],
                 k["a_bits"], s["heads"], s["kv_heads"], s["layers"], s["experts"])[0]


@jit.kernel
def _memory_rows(tp, pp, ep, mb, d_model, n_heads, n_kv_heads, head_dim, n_experts, vocab, tied,  # noqa: ANN001
                 ffn_gated, d_ff, n_active, p_qkv, p_o, p_ffn_expert, p_router, wb, spec_len, spec_draft_frac,
                 in_len, out_len, batch, kv_bits, a_bits, heads, kv_heads, layers, experts, out):
    for i in range(out.shape[0]):
        tp_i, d, hd = jit.at(tp, i), jit.at(d_model, i), jit.at(head_dim, i)
        e, v, h, kv = jit.at(n_experts, i), jit.at(vocab, i), jit.at(n_heads, i), jit.at(n_kv_heads, i)
        hs, kvs, nl = jit.at(heads, i), jit.at(kv_heads, i), jit.at(layers, i)
        q_kv = hs + 2.0 * kvs  # Q + K + V heads on the device
        qkv = jit.at(p_qkv, i) * (q_kv / (h + 2.0 * kv))
        o = jit.at(p_o, i) * (hs / h)
        expert_params = (jit.at(p_ffn_expert, i) * e) * ((jit.at(experts, i) / e) / tp_i)
        per_layer = qkv + o + expert_params + jit.at(p_router, i)
        embed = v * d / tp_i
        params = nl * per_layer + embed * (1.0 if jit.at(pp, i) > 1.0 else 2.0 - jit.at(tied, i))
        weights = stored_weight_bytes_at(params, jit.at(wb, i), jit.at(spec_len, i), jit.at(spec_draft_frac, i))
        n_in = jit.at(in_len, i)
        seqs = jit.at(batch, i) / jit.at(ep, i)
        kv_cache = 2.0 * nl * kvs * hd * seqs * (n_in + jit.at(out_len, i)) * (jit.at(kv_bits, i) / 8.0)
        ffn = jit.at(n_active, i)
        widest = np.maximum(q_kv * hd, (1.0 + jit.at(ffn_gated, i)) * jit.at(d_ff, i) * ffn / tp_i)
        acts = seqs / jit.at(mb, i) * n_in * (widest + d) * (jit.at(a_bits, i) / 8.0)
        logits = seqs * (v / tp_i) * 4.0
        out[i] = weights + kv_cache + acts + logits


def _is_zero(x: Array) -> bool:
    return ndim(x) == 0 and x == 0.0
