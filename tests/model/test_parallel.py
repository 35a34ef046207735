"""Collectives and the parallel mapping: closed forms by hand, scalar reference, properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dse.model import collectives as coll
from dse.model import parallel as par
from dse.model import parallel_reference as ref
from dse.model import sharding as shd
from dse.model.workload import Op, draft_op, memory_bytes, phase_ops, weight_bytes_per_param
from dse.spec.presets import builtin_names, load_model, load_platform
from dse.spec.registry import CARD_FIELD_NAMES, KNOB_DEFAULTS
from tests.conftest import MODELS

S, B, A = 8e6, 100e9, 1e-6  # bytes, bytes/s per direction, s per step
NET_B, NET_A = 50e9, 5e-6


def system(**kw):
    base = {"n_devices_per_node": 8.0, "link_topology": coll.SWITCH, "link_bw_bytes_per_s": B,
            "link_latency_s": A, "internode_bw_bytes_per_s": NET_B, "internode_latency_s": NET_A}
    return {**base, **kw}


def knobs(**kw):
    return {**KNOB_DEFAULTS, **kw}


def t(kind, n, sys=None, algo=coll.ALGO_RING, nbytes=S, **kw):
    return coll.collective(kind, nbytes, float(n), sys or system(), algo, **kw)


# ---- collectives: closed forms by hand (n = 8 on a switch unless said) ----------------------

@pytest.mark.parametrize("algo, time_s", [
    (coll.ALGO_RING, 14e-6 + 1.4e-4),   # 2(n-1) a + 2(n-1)/n S/B
    (coll.ALGO_TREE, 6e-6 + 1.4e-4),    # 2 lg n a + 2(n-1)/n S/B (Rabenseifner)
    (coll.ALGO_DIRECT, 2e-6 + 1.4e-4),  # two-shot beats one-shot (a + 7 S/B = 5.61e-4) at 8 MB
    (coll.ALGO_AUTO, 2e-6 + 1.4e-4),
])
def test_all_reduce_closed_forms(algo, time_s):
    c = t("all_reduce", 8, algo=algo)
    assert float(c.time_s) == pytest.approx(time_s, rel=1e-12)
    assert float(c.intra_bytes) == pytest.approx(1.4e7) and float(c.inter_bytes) == 0.0


def test_one_shot_all_reduce_for_small_messages():
    c = t("all_reduce", 8, algo=coll.ALGO_DIRECT, nbytes=1e3)
    assert float(c.time_s) == pytest.approx(A + 7 * 1e3 / B)  # one step, 7 peers' buffers
    assert float(c.intra_bytes) == pytest.approx(7e3)


@pytest.mark.parametrize("kind", ["all_gather", "reduce_scatter"])
@pytest.mark.parametrize("algo, steps", [(coll.ALGO_RING, 7), (coll.ALGO_TREE, 3), (coll.ALGO_DIRECT, 1)])
def test_gather_scatter_closed_forms(kind, algo, steps):
    c = t(kind, 8, algo=algo)
    assert float(c.time_s) == pytest.approx(steps * A + 7e6 / B, rel=1e-12)  # (n-1)/n S = 7 MB
    assert float(c.intra_bytes) == pytest.approx(7e6)


@pytest.mark.parametrize("algo, time_s, wire", [
    (coll.ALGO_RING, 7e-6 + 7e6 / B, 7e6),          # pairwise exchange
    (coll.ALGO_TREE, 3e-6 + 3 * 4e6 / B, 1.2e7),    # Bruck: lg n steps of S/2
    (coll.ALGO_DIRECT, 1e-6 + 7e6 / B, 7e6),
])
def test_all_to_all_closed_forms(algo, time_s, wire):
    c = t("all_to_all", 8, algo=algo)
    assert float(c.time_s) == pytest.approx(time_s, rel=1e-12)
    assert float(c.intra_bytes) == pytest.approx(wire)


def test_ring_all_reduce_is_reduce_scatter_plus_all_gather():
    for n in (2, 3, 5, 8):
        ar = t("all_reduce", n)
        assert float(ar.time_s) == pytest.approx(float(t("reduce_scatter", n).time_s + t("all_gather", n).time_s))


def test_ring_topology_only_rings_and_bisection_bound_all_to_all():
    sys = system(link_topology=coll.RING)
    for algo in (coll.ALGO_TREE, coll.ALGO_DIRECT, coll.ALGO_AUTO):
        assert float(t("all_reduce", 8, sys, algo).time_s) == pytest.approx(14e-6 + 1.4e-4)
    c = t("all_to_all", 8, sys)
    assert float(c.time_s) == pytest.approx(4 * A + 16 / 8 * S / B)  # floor(n/2) a + floor(n^2/4)/n S/B
    assert float(c.intra_bytes) == pytest.approx(2 * S)
    c2 = t("all_to_all", 2, sys)  # two devices: the same as a switch
    assert float(c2.time_s) == pytest.approx(float(t("all_to_all", 2).time_s))


def test_full_mesh_group_uses_its_links_only():
    sys = system(link_topology=coll.FULL_MESH)
    # 2 of 8: one link of B/7
    assert float(t("all_reduce", 2, sys).time_s) == pytest.approx(2 * A + S / (B / 7))
    # the whole node: all 7 links, like a switch
    assert float(t("all_reduce", 8, sys).time_s) == pytest.approx(float(t("all_reduce", 8).time_s))
    assert float(coll.point_to_point(S, sys).time_s) == pytest.approx(A + S / (B / 7))


def test_shared_pcie_fabric_divides_among_devices():
    sys = system(link_topology=coll.PCIE_HOST, fabric_bw_bytes_per_s=64e9)
    assert float(t("all_reduce", 8, sys).time_s) == pytest.approx(14e-6 + 2 * 7 / 8 * S / 8e9)
    assert float(t("all_reduce", 2, sys).time_s) == pytest.approx(2e-6 + S / 32e9)
    assert float(t("all_reduce", 2, sys, n_sharing=8.0).time_s) == pytest.approx(2e-6 + S / 8e9)


def test_hierarchical_collectives_across_two_nodes():
    ar = t("all_reduce", 16)  # RS intra + AR of S/8 over 2 nodes + AG intra
    inter = 2 * NET_A + 1e6 / NET_B
    assert float(ar.time_s) == pytest.approx(14e-6 + 1.4e-4 + inter)
    assert float(ar.intra_bytes) == pytest.approx(1.4e7) and float(ar.inter_bytes) == pytest.approx(1e6)
    ag = t("all_gather", 16)  # AG of S/8 over nodes, then AG intra
    assert float(ag.time_s) == pytest.approx(NET_A + 0.5e6 / NET_B + 7e-6 + 7e6 / B)
    a2a = t("all_to_all", 16)  # 7/16 S inside the node, 8/16 S over the network
    assert float(a2a.time_s) == pytest.approx(7e-6 + 3.5e6 / B + NET_A + 4e6 / NET_B)
    assert float(a2a.intra_bytes) == pytest.approx(3.5e6) and float(a2a.inter_bytes) == pytest.approx(4e6)
    # a strided group with one member per node is all network
    one = t("all_reduce", 2, n_per_node=1.0)
    assert float(one.time_s) == pytest.approx(2 * NET_A + S / NET_B)


def test_single_device_and_overhead():
    sys = system(collective_overhead_s=5e-6)
    for kind in coll.COLLECTIVES:
        assert float(t(kind, 1, sys).time_s) == 0.0
    assert float(t("all_reduce", 2, sys).time_s) == pytest.approx(5e-6 + 2 * A + S / B)
    assert float(coll.point_to_point(S, system(), True).time_s) == pytest.approx(NET_A + S / NET_B)


def test_no_link_is_infinitely_slow_never_nan():
    c = coll.all_reduce(np.array([0.0, 1e3]), np.array([2.0, 2.0]), {"link_latency_s": 0.0})
    assert c.time_s[0] == 0.0 and np.isinf(c.time_s[1])


def test_wire_energy():
    sys = system(link_energy_pj_per_bit=1.3, internode_energy_pj_per_bit=60.0)
    assert float(coll.wire_energy_j(1e9, 1e6, sys)) == pytest.approx(1e9 * 8 * 1.3e-12 + 1e6 * 8 * 60e-12)


def _random_system(rng, n):
    return {
        "n_devices_per_node": rng.choice([1.0, 2.0, 4.0, 8.0], n),
        "link_topology": rng.choice(list(coll.TOPOLOGY_CODES.values()), n),
        "link_bw_bytes_per_s": rng.uniform(1e9, 1e12, n),
        "link_bw_eff_frac": rng.uniform(0.5, 1.0, n),
        "link_latency_s": rng.uniform(0.0, 5e-6, n),
        "link_energy_pj_per_bit": rng.uniform(0.0, 10.0, n),
        "fabric_bw_bytes_per_s": rng.choice([0.0, 32e9, 128e9], n),
        "collective_overhead_s": rng.uniform(0.0, 1e-5, n),
        "internode_bw_bytes_per_s": rng.uniform(1e9, 1e11, n),
        "internode_bw_eff_frac": rng.uniform(0.5, 1.0, n),
        "internode_latency_s": rng.uniform(0.0, 1e-5, n),
        "internode_energy_pj_per_bit": rng.uniform(0.0, 100.0, n),
    }


def _row(d, i):
    return {key: float(v[i]) if np.ndim(v) else float(v) for key, v in d.items()}


@pytest.mark.parametrize("kind", coll.COLLECTIVES)
def test_collectives_match_scalar_reference(kind):
    rng = np.random.default_rng(7)
    n = 300
    sys = _random_system(rng, n)
    size = rng.choice([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 24.0, 64.0], n)
    nbytes = rng.choice([0.0, 1e2, 1e4, 1e6, 1e8], n)
    algo = rng.choice(list(coll.ALGO_CODES.values()), n)
    per_node = np.where(rng.random(n) < 0.3, rng.choice([1.0, 2.0], n), sys["n_devices_per_node"])
    sharing = rng.choice([1.0, 4.0, 8.0], n)
    c = coll.collective(kind, nbytes, size, sys, algo, n_per_node=per_node, n_sharing=sharing)
    for i in range(n):
        want = ref.collective_one(kind, nbytes[i], size[i], _row(sys, i), int(algo[i]), per_node[i], sharing[i])
        got = (c.time_s[i], c.intra_bytes[i], c.inter_bytes[i])
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{kind} row {i}")
    # one system per batch (scalar codes) takes the same values as the per-row selection
    one = coll.collective(kind, nbytes, size, _row(sys, 0), float(algo[0]))
    rows = coll.collective(kind, nbytes, size, {key: np.full(n, v[0]) for key, v in sys.items()}, np.full(n, algo[0]))
    np.testing.assert_allclose(one.time_s, rows.time_s, rtol=1e-12)


# ---- the mapping --------------------------------------------------------------------------

def _cards(rng, n):
    cards = [load_model(name).fields for name in MODELS]
    codes = rng.integers(0, len(cards), n)
    return {f: np.array([cards[c][f] for c in codes], dtype=float) for f in CARD_FIELD_NAMES}


def _random_knobs(rng, n):
    return {
        "batch": rng.integers(1, 65, n).astype(float),
        "in_len": rng.integers(1, 2000, n).astype(float),
        "out_len": rng.integers(1, 300, n).astype(float),
        "w_bits": rng.choice([4.0, 8.0, 16.0], n),
        "a_bits": rng.choice([8.0, 16.0], n),
        "kv_bits": rng.choice([8.0, 16.0], n),
        "w_sparsity_frac": np.zeros(n), "nm_sparse": np.zeros(n), "pim_offload": np.zeros(n),
        "spec_len": rng.choice([0.0, 3.0], n), "spec_accept_frac": np.full(n, 0.7),
        "spec_draft_frac": np.full(n, 0.05),
        "tp": rng.choice([1.0, 2.0, 3.0, 4.0, 8.0, 16.0], n),
        "pp": rng.choice([1.0, 2.0, 3.0, 4.0, 8.0], n),
        "ep": rng.choice([1.0, 2.0, 4.0, 8.0, 16.0], n),
        "dp": rng.choice([1.0, 2.0], n),
        "micro_batches": rng.choice([1.0, 2.0, 4.0], n),
        "comm_overlap_frac": rng.choice([0.0, 0.5, 1.0], n),
        "collective_algo": rng.choice(list(coll.ALGO_CODES.values()), n),
    }


def _op_row(op: Op, i):
    def pick(x):
        return None if x is None else (float(x[i]) if np.ndim(x) else float(x))
    return {f: pick(getattr(op, f)) for f in Op._fields}


def test_mapping_matches_scalar_reference():
    rng = np.random.default_rng(11)
    n = 200
    m, k, sys = _cards(rng, n), _random_knobs(rng, n), _random_system(rng, n)
    wb = weight_bytes_per_param(k)
    passes = {
        "prefill": (phase_ops(m, k, wb, k["batch"] * k["in_len"], prefill=True), k["batch"] * k["in_len"], k["batch"]),
        "decode": ({**phase_ops(m, k, wb, k["batch"], prefill=False), "draft": draft_op(m, k, wb)},
                   k["batch"], k["batch"]),
    }
    mem = shd.memory_bytes_per_device(m, k, wb)
    for phase, (ops, tokens, head) in passes.items():
        sharded = shd.shard_ops(ops, m, k)
        comm = par.stage_comm(m, k, sys, tokens, head)
        compute = rng.uniform(1e-4, 1e-1, n)
        head_s = compute * rng.uniform(0.0, 0.2, n)
        steps = 1.0 if phase == "prefill" else k["out_len"]
        total = par.phase_time_s(compute, head_s, comm, k, phase == "prefill", steps)
        for i in range(n):
            mi, ki, si = _row(m, i), _row(k, i), _row(sys, i)
            f = ref.factors_one(mi, ki)
            for name, op in ops.items():
                want = ref.shard_op_one(_op_row(op, i), f[name])
                got = _op_row(sharded[name], i)
                for field in Op._fields:
                    if want[field] is None:
                        assert got[field] is None
                    else:
                        np.testing.assert_allclose(got[field], want[field], rtol=1e-9, atol=1e-300,
                                                   err_msg=f"{phase} {name}.{field} row {i}")
            want_comm = ref.stage_comm_one(mi, ki, si, float(tokens[i]), float(head[i]))
            for key, v in want_comm.items():
                np.testing.assert_allclose(comm[key][i], v, rtol=1e-9, err_msg=f"{phase} {key} row {i}")
            st = float(steps[i]) if np.ndim(steps) else steps
            want_t = ref.phase_time_one(compute[i], head_s[i], want_comm, ki, phase == "prefill", st)
            np.testing.assert_allclose(total[i], want_t, rtol=1e-9, err_msg=f"{phase} time row {i}")
            if phase == "prefill":
                np.testing.assert_allclose(mem[i], ref.memory_one(mi, ki, float(wb[i])), rtol=1e-12)


@pytest.mark.parametrize("one_model", [False, True])
def test_device_ops_are_the_sharded_phase_ops_bit_for_bit(one_model):
    """The fused build-and-shard pass of both phases equals phase_ops + draft_op, then shard_ops."""
    rng = np.random.default_rng(13)
    n = 300
    m = load_model("mixtral-8x7b").fields if one_model else _cards(rng, n)
    k = {**KNOB_DEFAULTS, **_random_knobs(rng, n)}
    wb = weight_bytes_per_param(k)
    s = shd.shard_dims(m, k)
    dec_tokens = k["batch"] * (k["spec_len"] + 1.0)
    pre, dec, _ = shd.device_ops(m, k, wb, s, dec_tokens, True)
    want_pre = shd.shard_ops(phase_ops(m, k, wb, k["batch"] * k["in_len"], prefill=True), m, k, s)
    want_dec = shd.shard_ops({**phase_ops(m, k, wb, dec_tokens, prefill=False), "draft": draft_op(m, k, wb)}, m, k, s,
                             other_phase=want_pre)
    for got, want in ((pre, want_pre), (dec, want_dec)):
        assert list(got) == list(want)  # the order the phase's sums take
        for name in want:
            for field in Op._fields:
                a, b = getattr(got[name], field), getattr(want[name], field)
                assert (a is None and b is None) or np.array_equal(a, b), (name, field)


# ---- properties ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_one_device_is_the_single_device_model_bit_for_bit(name):
    m = load_model(name).fields
    rng = np.random.default_rng(3)
    k = _random_knobs(rng, 50)
    ones = {key: np.ones(50) for key in ("tp", "pp", "ep", "dp", "micro_batches")}
    k = {**k, **ones, "comm_overlap_frac": rng.uniform(0, 1, 50)}
    wb = weight_bytes_per_param(k)
    for prefill in (True, False):
        tokens = k["batch"] * k["in_len"] if prefill else k["batch"]
        ops = phase_ops(m, k, wb, tokens, prefill=prefill)
        sharded = shd.shard_ops(ops, m, k, shd.shard_dims(m, k))  # the factors path itself, not only the shortcut
        for op_name, op in ops.items():
            got = sharded[op_name]
            for field in Op._fields:
                a, b = getattr(op, field), getattr(got, field)
                assert (a is None and b is None) or np.array_equal(np.broadcast_to(a, np.shape(b)), b), (op_name, field)
        assert shd.shard_ops(ops, m, {**KNOB_DEFAULTS}) == ops
        comm = par.stage_comm(m, k, system(), tokens, k["batch"])
        for key in ("comm_s", "p2p_s", "p2p_path_s", "intra_bytes", "inter_bytes", "energy_j"):
            assert np.all(comm[key] == 0.0)
        compute = rng.uniform(1e-3, 1.0, 50)
        assert np.array_equal(par.phase_time_s(compute, 0.1 * compute, comm, k, prefill, k["out_len"]), compute)
    assert np.array_equal(shd.memory_bytes_per_device(m, k, wb), memory_bytes(m, k, wb))


def test_more_link_bandwidth_never_slows():
    rng = np.random.default_rng(5)
    n = 2000
    m, k, sys = _cards(rng, n), _random_knobs(rng, n), _random_system(rng, n)
    faster = {**sys, "link_bw_bytes_per_s": sys["link_bw_bytes_per_s"] * rng.uniform(1.0, 10.0, n),
              "internode_bw_bytes_per_s": sys["internode_bw_bytes_per_s"] * rng.uniform(1.0, 10.0, n),
              "fabric_bw_bytes_per_s": sys["fabric_bw_bytes_per_s"] * rng.uniform(1.0, 10.0, n)}
    compute = rng.uniform(1e-4, 1e-1, n)
    for prefill in (True, False):
        tokens = k["batch"] * (k["in_len"] if prefill else 1.0)
        slow, fast = par.stage_comm(m, k, sys, tokens, k["batch"]), par.stage_comm(m, k, faster, tokens, k["batch"])
        for key in ("tp_s", "ep_s", "p2p_s", "p2p_path_s"):
            assert np.all(fast[key] <= slow[key] * (1 + 1e-12)), key
        t_slow = par.phase_time_s(compute, 0.1 * compute, slow, k, prefill)
        t_fast = par.phase_time_s(compute, 0.1 * compute, fast, k, prefill)
        assert np.all(t_fast <= t_slow * (1 + 1e-12))
        assert np.all(t_fast >= compute * (1 - 1e-12))  # communication never makes compute vanish


@pytest.mark.parametrize("system", ["hgx-h100-8", "l4-pcie-8", "tpu-v5e-pod"])
def test_data_parallel_replicas_scale_power_and_keep_efficiency(system):
    """dp replicas are independent: throughput and power scale by dp exactly, tokens/J and
    latencies do not change (the link energy of one replica is counted once per replica)."""
    import dse

    designs = {"tp": 2.0, "pp": 2.0, "micro_batches": 2.0, "batch": 8.0, "dp": np.array([1.0, 2.0, 4.0])}
    out = dse.Evaluator("llama-3-70b", system)(designs)
    for name in ("decode_tokens_per_s", "tokens_per_s", "decode_power_w", "avg_power_w"):
        np.testing.assert_allclose(out[name] / out[name][0], [1.0, 2.0, 4.0], rtol=1e-12, err_msg=name)
    for name in ("decode_tokens_per_j", "tokens_per_j", "ttft_s", "tpot_s"):
        np.testing.assert_allclose(out[name], out[name][0], rtol=1e-12, err_msg=name)


def test_a_model_too_big_for_one_device_fits_on_enough():
    cap = 80e9  # H100 80 GB
    m = load_model("llama-2-70b").fields
    k = knobs(batch=8.0, in_len=1024.0, out_len=256.0)
    wb = weight_bytes_per_param(k)
    assert float(shd.memory_bytes_per_device(m, k, wb)) > cap
    tp_mem = [float(shd.memory_bytes_per_device(m, {**k, "tp": tp}, wb)) for tp in (1.0, 2.0, 4.0, 8.0)]
    pp_mem = [float(shd.memory_bytes_per_device(m, {**k, "pp": pp}, wb)) for pp in (1.0, 2.0, 4.0, 8.0)]
    assert tp_mem == sorted(tp_mem, reverse=True) and pp_mem == sorted(pp_mem, reverse=True)
    assert tp_mem[2] < cap and pp_mem[2] < cap
    mix = load_model("mixtral-8x7b").fields
    ep_mem = [float(shd.memory_bytes_per_device(mix, {**k, "ep": ep}, wb)) for ep in (1.0, 2.0, 4.0, 8.0)]
    assert ep_mem == sorted(ep_mem, reverse=True) and ep_mem[0] > cap and ep_mem[1] < cap


def test_kv_heads_replicate_when_tp_exceeds_them():
    m = load_model("llama-2-70b").fields  # 8 KV heads
    k = knobs(batch=1.0, in_len=1.0, out_len=1.0)
    f8, f16 = shd.shard_factors(m, {**k, "tp": 8.0}), shd.shard_factors(m, {**k, "tp": 16.0})
    assert float(f8["attn"]["kv"]) == pytest.approx(1 / 8) and float(f16["attn"]["kv"]) == pytest.approx(1 / 8)
    assert float(f16["attn"]["flop"]) == pytest.approx(1 / 16)  # query heads keep splitting
    assert float(f16["qkv"]["store"]) == pytest.approx((4 + 2) / (64 + 16))


def test_pipeline_bubble_and_decode_latency():
    t_stage = 1.0
    for p in (1.0, 2.0, 4.0):
        for mb in (1.0, 2.0, 8.0):
            pre = par.pipeline_s(t_stage, 0.0, 0.0, 0.0, p, mb, prefill=True)
            assert pre == pytest.approx(mb + p - 1)  # busy mb of (mb + p - 1) slots: bubble (p-1)/(mb+p-1)
            dec = par.pipeline_s(t_stage, 0.0, 0.0, 0.0, p, mb, prefill=False)
            assert dec == pytest.approx(max(p, mb))
    # one micro-batch: a decode step is the sum of the stages (the others lack the LM head) and sends
    assert par.pipeline_s(1.0, 0.25, 0.01, 0.03, 4.0, 1.0, prefill=False) == pytest.approx(4 - 0.75 + 0.03)


def test_llama70b_tp2_decode_communication_on_nvswitch():
    """Two all-reduces per layer + the embedding's, batch 1, 16-bit: 161 x (ring over 2)."""
    m = load_model("llama-2-70b").fields
    sys = system(link_bw_bytes_per_s=450e9, link_latency_s=0.47e-6, collective_overhead_s=3.6e-6)
    k = knobs(batch=1.0, tp=2.0)
    comm = par.stage_comm(m, k, sys, 1.0, 1.0)
    ar = 3.6e-6 + 2 * 0.47e-6 + 8192 * 2 / 450e9
    ag = 3.6e-6 + 0.47e-6 + 32000 * 2 / 2 / 450e9
    assert float(comm["tp_s"]) == pytest.approx(161 * ar + ag)
    assert float(comm["ep_s"]) == 0.0 and float(comm["p2p_path_s"]) == 0.0


def test_moe_all_to_all_only_for_experts():
    mix, dense = load_model("mixtral-8x7b").fields, load_model("llama-2-7b").fields
    k = knobs(batch=16.0, ep=4.0, tp=2.0)
    assert float(par.stage_comm(dense, k, system(), 16.0, 16.0)["ep_s"]) == 0.0
    c = par.stage_comm(mix, k, system(), 16.0, 16.0)
    s = 16 / 4 * 2 * 4096 * 2 / 2  # tokens per group x top-k x d x 2 bytes / tp
    a2a = 3 * A + 3 / 4 * s / B  # 4 groups of tp=2 in one 8-device node: pairwise exchange over 4
    assert float(c["ep_s"]) == pytest.approx(2 * 32 * a2a)
    assert par.n_devices(k) == 8.0


# ---- system presets -------------------------------------------------------------------------

PLATFORMS_DIR = Path(__file__).resolve().parents[2] / "spaces" / "platforms"
SYSTEM_NAMES = sorted(n for n in builtin_names("platforms") if load_platform(n).base
                      and load_platform(n).fields["link_bw_bytes_per_s"] > 0)


def load_system(name: str) -> dict:
    """A system preset's fields (a platform preset that starts from a device with ``base:``)."""
    return dict(load_platform(name).fields)


def test_the_system_presets_exist():
    assert {"hgx-a100-8", "hgx-h100-8", "hgx-h200-8", "mi300x-8", "hls-gaudi2-8", "tpu-v5e-pod", "l4-pcie-8",
            "rtx4090-pcie-8"} <= set(SYSTEM_NAMES)


@pytest.mark.parametrize("name", SYSTEM_NAMES)
def test_system_presets_are_sourced_and_known(name):
    path = PLATFORMS_DIR / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["name"] == path.stem
    assert (PLATFORMS_DIR / f"{raw['base']}.yaml").is_file()
    numeric = [k for k in raw if k not in ("name", "description", "base", "sources")]
    assert set(numeric) <= set(raw["sources"]), set(numeric) - set(raw["sources"])
    sys = load_system(name)
    assert sys["link_bw_bytes_per_s"] > 0 and sys["n_devices_per_node"] >= 1
    # a TP=8 ring all-reduce of 16 KB (one decode token of an 8k-wide model) is micro-seconds
    # (over the node's devices where fewer than 8 and no network: h200-nvlink-2)
    n = 8.0 if sys["internode_bw_bytes_per_s"] > 0 else min(8.0, sys["n_devices_per_node"])
    t = float(coll.all_reduce(16384.0, n, sys).time_s)
    assert 1e-6 < t < 1e-4


def test_presets_rank_interconnects_as_expected():
    """The same 64 MB all-reduce over 8 devices: NVSwitch < Gaudi2 mesh < TPU ring < PCIe boxes."""
    t = {n: float(coll.all_reduce(64e6, 8.0, load_system(n)).time_s) for n in SYSTEM_NAMES}
    assert t["hgx-h100-8"] == pytest.approx(t["hgx-h200-8"])
    assert t["hgx-h100-8"] < t["hls-gaudi2-8"] < t["tpu-v5e-pod"] < t["l4-pcie-8"] < t["rtx4090-pcie-8"]
    # a pair on MI300X owns one 64 GB/s link of the mesh; on NVSwitch it gets the full 450
    mi, h100 = load_system("mi300x-8"), load_system("hgx-h100-8")
    assert float(coll.all_reduce(1e8, 2.0, mi).time_s) > 5 * float(coll.all_reduce(1e8, 2.0, h100).time_s)


def test_published_multi_rows_are_complete_and_consistent():
    import csv

    path = PLATFORMS_DIR.parents[1] / "validation" / "published_multi.csv"
    rows = list(csv.DictReader(path.open()))
    assert len(rows) >= 40
    systems = set(SYSTEM_NAMES)
    for r in rows:
        assert r["source"] and r["source_url"].startswith("https://"), r
        dims = [float(r[key]) for key in ("tp", "pp", "ep", "dp")]
        assert float(r["n_devices"]) == np.prod(dims)
        assert r["system"] == "" or r["system"] in systems
        assert r["tokens_per_s"] or r["ttft_s"] or r["tpot_s"], r
        assert (PLATFORMS_DIR / f"{r['platform']}.yaml").is_file() or "no platform" in r["notes"]


def test_collectives_carry_the_16_bit_residual_stream():
    """FP8/INT8/FP4 activations are a GEMM-input format: the hidden state that the all-reduces,
    stage sends and all-to-alls carry stays 16-bit (32-bit activations send 32)."""
    m = load_model("mixtral-8x7b").fields
    sys = dict(load_platform("hgx-h100-8").fields)
    k = knobs(tp=2.0, pp=2.0, ep=2.0, batch=8.0)
    comm = {bits: par.stage_comm(m, {**k, "a_bits": bits}, sys, 64.0, 8.0) for bits in (4.0, 8.0, 16.0, 32.0)}
    for key in ("tp_s", "ep_s", "p2p_path_s", "intra_bytes", "energy_j"):
        assert comm[4.0][key] == comm[8.0][key] == comm[16.0][key] < comm[32.0][key], key
