"""Scalar reference of :mod:`dse.model.collectives` and :mod:`dse.model.parallel`.

One design at a time, plain Python and ``math``, written with explicit branches so that a
reader can follow each formula line by line; tests compare the vectorised functions with
these on random batches.
"""

from __future__ import annotations

import math

SWITCH, RING, PCIE_HOST, FULL_MESH = 0, 1, 2, 3
ALGO_RING, ALGO_TREE, ALGO_DIRECT, ALGO_AUTO = 0, 1, 2, 3
SYSTEM_DEFAULTS = {
    "n_devices_per_node": 1.0, "link_topology": 0.0, "link_bw_bytes_per_s": 0.0, "link_bw_eff_frac": 1.0,
    "link_latency_s": 0.0,
    "link_energy_pj_per_bit": 0.0, "fabric_bw_bytes_per_s": 0.0, "collective_overhead_s": 0.0,
    "internode_bw_bytes_per_s": 0.0, "internode_bw_eff_frac": 1.0, "internode_latency_s": 0.0,
    "internode_energy_pj_per_bit": 0.0,
}
KNOB_DEFAULTS = {"tp": 1.0, "pp": 1.0, "ep": 1.0, "dp": 1.0, "micro_batches": 1.0, "comm_overlap_frac": 0.0,
                 "collective_algo": 0.0}


def _sys(sys: dict, key: str) -> float:
    return sys.get(key, SYSTEM_DEFAULTS[key])


def _knob(k: dict, key: str) -> float:
    return k.get(key, KNOB_DEFAULTS[key])


def _seconds(nbytes: float, bw: float) -> float:
    if nbytes <= 0:
        return 0.0
    if bw <= 0:
        return math.inf
    return nbytes / bw


def _steps_log(n: float) -> float:
    return math.ceil(math.log2(n)) if n > 1 else 0.0


def flat_one(kind: str, s: float, n: float, bw: float, lat: float, topo: int, algo: int) -> tuple[float, float]:
    """(time_s, bytes sent per device) of one collective on one level."""
    if n <= 1:
        return 0.0, 0.0
    if algo == ALGO_AUTO:
        best = None
        for a in (ALGO_RING, ALGO_TREE, ALGO_DIRECT):
            cand = flat_one(kind, s, n, bw, lat, topo, a)
            if best is None or cand[0] < best[0]:
                best = cand
        return best
    if topo == RING:
        algo = ALGO_RING  # only neighbour exchange is native on a ring
    if kind == "all_reduce":
        if algo == ALGO_RING:
            wire = 2 * (n - 1) / n * s
            return 2 * (n - 1) * lat + _seconds(wire, bw), wire
        if algo == ALGO_TREE:
            wire = 2 * (n - 1) / n * s
            return 2 * _steps_log(n) * lat + _seconds(wire, bw), wire
        one_shot = (lat + _seconds((n - 1) * s, bw), (n - 1) * s)
        wire = 2 * (n - 1) / n * s
        two_shot = (2 * lat + _seconds(wire, bw), wire)
        return two_shot if two_shot[0] < one_shot[0] else one_shot
    if kind in ("all_gather", "reduce_scatter"):
        wire = (n - 1) / n * s
        steps = {ALGO_RING: n - 1, ALGO_TREE: _steps_log(n), ALGO_DIRECT: 1}[algo]
        return steps * lat + _seconds(wire, bw), wire
    # all-to-all
    if algo == ALGO_RING:
        if topo == RING:
            wire = math.floor(n * n / 4) / n * s
            return math.floor(n / 2) * lat + _seconds(wire, bw), wire
        wire = (n - 1) / n * s
        return (n - 1) * lat + _seconds(wire, bw), wire
    if algo == ALGO_TREE:
        wire = _steps_log(n) * s / 2
        return _steps_log(n) * lat + _seconds(wire, bw), wire
    wire = (n - 1) / n * s
    return lat + _seconds(wire, bw), wire


def intra_bw_one(sys: dict, n_local: float, n_sharing: float) -> float:
    bw = _sys(sys, "link_bw_bytes_per_s") * _sys(sys, "link_bw_eff_frac")
    if _sys(sys, "link_topology") == FULL_MESH:
        g = _sys(sys, "n_devices_per_node")
        bw = bw * min(max((n_local - 1) / max(g - 1, 1), 0.0), 1.0)
    fabric = _sys(sys, "fabric_bw_bytes_per_s")
    if fabric > 0:
        bw = min(bw, fabric / max(n_sharing, 1))
    return bw


def collective_one(kind: str, nbytes: float, n: float, sys: dict, algo: int = ALGO_RING,
                   n_per_node: float | None = None, n_sharing: float | None = None) -> tuple[float, float, float]:
    """(time_s, intra bytes, inter bytes) of one collective; hierarchical across nodes."""
    per_node = _sys(sys, "n_devices_per_node")
    a = min(n, per_node) if n_per_node is None else min(n_per_node, n)
    a = max(a, 1)
    nodes = math.ceil(n / a)
    bw = intra_bw_one(sys, a, a if n_sharing is None else n_sharing)
    lat, topo = _sys(sys, "link_latency_s"), int(_sys(sys, "link_topology"))
    bw_net = _sys(sys, "internode_bw_bytes_per_s") * _sys(sys, "internode_bw_eff_frac")
    lat_net = _sys(sys, "internode_latency_s")
    overhead = _sys(sys, "collective_overhead_s") if n > 1 else 0.0
    if nodes <= 1:
        t, b = flat_one(kind, nbytes, n, bw, lat, topo, algo)
        return t + overhead, b, 0.0
    if kind == "all_reduce":
        t_rs, b_rs = flat_one("reduce_scatter", nbytes, a, bw, lat, topo, algo)
        t_ag, b_ag = flat_one("all_gather", nbytes, a, bw, lat, topo, algo)
        t_net, b_net = flat_one("all_reduce", nbytes / a, nodes, bw_net, lat_net, SWITCH, algo)
        return t_rs + t_net + t_ag + overhead, b_rs + b_ag, b_net
    if kind == "all_to_all":
        t_in, b_in = flat_one(kind, nbytes * a / n, a, bw, lat, topo, algo)
        b_net = (n - a) / n * nbytes
        t_net = (nodes - 1) * lat_net + _seconds(b_net, bw_net)
        return t_in + t_net + overhead, b_in, b_net
    t_in, b_in = flat_one(kind, nbytes, a, bw, lat, topo, algo)
    t_net, b_net = flat_one(kind, nbytes / a, nodes, bw_net, lat_net, SWITCH, algo)
    return t_in + t_net + overhead, b_in, b_net


def p2p_one(nbytes: float, sys: dict, across_nodes: bool) -> float:
    if across_nodes:
        bw_net = _sys(sys, "internode_bw_bytes_per_s") * _sys(sys, "internode_bw_eff_frac")
        return _sys(sys, "internode_latency_s") + _seconds(nbytes, bw_net)
    return _sys(sys, "link_latency_s") + _seconds(nbytes, intra_bw_one(sys, 2, 2))


# ---- the mapping -------------------------------------------------------------------------

def factors_one(m: dict, k: dict) -> dict[str, dict[str, float]]:
    """Per-operator factors replica -> bottleneck device (see sharding.shard_factors)."""
    tp, pp, ep, mb = _knob(k, "tp"), _knob(k, "pp"), _knob(k, "ep"), _knob(k, "micro_batches")
    L, d, h, kv, hd = m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    E, top_k, v = m["n_experts"], m["n_experts_active"], m["vocab_size"]
    heads, kv_heads = math.ceil(h / tp), math.ceil(kv / tp)
    layer_share = math.ceil(L / pp) / L
    experts = math.ceil(E / ep)
    tok = 1 / (ep * mb)  # this device's ep group, one micro-batch
    expert_tok = experts / max(ep, E) / mb
    width = (1 + m["ffn_gated"]) * m["d_ff"] * top_k
    qkv = (heads + 2 * kv_heads) / (h + 2 * kv)
    return {
        "qkv": {"flop": layer_share * qkv * tok, "store": layer_share * qkv, "kv": layer_share * qkv * tok,
                "act": layer_share * tok * (d + (heads + 2 * kv_heads) * hd) / (d + (h + 2 * kv) * hd),
                "kernels": layer_share},
        "o": {"flop": layer_share * heads / h * tok, "store": layer_share * heads / h,
              "kv": layer_share * heads / h * tok,
              "act": layer_share * tok * (heads * hd + 2 * d) / (h * hd + 2 * d), "kernels": layer_share},
        "attn": {"flop": layer_share * heads / h * tok, "store": layer_share * kv_heads / kv * tok,
                 "kv": layer_share * kv_heads / kv * tok,
                 "act": layer_share * tok * (heads + kv_heads) / (h + kv), "kernels": layer_share},
        "ffn": {"flop": layer_share * expert_tok / tp, "store": layer_share * experts / E / tp,
                "kv": layer_share * expert_tok / tp,
                "act": layer_share * (2 * d * tok + width * expert_tok / tp) / (2 * d + width),
                "kernels": layer_share},
        "lm_head": {"flop": tok / tp, "store": 1 / tp, "kv": tok / tp, "act": tok * (d + v / tp) / (d + v),
                    "kernels": 1.0},
        "draft": {"flop": tok / tp, "store": 1 / tp, "kv": tok / tp, "act": tok / tp, "kernels": 1.0},
    }


def shard_op_one(op: dict, f: dict) -> dict:
    """op: flop0, flop1, bytes0, bytes1, act_bytes, kernels (flop1/bytes1 may be None)."""
    weights_or_kv = op["bytes0"] - op["act_bytes"]
    return {
        "flop0": op["flop0"] * f["flop"],
        "flop1": None if op["flop1"] is None else op["flop1"] * f["flop"],
        "bytes0": weights_or_kv * f["store"] + op["act_bytes"] * f["act"],
        "bytes1": None if op["bytes1"] is None else op["bytes1"] * f["kv"],
        "act_bytes": op["act_bytes"] * f["act"],
        "kernels": op["kernels"] * f["kernels"],
    }


def memory_one(m: dict, k: dict, wb: float) -> float:
    tp, pp, ep, mb = _knob(k, "tp"), _knob(k, "pp"), _knob(k, "ep"), _knob(k, "micro_batches")
    L, d, h, kv, hd = m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    E = m["n_experts"]
    heads, kv_heads, layers = math.ceil(h / tp), math.ceil(kv / tp), math.ceil(L / pp)
    expert = (2 + m["ffn_gated"]) * d * m["d_ff"]
    router = d * E if E > 1 else 0.0
    per_layer = d * (heads + 2 * kv_heads) * hd + heads * hd * d + expert * math.ceil(E / ep) / tp + router
    vocab_mats = 1 if pp > 1 else 2 - m["tied_embeddings"]
    params = layers * per_layer + vocab_mats * m["vocab_size"] * d / tp
    draft = k["spec_draft_frac"] if k["spec_len"] > 0 else 0.0
    seqs = k["batch"] / ep
    kv_cache = 2 * layers * kv_heads * hd * seqs * (k["in_len"] + k["out_len"]) * k["kv_bits"] / 8
    widest = max((heads + 2 * kv_heads) * hd, (1 + m["ffn_gated"]) * m["d_ff"] * m["n_experts_active"] / tp)
    acts = seqs / mb * k["in_len"] * (d + widest) * k["a_bits"] / 8
    return params * wb * (1 + draft) + kv_cache + acts + seqs * m["vocab_size"] / tp * 4


def stage_comm_one(m: dict, k: dict, sys: dict, tokens: float, head_tokens: float) -> dict[str, float]:
    tp, pp, ep, mb = _knob(k, "tp"), _knob(k, "pp"), _knob(k, "ep"), _knob(k, "micro_batches")
    dp, algo = _knob(k, "dp"), int(_knob(k, "collective_algo"))
    d, ab = m["d_model"], max(k["a_bits"], 16) / 8  # the residual stream stays 16-bit (parallel.py docstring)
    layers = math.ceil(m["n_layers"] / pp)
    per_node = _sys(sys, "n_devices_per_node")
    devices = tp * pp * ep * dp
    sharing = min(devices, per_node)
    tok, head = tokens / (ep * mb), head_tokens / (ep * mb)
    # tensor parallel: 2 all-reduces per layer (+ the embedding's when one stage), logits all-gather
    t_ar, ar_in, ar_out = collective_one("all_reduce", tok * d * ab, tp, sys, algo, n_sharing=sharing)
    t_ag, ag_in, ag_out = collective_one("all_gather", head * m["vocab_size"] * ab, tp, sys, algo,
                                         n_sharing=sharing)
    n_ar = 2 * layers + (1 if pp == 1 else 0)
    tp_s = n_ar * t_ar + t_ag
    # expert parallel: dispatch + combine all-to-all per MoE layer
    if m["n_experts"] > 1 and ep > 1:
        ep_per_node = min(max(math.floor(per_node / tp), 1), ep)
        t_a2a, a2a_in, a2a_out = collective_one("all_to_all", tok * m["n_experts_active"] * d * ab / tp, ep, sys,
                                                algo, n_per_node=ep_per_node, n_sharing=sharing)
    else:
        t_a2a, a2a_in, a2a_out = 0.0, 0.0, 0.0
    ep_s = 2 * layers * t_a2a
    # pipeline sends
    send = tok * d * ab / tp
    n_cross = min(pp - 1, math.floor((pp - 1) * tp * ep / per_node))
    near, far = p2p_one(send, sys, False), p2p_one(send, sys, True)
    p2p_path = n_cross * far + (pp - 1 - n_cross) * near
    p2p_max = far if n_cross > 0 else (near if pp > 1 else 0.0)
    sends = mb * tp * ep * send  # one replica's (the caller counts dp)
    replica = tp * pp * ep
    intra = replica * mb * (n_ar * ar_in + ag_in + 2 * layers * a2a_in) + sends * (pp - 1 - n_cross)
    inter = replica * mb * (n_ar * ar_out + ag_out + 2 * layers * a2a_out) + sends * n_cross
    energy = (intra * _sys(sys, "link_energy_pj_per_bit") + inter * _sys(sys, "internode_energy_pj_per_bit")) * 8e-12
    return {"tp_s": tp_s, "ep_s": ep_s, "comm_s": tp_s + ep_s, "p2p_s": p2p_max, "p2p_path_s": p2p_path,
            "intra_bytes": intra, "inter_bytes": inter, "energy_j": energy}


def phase_time_one(compute_s: float, head_s: float, comm: dict, k: dict, prefill: bool, steps: float = 1.0) -> float:
    pp, mb = _knob(k, "pp"), _knob(k, "micro_batches")
    comm_s = steps * comm["comm_s"]
    stage = compute_s + comm_s - _knob(k, "comm_overlap_frac") * min(compute_s, comm_s)
    # one micro-batch crosses every stage in turn (the others have no LM head) and every link
    path = pp * stage - (pp - 1) * head_s + steps * comm["p2p_path_s"]
    if prefill:  # the other micro-batches follow one stage (or one send) apart
        return path + (mb - 1) * max(stage, steps * comm["p2p_s"])
    return max(path, mb * stage)  # decode: latency-bound or stage-bound


def device_dynamic_j_one(dyn_j: float, compute_s: float, comm: dict, k: dict, steps: float = 1.0) -> float:
    """Dynamic energy of the bottleneck device: every micro-batch's operators, plus its compute
    power held through the exposed collectives (busy-polling kernels)."""
    comm_s = steps * comm["comm_s"]
    stage = compute_s + comm_s - _knob(k, "comm_overlap_frac") * min(compute_s, comm_s)
    exposed = stage - compute_s
    wait_frac = exposed / compute_s if compute_s > 0 else 0.0
    return dyn_j * _knob(k, "micro_batches") * (1.0 + wait_frac)
