"""Sharding: one replica's operators and footprint as the bottleneck device holds and runs them.

The mapping is :mod:`dse.model.parallel`'s (its module docstring: tensor, pipeline and expert
parallelism, placement, the last stage as the bottleneck): here are the per-device sizes
(:func:`shard_dims`), the factors from a replica's operator to one device's
(:func:`shard_factors`), the operators scaled by them (:func:`shard_ops`) and the busiest
device's memory (:func:`memory_bytes_per_device`). Pure functions of arrays or numbers.
"""

from __future__ import annotations

import functools

import numpy as np

from dse.model import jit
from dse.model.arrays import accumulate, fused, ndim
from dse.model.parallel import is_single_device, knob
from dse.model.workload import Array, Op, layer_params, stored_weight_bytes_at


def shard_dims(m: dict, k: dict) -> dict[str, Array]:
    """Per-device sizes on the bottleneck (last) stage for one micro-batch.

    ``heads``/``kv_heads``: ceil(heads / tp); ``layers``: ceil(n_layers / pp);
    ``experts``: ceil(E / ep) stored; ``token_frac``: the device's share of the replica's
    tokens in dense operators, ``1 / (ep * micro_batches)``; ``expert_token_frac``: its
    share of the routed expert work, ``experts / max(ep, E) / micro_batches``.
    """
    tp, ep, mb = knob(k, "tp"), knob(k, "ep"), knob(k, "micro_batches")
    experts = np.ceil(m["n_experts"] / ep)
    return {
        "heads": np.ceil(m["n_heads"] / tp),
        "kv_heads": np.ceil(m["n_kv_heads"] / tp),
        "layers": np.ceil(m["n_layers"] / knob(k, "pp")),
        "experts": experts,
        "token_frac": 1.0 / (ep * mb),
        "expert_token_frac": experts / np.maximum(ep, m["n_experts"]) / mb,
    }


def shard_factors(m: dict, k: dict) -> dict[str, dict[str, Array]]:
    """Per-operator factors from the replica's operator to one device's (last stage, one
    micro-batch): ``flop`` (flop0, flop1), ``store`` (the non-activation part of bytes0:
    weights, or the KV written by attention), ``kv`` (bytes1, the KV read by decode
    attention), ``act`` (activation bytes), ``act_less_store`` (``act - store``) and ``kernels``.
    All exactly 1 (0 for ``act_less_store``) on one device.
    """
    return shard_factors_of(m, k, shard_dims(m, k))


def shard_factors_of(m: dict, k: dict, s: dict[str, Array]) -> dict[str, dict[str, Array]]:
    """:func:`shard_factors` from the knobs' :func:`shard_dims` ``s``."""
    tp = knob(k, "tp")
    d, h, kv, hd = m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    hs, kvs, tok = s["heads"], s["kv_heads"], s["token_frac"]
    lf = s["layers"] / m["n_layers"]
    lt = lf * tok  # layers on this stage x this device's share of the tokens
    per_tp = 1.0 / tp
    q_kv = hs + 2.0 * kvs  # Q + K + V heads on the device
    qkv_store = lf * (q_kv / (h + 2.0 * kv))
    qkv_flop = qkv_store * tok
    head_frac = hs / h
    o_flop = lt * head_frac
    kv_tok = lt * (kvs / kv)
    ffn_width = (1.0 + m["ffn_gated"]) * m["d_ff"] * m["n_experts_active"]
    etok = s["expert_token_frac"]
    ffn_flop = lf * etok * per_tp
    v = m["vocab_size"]
    head_flop = tok * per_tp
    factors = {
        "qkv": {"flop": qkv_flop, "store": qkv_store, "kv": qkv_flop,
                "act": lt * ((d + q_kv * hd) / (d + (h + 2.0 * kv) * hd)), "kernels": lf},
        "o": {"flop": o_flop, "store": lf * head_frac, "kv": o_flop,
              "act": lt * ((hs * hd + 2.0 * d) / (h * hd + 2.0 * d)), "kernels": lf},
        "attn": {"flop": o_flop, "store": kv_tok, "kv": kv_tok,
                 "act": lt * ((hs + kvs) / (h + kv)), "kernels": lf},
        "ffn": {"flop": ffn_flop, "store": lf * (s["experts"] / m["n_experts"]) * per_tp, "kv": ffn_flop,
                "act": lf * (((2.0 * d) * tok + ffn_width * (etok * per_tp)) / (2.0 * d + ffn_width)),
                "kernels": lf},
        "lm_head": {"flop": head_flop, "store": per_tp, "kv": head_flop,
                    "act": tok * ((d + v * per_tp) / (d + v)), "kernels": 1.0},
        "draft": {"flop": head_flop, "store": per_tp, "kv": head_flop, "act": head_flop, "kernels": 1.0},
    }
    for f in factors.values():
        f["act_less_store"] = f["act"] - f["store"]
    return factors


def shard_op(op: Op, f: dict[str, Array], owned: bool = False, kernels: Array | None = None) -> Op:
    """One replica operator scaled to one device by the factors ``f`` of :func:`shard_factors`.

    ``bytes0 = store * (bytes0 - act) + act_factor * act``, written so that unit factors
    return the operands bit for bit (``act_less_store``: ``act - store``, computed once).
    ``owned``: the operator's arrays are the caller's temporaries, scaled in place;
    ``kernels``: its launches on the device where the caller has them.
    """
    scale = functools.partial(accumulate, op=np.multiply) if owned else np.multiply
    bytes0 = accumulate(scale(op.bytes0, f["store"]), op.act_bytes * f["act_less_store"])  # before act_bytes
    return Op(
        flop0=0.0 if _is_zero(op.flop0) else scale(op.flop0, f["flop"]),
        flop1=None if op.flop1 is None else scale(op.flop1, f["flop"]),
        bytes0=bytes0,
        bytes1=None if op.bytes1 is None else scale(op.bytes1, f["kv"]),
        act_bytes=scale(op.act_bytes, f["act"]),
        kernels=scale(op.kernels, f["kernels"]) if kernels is None else kernels,
    )


def shard_ops(ops: dict[str, Op], m: dict, k: dict, factors: dict[str, dict[str, Array]] | None = None,
              owned: bool = False, other_phase: dict[str, Op] | None = None) -> dict[str, Op]:
    """The operators of one replica pass (:func:`dse.model.workload.phase_ops`, ``draft_op``)
    as run by the bottleneck device: last pipeline stage, one micro-batch, its tp/ep share.

    ``factors``: :func:`shard_factors` of ``m, k`` when the caller already has them (both
    phases share one set; unit factors return the operands bit for bit). Without them, returns
    ``ops`` itself (same objects) when nothing is sharded. ``owned``: the operators' arrays are
    the caller's temporaries, scaled in place (:func:`shard_op`). ``other_phase``: the other
    phase's operators on the device, whose launches are taken as they are (an operator
    launches the same kernels per step in both phases).
    """
    if factors is None:
        if is_single_device(k):
            return dict(ops)
        factors = shard_factors(m, k)
    other = {} if other_phase is None else other_phase
    return {name: shard_op(op, factors[name], owned, getattr(other.get(name), "kernels", None))
            for name, op in ops.items()}


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
