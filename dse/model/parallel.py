"""Parallel mapping: tensor, pipeline, expert and data parallelism over several devices.

Pure numpy over dicts of arrays. ``m``: model-card fields, ``k``: knobs, ``sys``: system
fields (:data:`dse.model.collectives.SYSTEM_FIELD_DEFAULTS`). Knobs read here:

=====================  ====================================================================
``tp``                 tensor-parallel degree (Megatron-LM: Shoeybi et al., arXiv 1909.08053)
``pp``                 pipeline stages (layers split in contiguous blocks)
``ep``                 expert-parallel groups (below)
``dp``                 independent replicas (no communication in inference)
``micro_batches``      micro-batches the batch is split into for the pipeline
``comm_overlap_frac``  share of the shorter of (compute, communication) hidden under the other
``collective_algo``    :data:`dse.model.collectives.ALGO_CODES` (ring by default, as NCCL)
=====================  ====================================================================

**Devices.** ``n_devices = tp * pp * ep * dp``. One model replica is ``tp * pp * ep``
devices; ``batch`` is the replica's batch, so system throughput is ``dp`` replicas' worth.
Placement: tp innermost (contiguous), then ep, then pp, then dp.

**How ep combines with tp.** A pipeline stage has ``tp * ep`` devices: ``ep`` groups of
``tp``. Attention and every dense operator are tensor-parallel within a group and
data-parallel across the ``ep`` groups (each group serves ``batch / ep`` sequences). The
MoE FFN is expert-parallel across groups (a device stores ``ceil(E / ep)`` experts; with
``ep > E`` an expert is replicated and its tokens split) and each expert is
tensor-parallel over the group's ``tp`` devices (Megatron-Core "expert tensor parallel" =
tp; DeepSeek-V3-style attention DP + MoE EP). Tokens are dispatched to their experts'
groups and combined back by two all-to-alls per MoE layer of ``tokens * top_k * d_model``
activations (each device sends its ``1/tp`` share). For a dense model (E = 1) ``ep`` is
plain data parallelism inside the replica and sends nothing.

**Tensor parallelism** (Megatron): Q heads split ``ceil(n_heads / tp)`` per device, KV
heads ``ceil(n_kv_heads / tp)`` (when ``n_kv_heads < tp`` each device keeps one KV head,
replicated ``tp / n_kv_heads`` times), FFN columns/rows and the vocabulary split by tp.
Per layer two all-reduces of ``tokens * d_model * r_bytes`` (after the attention output
projection and after the FFN), one for the vocabulary-parallel embedding and one
all-gather of the logits per pass. ``r_bytes`` is the residual stream's element size,
``max(a_bits, 16) / 8``: serving stacks quantise activations to FP8/INT8/FP4 at each GEMM's
input but keep the hidden state, and so the collectives, sends and all-to-alls that carry it,
in the model's 16-bit type (vLLM's custom all-reduce and NCCL calls on the bf16/fp16
residual; TensorRT-LLM's default all-reduce the same; FP8 dispatch/all-reduce are opt-in
kernels not modelled).

**Pipeline** (GPipe, Huang et al. 2019; the bubble of Narayanan et al., SC'21): stages of
``ceil(n_layers / pp)`` layers; the last stage also runs the LM head and is the
bottleneck. Between stages a point-to-point send of the micro-batch's activations,
``tokens * d_model * r_bytes / tp`` per device (Megatron's scatter/gather optimisation).
With stage time ``t`` per micro-batch, head time ``h``, ``m`` micro-batches, ``p`` stages
and the boundary sends on the path ``P`` (slowest one ``q``):

* prefill: ``p t - (p-1) h + P + (m-1) max(t, q)``; bubble ``(p-1)/(m+p-1)`` when P = 0;
* decode step of the whole batch: ``max(p t - (p-1) h + P, m t)``: a token crosses every
  stage in turn (latency = sum of stages), and micro-batches in flight keep the stages
  busy, so throughput rises with ``m`` where the stage time shrinks with the micro-batch.

Applied to phase totals (decode summed over steps), the max picks one regime for the
whole phase; exact unless the decode crosses between them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dse.model import collectives as coll
from dse.model import jit
from dse.model.arrays import any_rows, fused, ndim, scale
from dse.model.workload import Array
from dse.spec.registry import KNOB_DEFAULTS

PARALLEL_KNOBS: tuple[str, ...] = ("tp", "pp", "ep", "dp", "micro_batches", "comm_overlap_frac", "collective_algo")
PARALLEL_KNOB_DEFAULTS: dict[str, float] = {name: KNOB_DEFAULTS[name] for name in PARALLEL_KNOBS}  # the registry's
_SHARDING_KNOBS: tuple[str, ...] = ("tp", "pp", "ep", "micro_batches")


def knob(k: dict, name: str) -> Array:
    """``k[name]`` or its default from :data:`PARALLEL_KNOB_DEFAULTS`."""
    return k.get(name, PARALLEL_KNOB_DEFAULTS[name])


def is_single_device(k: dict) -> bool:
    """True when no design of the batch shards anything (tp = pp = ep = micro_batches = 1)."""
    for name in _SHARDING_KNOBS:
        value = knob(k, name)
        if not (value == 1.0 if isinstance(value, float) else np.all(value == 1.0)):  # floats: no numpy call
            return False
    return True


def n_devices(k: dict) -> Array:
    """Devices in the system: ``tp * pp * ep * dp``."""
    return knob(k, "tp") * knob(k, "pp") * knob(k, "ep") * knob(k, "dp")



RESIDUAL_MIN_BITS = 16.0  # the hidden state between layers stays in the model's 16-bit type (module docstring)


def stage_comm(m: dict, k: dict, sys: dict, tokens: Array, head_tokens: Array) -> dict[str, Array]:
    """Communication of one pass (prefill, or one decode step) of the replica's batch.

    ``tokens``: the replica's tokens in the pass (``batch * in_len``, or ``batch * queries``
    per decode step, > 0); ``head_tokens``: tokens entering the LM head (``batch`` in prefill).
    Returns, for the bottleneck stage and one micro-batch: ``tp_s`` (the tp collectives),
    ``ep_s`` (the MoE all-to-alls), ``comm_s`` (their sum, to overlap with the stage's
    compute), ``p2p_s`` (the slowest stage-to-stage send) and ``p2p_path_s`` (all pp - 1
    sends a micro-batch makes); and for the whole replica (``tp * pp * ep`` devices; the
    ``dp`` replicas are counted by the caller) and all micro-batches of the pass:
    ``intra_bytes``, ``inter_bytes`` (sent on node links / the network) and ``energy_j``
    (link energy). A shared fabric is shared by every device of the system (``dp`` included).
    """
    return stage_comms(m, k, sys, ((tokens, head_tokens),))[0]


def stage_comms(m: dict, k: dict, sys: dict, passes: tuple[tuple[Array, Array], ...]) -> list[dict[str, Array]]:
    """:func:`stage_comm` of each ``(tokens, head_tokens)`` of ``passes``: the mapping, the groups
    and their links (:func:`comm_plan`) are set up once."""
    plan = comm_plan(m, k, sys)
    return [pass_comm(plan, sys, tokens, head_tokens) for tokens, head_tokens in passes]


class CommPlan(NamedTuple):
    """What the communication of every pass shares (:func:`comm_plan`); ``*_per_token``: per
    token of the replica's pass. ``hidden_bytes_per_token``: one micro-batch of one ep group's
    hidden state; ``gather_bytes_per_token``: its logits (per LM-head token); ``tp``, ``ep``: the
    groups of the tp collectives and of the MoE all-to-alls (None: no design dispatches tokens,
    and ``a2a_frac``, ``n_a2a`` are 0); ``a2a_frac``: the all-to-all's buffer per hidden byte;
    ``n_ar``, ``n_a2a``: all-reduces and all-to-alls per pass; ``p2p_s``, ``p2p_path_s``:
    ``(latency, seconds per token)`` of the slowest send and of all pp - 1 sends;
    ``near_sends_per_token``, ``far_sends_per_token``: the replica's send bytes on node links and
    on the network; ``runs``: devices x micro-batches."""

    hidden_bytes_per_token: Array
    gather_bytes_per_token: Array
    tp: coll.Setup
    ep: coll.Setup | None
    a2a_frac: Array
    n_ar: Array
    n_a2a: Array
    p2p_s: tuple[Array, Array]
    p2p_path_s: tuple[Array, Array]
    near_sends_per_token: Array
    far_sends_per_token: Array
    runs: Array


def comm_plan(m: dict, k: dict, sys: dict, dims: dict[str, Array] | None = None) -> CommPlan:
    """The :class:`CommPlan` of the knobs ``k`` on ``sys``: everything of :func:`stage_comm` but the
    tokens. ``dims``: :func:`dse.model.sharding.shard_dims` of ``m, k`` where the caller has them (layers,
    token share)."""
    tp, pp, ep, mb = knob(k, "tp"), knob(k, "pp"), knob(k, "ep"), knob(k, "micro_batches")
    algo = knob(k, "collective_algo")
    if dims is None:
        layers, token_frac = np.ceil(m["n_layers"] / pp), 1.0 / (ep * mb)
    else:
        layers, token_frac = dims["layers"], dims["token_frac"]
    hidden, gather, n_ar, runs = fused(_plan_rows, 4, token_frac, k["a_bits"], m["d_model"], m["vocab_size"], layers,
                                       tp, pp, ep, mb)
    per_node = coll.field(sys, "n_devices_per_node")
    shared = any_rows(coll.field(sys, "fabric_bw_bytes_per_s") > 0.0)
    sharing = np.minimum(n_devices(k), per_node) if shared else None  # devices on a shared fabric at once
    tp_group = coll.setup(tp, sys, algo, n_sharing=sharing)

    moe = m["n_experts"] > 1.0
    ep_group, a2a_frac, n_a2a = None, 0.0, 0.0
    if any_rows(moe) and any_rows(moe & (ep > 1.0)):
        ep_members = np.where(moe, ep, 1.0)
        ep_per_node = np.clip(np.floor(per_node / tp), 1.0, ep_members)
        ep_group = coll.setup(ep_members, sys, algo, n_per_node=ep_per_node, n_sharing=sharing)
        a2a_frac, n_a2a = m["n_experts_active"] / tp, 2.0 * layers

    p2p_s = p2p_path_s = (0.0, 0.0)  # one stage everywhere: no sends
    near_sends = far_sends = 0.0
    if any_rows(pp > 1.0):
        near, far = coll.intra_link(sys, 2.0), coll.inter_link(sys)  # a pair's link, the network
        lat, per_token, path_lat, path_per_token, near_sends, far_sends = fused(
            _sends_rows, 6, pp, tp, ep, mb, hidden, per_node, near.lat_s, *coll.link_args(near), far.lat_s,
            *coll.link_args(far))
        p2p_s, p2p_path_s = (lat, per_token), (path_lat, path_per_token)
    return CommPlan(hidden, gather, tp_group, ep_group, a2a_frac, n_ar, n_a2a, p2p_s, p2p_path_s, near_sends,
                    far_sends, runs)


@jit.kernel
def _plan_rows(token_frac, a_bits, d_model, vocab, layers, tp, pp, ep, mb, hidden, gather, n_ar, runs):  # noqa: ANN001
    """The per-token bytes of :class:`CommPlan` (the residual stream's element: ``max(a_bits, 16) /
    8`` bytes), its all-reduces per pass (+ the embedding's on the first stage) and its runs."""
    for i in range(hidden.shape[0]):
        frac, pp_i = jit.at(token_frac, i), jit.at(pp, i)
        r_bytes = np.maximum(jit.at(a_bits, i), RESIDUAL_MIN_BITS) / 8.0
        hidden[i] = frac * (jit.at(d_model, i) * r_bytes)  # one token's hidden state, one micro-batch of one ep group
        gather[i] = frac * (jit.at(vocab, i) * r_bytes)
        n_ar[i] = 2.0 * jit.at(layers, i) + (1.0 if pp_i <= 1.0 else 0.0)
        runs[i] = jit.at(tp, i) * pp_i * jit.at(ep, i) * jit.at(mb, i)


@jit.kernel
def _sends_rows(pp, tp, ep, mb, hidden, per_node, near_lat, near_bw, near_rbw, near_recip, far_lat, far_bw,  # noqa: ANN001
                far_rbw, far_recip, lat, per_token, path_lat, path_per_token, near_sends, far_sends):
    """The stage sends of :class:`CommPlan`: a micro-batch's activations ``hidden / tp`` per token and
    device; ``n_cross`` of the pp - 1 boundaries lie between nodes (on the network, where any design
    of the batch has one), the others on the node's links."""
    xs = (pp, tp, ep, mb, hidden, per_node, near_lat, near_bw, near_rbw, near_recip, far_lat, far_bw, far_rbw,
          far_recip)
    outs = (lat, per_token, path_lat, path_per_token, near_sends, far_sends)
    for i in range(lat.shape[0]):
        boundaries = jit.at(pp, i) - 1.0
        if np.minimum(boundaries, np.floor(boundaries * (jit.at(tp, i) * jit.at(ep, i)) / jit.at(per_node, i))) > 0.0:
            _sends_loop(xs, outs, True)
            return
    _sends_loop(xs, outs, False)


@jit.inlined
def _sends_loop(xs, outs, any_cross):  # noqa: ANN001
    """The rows of :func:`_sends_rows` (``any_cross``: a constant), without a branch."""
    pp, tp, ep, mb, hidden, per_node, near_lat, near_bw, near_rbw, near_recip, far_lat, far_bw, far_rbw, far_recip = xs
    lat, per_token, path_lat, path_per_token, near_sends, far_sends = outs
    for i in range(lat.shape[0]):
        pp_i, tp_i = jit.at(pp, i), jit.at(tp, i)
        p2p_bytes = jit.at(hidden, i) / tp_i
        boundaries = pp_i - 1.0
        stage_devices = tp_i * jit.at(ep, i)
        n_cross = np.minimum(boundaries, np.floor(boundaries * stage_devices / jit.at(per_node, i)))
        n_near = boundaries - n_cross
        n_lat = jit.at(near_lat, i)
        n_per_token = coll.xfer_at(p2p_bytes, jit.at(near_bw, i), near_rbw, near_recip)
        f_lat = f_per_token = 0.0
        if any_cross:
            f_lat, f_per_token = jit.at(far_lat, i), coll.xfer_at(p2p_bytes, jit.at(far_bw, i), far_rbw, far_recip)
        cross, staged = n_cross > 0.0, pp_i > 1.0  # the slowest send: between nodes, else on the node's links
        lat[i] = f_lat if cross else n_lat if staged else 0.0
        per_token[i] = f_per_token if cross else n_per_token if staged else 0.0
        path_lat[i] = n_cross * f_lat + n_near * n_lat
        path_per_token[i] = n_cross * f_per_token + n_near * n_per_token
        sends = jit.at(mb, i) * stage_devices * p2p_bytes
        near_sends[i] = sends * n_near
        far_sends[i] = sends * n_cross


def pass_comm(plan: CommPlan, sys: dict, tokens: Array, head_tokens: Array) -> dict[str, Array]:
    """:func:`stage_comm` of one pass from its :func:`comm_plan`, in one compiled pass over the designs
    for the collectives (:func:`_pass_rows`) and one for the sends. ``ep_s``, ``p2p_s`` and
    ``p2p_path_s`` are the number 0 where no design of the batch has them."""
    has_ep = plan.ep is not None
    tp_s, ep_s, comm_s, intra, inter, energy = fused(
        _pass_rows, 6, tokens, head_tokens, plan.hidden_bytes_per_token, plan.gather_bytes_per_token, plan.n_ar,
        plan.a2a_frac, plan.n_a2a, float(has_ep), plan.near_sends_per_token, plan.far_sends_per_token, plan.runs,
        *coll.wire_j_per_byte(sys), *plan.tp, *(plan.ep if has_ep else _NO_GROUP))
    p2p_s = p2p_path_s = 0.0
    if not all(_is_zero(x) for x in (*plan.p2p_s, *plan.p2p_path_s)):  # sends where some design has stages
        p2p_s, p2p_path_s = fused(_p2p_rows, 2, tokens, *plan.p2p_s, *plan.p2p_path_s)
    return {"tp_s": tp_s, "ep_s": ep_s if has_ep else 0.0, "comm_s": comm_s, "p2p_s": p2p_s, "p2p_path_s": p2p_path_s,
            "intra_bytes": intra, "inter_bytes": inter, "energy_j": energy}


_NO_GROUP: tuple[float, ...] = (0.0,) * len(coll.Setup._fields)  # the ep group's columns where no design has one


@jit.kernel
def _p2p_rows(tokens, lat, per_token, path_lat, path_per_token, p2p_s, p2p_path_s):  # noqa: ANN001
    """The slowest stage send and all pp - 1 of a pass (:class:`CommPlan`)."""
    for i in range(p2p_s.shape[0]):
        tok = jit.at(tokens, i)
        p2p_s[i] = jit.at(lat, i) + tok * jit.at(per_token, i)
        p2p_path_s[i] = jit.at(path_lat, i) + tok * jit.at(path_per_token, i)


@jit.kernel
def _pass_rows(tokens, head_tokens, hidden, gather, n_ar, a2a_frac, n_a2a, has_ep, near_sends, far_sends, runs,  # noqa: ANN001
               j_intra, j_inter,
               tp0, tp1, tp2, tp3, tp4, tp5, tp6, tp7, tp8, tp9, tp10, tp11, tp12, tp13, tp14, tp15,
               tp16, tp17, tp18,
               ep0, ep1, ep2, ep3, ep4, ep5, ep6, ep7, ep8, ep9, ep10, ep11, ep12, ep13, ep14, ep15,
               ep16, ep17, ep18,
               tp_s, ep_s, comm_s, intra_bytes, inter_bytes, energy_j):
    """The collectives of :func:`pass_comm` over the designs: the tp group's two all-reduces per layer
    (+ the embedding's on the first stage) and the logits' all-gather (``tp*``: the columns of its
    :class:`dse.model.collectives.Setup`), the ep groups' two all-to-alls per MoE layer (``ep*``,
    where ``has_ep``; ``ep_s`` is not written without). One loop per case of the tp group's
    hierarchy and bandwidth (constants: without ep, the loop has no branch and runs in SIMD lanes)."""
    xs = (tokens, head_tokens, hidden, gather, n_ar, a2a_frac, n_a2a, near_sends, far_sends, runs, j_intra, j_inter)
    tp = (tp0, tp1, tp2, tp3, tp4, tp5, tp6, tp7, tp8, tp9, tp10, tp11, tp12, tp13, tp14, tp15, tp16, tp17,
          tp18)
    ep = (ep0, ep1, ep2, ep3, ep4, ep5, ep6, ep7, ep8, ep9, ep10, ep11, ep12, ep13, ep14, ep15, ep16, ep17,
          ep18)
    outs = (tp_s, ep_s, comm_s, intra_bytes, inter_bytes, energy_j)
    if has_ep:
        _pass_loop(xs, tp, ep, outs, True, tp10, tp5)
    elif tp10:
        if tp5:
            _pass_loop(xs, tp, ep, outs, False, True, True)
        else:
            _pass_loop(xs, tp, ep, outs, False, True, False)
    elif tp5:
        _pass_loop(xs, tp, ep, outs, False, False, True)
    else:
        _pass_loop(xs, tp, ep, outs, False, False, False)


@jit.inlined
def _pass_loop(xs, tp, ep, outs, has_ep, tp_hier, tp_recip):  # noqa: ANN001
    """The rows of :func:`_pass_rows`; the replica's bytes: every device of a stage runs the stage's
    collectives (the bottleneck stage's counts, an upper bound for pp > 1), plus the sends (pp - 1
    per micro-batch from each of the tp * ep devices of a stage)."""
    tokens, head_tokens, hidden, gather, n_ar, a2a_frac, n_a2a, near_sends, far_sends, runs, j_intra, j_inter = xs
    tp_s, ep_s, comm_s, intra_bytes, inter_bytes, energy_j = outs
    for i in range(tp_s.shape[0]):
        tok = jit.at(tokens, i)
        hidden_bytes = tok * jit.at(hidden, i)
        ar_t, ar_in, ar_out = coll.call_in(coll.ALL_REDUCE, hidden_bytes, i, tp, tp_hier, tp_recip)
        ag_t, ag_in, ag_out = coll.call_in(coll.ALL_GATHER, jit.at(head_tokens, i) * jit.at(gather, i), i, tp,
                                           tp_hier, tp_recip)
        nar = jit.at(n_ar, i)
        t = nar * ar_t + ag_t
        calls_in = nar * ar_in + ag_in
        calls_out = nar * ar_out + ag_out
        e = 0.0
        if has_ep:
            a2a_t, a2a_in, a2a_out = coll.call_in(coll.ALL_TO_ALL, hidden_bytes * jit.at(a2a_frac, i), i, ep, ep[10],
                                                  ep[5])
            na2a = jit.at(n_a2a, i)
            e = na2a * a2a_t
            calls_in = calls_in + na2a * a2a_in
            calls_out = calls_out + na2a * a2a_out
            ep_s[i] = e
        n_runs = jit.at(runs, i)
        intra = n_runs * calls_in + tok * jit.at(near_sends, i)
        inter = n_runs * calls_out + tok * jit.at(far_sends, i)
        tp_s[i] = t
        comm_s[i] = t + e
        intra_bytes[i] = intra
        inter_bytes[i] = inter
        energy_j[i] = intra * jit.at(j_intra, i) + inter * jit.at(j_inter, i)


def _is_zero(x: Array) -> bool:
    return ndim(x) == 0 and x == 0.0


@jit.kernel
def overlap_at(compute_s: float, comm_s: float, overlap_frac: float) -> float:
    """``compute + comm - overlap_frac * min(compute, comm)``: 0 serialises, 1 hides the
    shorter entirely (never below ``max(compute, comm)``)."""
    return (compute_s + comm_s) - np.minimum(compute_s, comm_s) * overlap_frac


@jit.kernel
def pipeline_at(stage_s: float, head_s: float, p2p_s: float, p2p_path_s: float, pp: float, mb: float,
                prefill: float) -> float:
    """:func:`pipeline_s` of one design (compiled)."""
    path = (pp * stage_s - (pp - 1.0) * head_s) + p2p_path_s
    if prefill:
        return path + np.maximum(stage_s, p2p_s) * (mb - 1.0)
    return np.maximum(path, mb * stage_s)


def pipeline_s(stage_s: Array, head_s: Array, p2p_s: Array, p2p_path_s: Array, pp: Array, mb: Array,
               prefill: bool) -> Array:
    """Time of a pass of the whole batch through ``pp`` stages in ``mb`` micro-batches.

    ``stage_s``: bottleneck (last) stage time per micro-batch, communication included;
    ``head_s``: the part of it that only the last stage has (LM head); ``p2p_s``,
    ``p2p_path_s``: see :func:`stage_comm`. Formulas in the module docstring; with
    ``pp = mb = 1`` the result is ``stage_s`` itself.
    """
    return fused(_pipeline_rows, 1, stage_s, head_s, p2p_s, p2p_path_s, pp, mb, float(prefill))[0]


@jit.kernel
def _pipeline_rows(stage_s, head_s, p2p_s, p2p_path_s, pp, mb, prefill, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = pipeline_at(jit.at(stage_s, i), jit.at(head_s, i), jit.at(p2p_s, i), jit.at(p2p_path_s, i),
                             jit.at(pp, i), jit.at(mb, i), prefill)


def device_dynamic_j(dyn_j: Array, compute_s: Array, comm: dict[str, Array], k: dict, steps: Array = 1.0) -> Array:
    """Dynamic energy of the bottleneck device over a phase, joules: its operators' energy
    ``dyn_j`` (one micro-batch) for each of the ``micro_batches``, plus the energy it burns
    while it waits in the stage's exposed tp/ep collectives.

    A collective kernel keeps the device clocked and spins its SMs polling the peers' flags
    (NCCL's LL/LL128 protocols, the custom all-reduces of vLLM and TensorRT-LLM alike), so
    the device is charged its compute power ``dyn_j / compute_s`` over the exposed time
    ``overlap(compute, comm) - compute`` (:func:`overlap_at`, with the phase's ``steps``):
    ``dyn_j * mb * (1 + exposed / compute)``. No fitted parameter; the project's 2x H200
    diagnostics (``validation/measurements_tp_h200_diagnostics.csv``: the same TP2 steps
    with and without their all-reduces) show 410-520 W per GPU during the all-reduces
    against 350-470 W average and about 125 W idle. Pipeline bubbles stay at static power.
    """
    no_sends = {"p2p_s": 0.0, "p2p_path_s": 0.0, "comm_s": comm["comm_s"]}  # the time is not wanted
    return phase_time_and_device_j(compute_s, 0.0, dyn_j, no_sends, k, True, steps)[1]


def phase_time_s(compute_s: Array, head_s: Array, comm: dict[str, Array], k: dict, prefill: bool,
                 steps: Array = 1.0) -> Array:
    """Phase time of the replica: overlap the stage's compute with its collectives, then
    run the pipeline.

    ``compute_s``, ``head_s``: the bottleneck device's operator time (from the operators of
    :func:`dse.model.sharding.shard_ops`) and its LM-head part, per micro-batch, summed over the ``steps`` decode steps
    (1 for prefill); ``comm``: :func:`stage_comm` of one pass (per step), multiplied by
    ``steps`` here. Returns ``compute_s`` exactly when nothing is parallel.
    """
    return phase_time_and_device_j(compute_s, head_s, 0.0, comm, k, prefill, steps)[0]


def phase_time_and_device_j(compute_s: Array, head_s: Array, dyn_j: Array, comm: dict[str, Array], k: dict,
                            prefill: bool, steps: Array = 1.0) -> tuple[Array, Array]:
    """(:func:`phase_time_s`, :func:`device_dynamic_j`) of one phase in one compiled pass.

    The stage's time is ``compute_s`` overlapped with the ``steps`` passes' collectives
    (:func:`overlap_at`; ``compute_s`` itself where no design of the batch communicates:
    ``exposed`` false), run through the pipeline (:func:`pipeline_at`) with the passes' sends;
    the device's energy is ``dyn_j * mb * stage / compute`` (``dyn_j * mb`` where there is no compute).
    """
    return tuple(fused(_phase_rows, 2, compute_s, head_s, dyn_j, comm["comm_s"], comm["p2p_s"], comm["p2p_path_s"],
                       steps, knob(k, "comm_overlap_frac"), knob(k, "pp"), knob(k, "micro_batches"), float(prefill),
                       float(exposed(comm, steps))))


def exposed(comm: dict[str, Array], steps: Array) -> bool:
    """False where no design of the batch communicates in the phase's collectives (:func:`phase_at`)."""
    comm_s = comm["comm_s"]
    return not (ndim(comm_s) == 0 and ndim(steps) == 0 and scale(steps, comm_s) == 0.0)


@jit.kernel
def phase_at(compute_s: float, head_s: float, dyn_j: float, comm_s: float, p2p_s: float, p2p_path_s: float,
             steps: float, overlap_frac: float, pp: float, mb: float, prefill: float,
             exposed: float) -> tuple[float, float]:
    """(:func:`phase_time_s`, :func:`device_dynamic_j`) of one design (compiled; arguments as
    :func:`phase_time_and_device_j`, ``comm_s``, ``p2p_s`` and ``p2p_path_s`` per pass)."""
    if exposed:
        stage = overlap_at(compute_s, steps * comm_s, overlap_frac)
        device_j = dyn_j * mb * (stage / compute_s if compute_s > 0.0 else 1.0)
    else:  # nothing exposed
        stage = compute_s
        device_j = dyn_j * mb
    return pipeline_at(stage, head_s, steps * p2p_s, steps * p2p_path_s, pp, mb, prefill), device_j


@jit.kernel
def _phase_rows(compute_s, head_s, dyn_j, comm_s, p2p_s, p2p_path_s, steps, overlap_frac, pp, mb,  # noqa: ANN001
                prefill, is_exposed, time_s, device_j):
    for i in range(time_s.shape[0]):
        time_s[i], device_j[i] = phase_at(
            jit.at(compute_s, i), jit.at(head_s, i), jit.at(dyn_j, i), jit.at(comm_s, i), jit.at(p2p_s, i),
            jit.at(p2p_path_s, i), jit.at(steps, i), jit.at(overlap_frac, i), jit.at(pp, i), jit.at(mb, i), prefill,
            is_exposed)
