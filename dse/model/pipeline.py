"""The full analytic model: workload x hardware -> time, energy and the metric columns.

:func:`evaluate_arrays` is a pure function of arrays (no I/O, no globals, inputs not
mutated). Scalars broadcast, so a batch of one platform passes its fields as floats.
"""

from __future__ import annotations

import numpy as np

from dse.model import cost, jit, parallel, perf, pim, power, quality, sharding, silicon
from dse.model.arrays import fused, ndim, scale
from dse.model.serving_stage import serving_stage
from dse.model.workload import (
    Array,
    Op,
    decode_queries,
    draft_op,
    executed_knobs,
    memory_bytes,
    phase_ops,
    tokens_per_verify,
    weight_bytes_per_param,
)


def phase_costs(m: dict, k: dict, hw: dict, wb: Array) -> dict[str, dict[str, dict[str, Array]]]:
    """Per-phase, per-operator costs: ``{"prefill": {op: cost}, "decode": {op: cost}}``.

    Each cost holds ``time_s``, ``flop``, ``bytes`` (per step where ``per_step``; see
    :func:`op_totals`), ``s_per_flop`` and ``j_per_flop`` (achievable host seconds and joules per
    dense FLOP, :func:`dse.model.power.op_rates`), ``steps`` and, where PIM is possible,
    ``energy_j`` and ``on_pim``.
    """
    dims = None if parallel.is_single_device(k) else sharding.shard_dims(m, k)
    return _phase_costs(m, k, hw, wb, dims, decode_queries(k))


def _phase_costs(m: dict, k: dict, hw: dict, wb: Array, dims: dict[str, Array] | None,
                 queries: Array) -> dict[str, dict[str, dict[str, Array]]]:
    """:func:`phase_costs` with the knobs' :func:`dse.model.sharding.shard_dims` ``dims`` (None on one
    device) and decode ``queries`` (:func:`dse.model.workload.decode_queries`)."""
    lin_rate, attn_rate = power.op_rates(hw, k)
    spec = not (ndim(queries) == 0 and queries == 1.0)  # speculative decoding: verification steps
    if spec:
        per_step = tokens_per_verify(k)
        steps = np.ceil(k["out_len"] / per_step)
    else:
        per_step, steps = 1.0, k["out_len"]
    dec_tokens = k["batch"] * queries if spec else k["batch"]
    if dims is None:
        pre_ops = phase_ops(m, k, wb, k["batch"] * k["in_len"], prefill=True)
        dec_ops = phase_ops(m, k, wb, dec_tokens, prefill=False)
        if spec:
            dec_ops["draft"] = draft_op(m, k, wb)
        kv_heads = m["n_kv_heads"]
    else:  # the bottleneck device's share
        pre_ops, dec_ops, kv_per_launch = sharding.device_ops(m, k, wb, dims, dec_tokens, spec)
        kv_heads = m["n_kv_heads"] * kv_per_launch
    # decode attention's (sequence, KV head) streams on the device: the KV it reads per launch
    streams = k["batch"] * kv_heads
    # decode step j = 1..steps attends c = in_len + per_step * j: rewrite attention as linear in j
    dec_ops["attn"] = _in_steps(dec_ops["attn"], k["in_len"], per_step)
    on_pim = pim.pim_possible(hw, k)
    reach = pim.pim_reach_frac(m, k, hw) if on_pim else 1.0  # share of the offloaded data in PIM memory
    bw = perf.mem_s_per_byte(hw)
    attn_bw = perf.attn_s_per_byte(hw, bw, streams)
    c_sum = steps * (1.0 + steps) * 0.5  # sum of the decode step indices 1..steps

    prefill = {n: perf.op_cost(hw, op, 0.0, 0.0, 1.0, attn_rate if n == "attn" else lin_rate, bw, 0.0)
               for n, op in pre_ops.items()}
    r = hw["decode_attn_energy_ratio"]
    attn_ratio = 1.0 if ndim(r) == 0 and r == 1.0 else power.decode_attn_energy_ratio(hw, m, queries)

    def decode_cost(name: str, op: Op) -> dict[str, Array]:
        attn = name == "attn"
        shared = name in pre_ops and op.kernels is pre_ops[name].kernels  # the prefill operator's launches
        cost = perf.op_cost(hw, op, 1.0, steps, steps, attn_rate if attn else lin_rate, attn_bw if attn else bw, c_sum,
                            prefill[name]["launch_s"] if shared else None)
        if attn and not (ndim(attn_ratio) == 0 and attn_ratio == 1.0):
            cost["energy_ratio"] = attn_ratio  # decode attention's kernels: dearer than the rule
        return pim.with_pim(hw, k, name, op, 1.0, steps, c_sum, perf.op_totals(cost), reach) if on_pim else cost

    return {"prefill": prefill, "decode": {n: decode_cost(n, op) for n, op in dec_ops.items()}}


def _in_steps(op: Op, in_len: Array, per_step: Array) -> Op:
    """``op`` linear in the attended context ``c = in_len + per_step * j`` as linear in the step ``j``."""
    flop0, bytes0, flop1, bytes1 = fused(_in_steps_rows, 4, op.flop0, op.flop1, op.bytes0, op.bytes1, in_len, per_step)
    return op._replace(flop0=flop0, bytes0=bytes0, flop1=flop1, bytes1=bytes1)


@jit.kernel
def _in_steps_rows(flop0, flop1, bytes0, bytes1, in_len, per_step, flop0_out, bytes0_out, flop1_out,  # noqa: ANN001
                   bytes1_out):
    for i in range(flop0_out.shape[0]):
        f1, b1, c0, g = jit.at(flop1, i), jit.at(bytes1, i), jit.at(in_len, i), jit.at(per_step, i)
        flop0_out[i] = f1 * c0 + jit.at(flop0, i)
        bytes0_out[i] = b1 * c0 + jit.at(bytes0, i)
        flop1_out[i] = f1 * g
        bytes1_out[i] = b1 * g


def phase_system(k: dict, hw: dict, costs: dict[str, dict[str, Array]], phase: str, comm: dict[str, Array] | None,
                 capped_s_per_j: Array, devices: Array = 1.0) -> tuple[Array, Array, Array | None]:
    """(seconds, joules, watts) of one phase for one replica of ``tp * pp * ep`` devices (watts
    for the decode phase only, the one a metric reads; None for prefill).

    The operators in ``costs`` are the bottleneck device's (last stage, one micro-batch,
    :func:`dse.model.sharding.shard_ops`). Their time is overlapped with the stage's
    collectives ``comm`` (:func:`dse.model.parallel.stage_comm` of one pass; None on one device)
    and run through the pipeline (:func:`dse.model.parallel.phase_at`, one compiled pass); each of the
    replica's ``devices`` (``tp * pp * ep``) is charged the bottleneck device's dynamic energy for each
    micro-batch (an upper bound off the last stage) and its compute power while it waits in
    exposed collectives (:func:`dse.model.parallel.device_dynamic_j`), plus static power for
    the phase and the link energy. The power cap applies per device (``capped_s_per_j``:
    :func:`dse.model.perf.capped_s_per_j`). On one device this is the
    single-device model exactly. ``hw`` carries usable links (:func:`with_links`) where parallel.
    The watts are each device's (:func:`perf.device_power_w`: exactly ``tdp_w`` at the cap) times
    the devices, plus the link power.
    """
    prefill = phase == "prefill"
    raw_s, dyn_j = power.phase_time_and_dynamic_j(hw, costs)
    if comm is None:
        time_s, energy_j, watts = perf.capped_phase(hw, raw_s, dyn_j, capped_s_per_j)
        return time_s, energy_j, None if prefill else watts
    steps = 1.0 if prefill else costs["qkv"]["steps"]
    head = costs["lm_head"]
    # every micro-batch of the phase, and compute power held while waiting in the collectives; one compiled pass
    time_s, energy_j, watts = fused(
        _system_rows, 3, raw_s, head["time_s"], float(head["per_step"]), dyn_j, comm["comm_s"], comm["p2p_s"],
        comm["p2p_path_s"], steps, parallel.knob(k, "comm_overlap_frac"), parallel.knob(k, "pp"),
        parallel.knob(k, "micro_batches"), float(prefill), float(parallel.exposed(comm, steps)), capped_s_per_j,
        hw["static_power_w"], hw["tdp_w"], devices, comm["energy_j"])
    return time_s, energy_j, None if prefill else watts


@jit.kernel
def _system_rows(raw_s, head_s, head_per_step, dyn_j, comm_s, p2p_s, p2p_path_s, steps, overlap_frac, pp,  # noqa: ANN001
                 mb, prefill, exposed, s_per_j, static_w, tdp_w, devices, link_j_per_pass, time_s, energy_j, watts):
    """:func:`phase_system` of a replica per design: the pipeline and the collectives
    (:func:`dse.model.parallel.phase_at`, the LM head's time a phase total as
    :func:`dse.model.perf.op_total` makes it), then the power cap with every device and the links'
    energy of the ``steps`` passes (:func:`dse.model.perf.capped_phase_at`)."""
    for i in range(time_s.shape[0]):
        n = jit.at(steps, i)
        head = n * jit.at(head_s, i) if head_per_step else jit.at(head_s, i)
        t, device_j = parallel.phase_at(jit.at(raw_s, i), head, jit.at(dyn_j, i), jit.at(comm_s, i), jit.at(p2p_s, i),
                                        jit.at(p2p_path_s, i), n, jit.at(overlap_frac, i), jit.at(pp, i),
                                        jit.at(mb, i), prefill, exposed)
        time_s[i], energy_j[i], watts[i] = perf.capped_phase_at(
            t, device_j, jit.at(s_per_j, i), jit.at(static_w, i), jit.at(tdp_w, i), jit.at(devices, i),
            n * jit.at(link_j_per_pass, i), 1.0)


def phase_comms(m: dict, k: dict, hw: dict, dims: dict[str, Array], queries: Array) -> dict[str, dict[str, Array]]:
    """:func:`dse.model.parallel.stage_comm` of a prefill pass and of a decode step (``queries``
    positions per sequence, :func:`dse.model.workload.decode_queries`), set up once for both
    (``dims``: the knobs' :func:`dse.model.sharding.shard_dims`)."""
    b = k["batch"]
    step_tokens = b * queries
    plan = parallel.comm_plan(m, k, hw, dims)
    return {"prefill": parallel.pass_comm(plan, hw, b * k["in_len"], b),
            "decode": parallel.pass_comm(plan, hw, step_tokens, step_tokens)}


MISSING_LINK_BW_BYTES_PER_S = 1.0  # stand-in for a link a design needs but lacks: finite, and c_link flags it


def with_links(hw: dict) -> dict:
    """``hw`` with a missing device link or network (bandwidth 0) replaced by a 1 B/s stand-in,
    so that a parallel design on a platform without links gets finite (absurdly slow) metrics;
    :func:`missing_link` marks it infeasible."""
    out = dict(hw)
    for key in ("link_bw_bytes_per_s", "internode_bw_bytes_per_s"):
        bw = hw[key]
        if ndim(bw):
            out[key] = np.where(bw > 0, bw, MISSING_LINK_BW_BYTES_PER_S)
        elif not bw > 0:  # one platform: a number stays a number
            out[key] = MISSING_LINK_BW_BYTES_PER_S
    return out


def missing_link(k: dict, hw: dict) -> Array:
    """The ``c_link`` constraint: 1 where a replica's devices need a link (or, beyond one node, a
    network) that the platform lacks, else 0 (``<= 0`` feasible)."""
    link_bw, network_bw = hw["link_bw_bytes_per_s"], hw["internode_bw_bytes_per_s"]
    if ndim(link_bw) == 0 and ndim(network_bw) == 0 and link_bw > 0 and network_bw > 0:
        return 0.0  # the batch's platform has both
    replica = k["tp"] * k["pp"] * k["ep"]
    no_link = (replica > 1.0) & (hw["link_bw_bytes_per_s"] <= 0)
    no_network = (replica > hw["n_devices_per_node"]) & (hw["internode_bw_bytes_per_s"] <= 0)
    return np.asarray(no_link | no_network, dtype=float)


def evaluate_arrays(m: dict, k: dict, hw: dict, data: dict | None = None) -> dict[str, np.ndarray]:
    """The metric columns (DESIGN.md 3.2) for a batch of designs, stage by stage.

    ``m``: model-card fields, ``k``: knobs (:data:`dse.spec.registry.KNOB_DEFAULTS`),
    ``hw``: hardware fields; each value an array or a scalar (broadcast). Metrics are per
    system: ``dp`` replicas of ``tp * pp * ep`` devices each. ``data`` holds the static tables
    (:func:`dse.model_data.model_data`): with them the silicon stage provisions area, static
    power and the on-chip path energy before the performance and power stages, and the cost
    and quality stages follow (``m["quality_family"]``, ``hw["static_ref_w"]`` and
    ``hw["onchip_ref_pj_per_bit"]``, the preset's provisioned static power and on-chip rule
    value, come from the evaluator), then, where ``data["serving"]`` is true, the serving
    stage (:mod:`dse.model.serving_stage`, with ``data["workloads"]``' length moments);
    without ``data`` only the performance and power metrics. Every stage sees the knobs as the
    device runs them (:func:`dse.model.workload.executed_knobs`: FP8 without FP8 units runs W8A16).
    """
    k = executed_knobs(k, hw)
    if data is None:
        return _broadcast(performance(m, k, hw))
    tech = data["tech"]
    sil = silicon.provision(hw, tech)
    static_w = silicon.anchored_static_w(hw["static_power_w"], sil["provisioned_static_w"], hw["static_ref_w"])
    onchip = hw["onchip_energy_pj_per_bit"] * (silicon.onchip_rule_pj_per_bit(hw, data["onchip"], sil["area"])
                                               / hw["onchip_ref_pj_per_bit"])
    hw = {**hw, "onchip_energy_pj_per_bit": onchip, "static_power_w": static_w}
    out = performance(m, k, hw)
    area = sil["area"]
    out.update(cost.cost_metrics(sil["hw"], tech, k, out["n_devices"], out["decode_power_w"],
                                 out["decode_tokens_per_s"], area, sil["params"]))
    q = quality.ppl_delta(data["quality"], m["quality_family"], k["quant_method"], k["w_bits"], k["a_bits"],
                          k["kv_bits"], k["w_sparsity_frac"], k["nm_sparse"], k["w_group_size"], k["kv_method"],
                          k["sparse_method"], interpolated=False)
    out.update(die_area_mm2=area["die_area_mm2"], c_reticle_mm2=area["c_reticle"],
               c_shoreline_mm=area["c_shoreline"], provisioned_static_power_w=static_w,
               c_static_power_w=static_w - hw["tdp_w"], ppl_delta=q["ppl_delta"],
               quality_extrapolated=q["quality_extrapolated"])
    if data.get("serving"):
        out.update(serving_stage(m, k, hw if parallel.is_single_device(k) else with_links(hw), tech,
                                 data["workloads"], out["system_cost_usd"]))
    return _broadcast(out)


def _broadcast(out: dict[str, Array]) -> dict[str, np.ndarray]:
    """Every metric as a float64 array of the batch's shape (scalars broadcast, read-only views)."""
    arrays = {key: v if type(v) is np.ndarray and v.dtype == np.float64 else np.asarray(v, dtype=np.float64)
              for key, v in out.items()}
    shape = np.broadcast_shapes(*{a.shape for a in arrays.values()})
    return {key: a if a.shape == shape else np.broadcast_to(a, shape) for key, a in arrays.items()}


def performance(m: dict, k: dict, hw: dict) -> dict[str, Array]:
    """The workload, mapping, performance and power stages: time, energy, memory, devices."""
    wb = weight_bytes_per_param(k)
    single = parallel.is_single_device(k)
    dims = None if single else sharding.shard_dims(m, k)  # shared by the operators, the links and the memory
    replica = 1.0 if single else k["tp"] * k["pp"] * k["ep"]  # devices
    times, energies, watts = phase_totals(m, k, hw, wb, dims, replica)
    mem = memory_bytes(m, k, wb) if single else sharding.memory_bytes_of(m, k, wb, dims)  # the same on one device
    n_devices = parallel.n_devices(k) if single else scale(k["dp"], replica)
    names = ("tpot_s", "decode_tokens_per_s", "tokens_per_s", "decode_power_w", "avg_power_w", "decode_tokens_per_j",
             "tokens_per_j", "tdp_tokens_per_j", "g_memory_bytes")
    columns = fused(_metric_rows, len(names), times["prefill"], times["decode"], energies["prefill"],
                    energies["decode"], watts["decode"], k["dp"], k["batch"], k["out_len"], n_devices, hw["tdp_w"],
                    mem, hw["mem_capacity_bytes"])
    out = {"ttft_s": times["prefill"], **dict(zip(names[:-1], columns[:-1], strict=True)), "memory_bytes": mem,
           "g_memory_bytes": columns[-1], "n_devices": n_devices, "c_link": 0.0 if single else missing_link(k, hw)}
    return out


@jit.kernel
def _metric_rows(ttft_s, decode_s, prefill_j, decode_j, decode_w, dp, batch, out_len, n_devices, tdp_w,  # noqa: ANN001
                 mem, capacity, tpot_s, dec_tps, tps, dec_w, avg_w, dec_tpj, tpj, tdp_tpj, g_mem):
    """The metric columns of :func:`performance` per design: rates with the system's ``dp`` replicas,
    ``decode_power_w`` = energy / time (exactly ``tdp_w`` per device at the cap)."""
    for i in range(tpot_s.shape[0]):
        dec_s, n_out, replicas = jit.at(decode_s, i), jit.at(out_len, i), jit.at(dp, i)
        total_s = jit.at(ttft_s, i) + dec_s
        dec_j = jit.at(decode_j, i)
        total_j = jit.at(prefill_j, i) + dec_j
        per_total_s = 1.0 / total_s  # reciprocals: fewer divisions
        generated = jit.at(batch, i) * n_out
        tpot_s[i] = dec_s / n_out
        dec_tps[i] = generated * (1.0 / dec_s) * replicas
        tps[i] = generated * per_total_s * replicas
        dec_w[i] = jit.at(decode_w, i) * replicas
        avg_w[i] = total_j * per_total_s * replicas
        dec_tpj[i] = generated / dec_j
        tpj[i] = generated / total_j
        tdp_tpj[i] = dec_tps[i] * (1.0 / (jit.at(n_devices, i) * jit.at(tdp_w, i)))
        g_mem[i] = jit.at(mem, i) - jit.at(capacity, i)


def phase_totals(m: dict, k: dict, hw: dict, wb: Array, dims: dict[str, Array] | None, replica: Array,
                 ) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array | None]]:
    """Seconds, joules and watts of each phase (:func:`phase_system`) for ``replica`` devices; ``dims``:
    the knobs' :func:`dse.model.sharding.shard_dims`, None on one device. The operator costs and the
    collectives are freed on return, before the metrics are formed (smaller working set)."""
    queries = decode_queries(k)
    costs = _phase_costs(m, k, hw, wb, dims, queries)
    linked = hw if dims is None else with_links(hw)  # missing links: finite stand-ins (c_link flags them)
    comms = {phase: None for phase in costs} if dims is None else phase_comms(m, k, linked, dims, queries)
    capped_s_per_j = perf.capped_s_per_j(hw)
    times: dict[str, Array] = {}
    energies: dict[str, Array] = {}
    watts: dict[str, Array | None] = {}
    for phase, ops in costs.items():
        times[phase], energies[phase], watts[phase] = phase_system(k, linked, ops, phase, comms[phase], capped_s_per_j,
                                                                   replica)
    return times, energies, watts
