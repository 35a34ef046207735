"""Performance model: roofline time per operator, exact decode sums, power capping.

Pure functions over numpy arrays. ``hw`` holds hardware fields (:mod:`dse.spec.registry`),
SI units. Time of one operator (DESIGN.md section 4)::

    t = max(flop / (peak(bits) * compute_eff_frac * sparse_gain),
            bytes / (mem_bw_bytes_per_s * mem_bw_eff_frac)) + kernels * kernel_overhead_s

Decode attention reads at most ``streams x attn_stream_bw_bytes_per_s`` (:func:`attn_s_per_byte`).
"""

from __future__ import annotations

import numpy as np

from dse.model import jit
from dse.model.arrays import accumulate, fused, ndim
from dse.model.workload import Array, Op

# Native precisions from narrow to wide; a precision the hardware lacks runs at the
# next wider native one (emulation never gets free speed).
_LADDER: tuple[tuple[float, str], ...] = (
    (4.0, "flop4_peak_flop_per_s"),
    (8.0, "flop8_peak_flop_per_s"),
    (16.0, "flop16_peak_flop_per_s"),
    (32.0, "flop32_peak_flop_per_s"),
)


def peaks(hw: dict) -> tuple[Array, ...]:
    """The dense peaks of :data:`_LADDER` (4, 8, 16 and 32 bits), FLOP/s: kernel arguments."""
    return tuple(hw[key] for _, key in _LADDER)


@jit.kernel
def native_rate_at(bits: float, p4: float, p8: float, p16: float, p32: float, eff: float) -> tuple[float, float]:
    """(achievable seconds per dense FLOP, native bits) of one design (compiled): the narrowest
    native precision (peak > 0) >= ``bits``, 32-bit the fallback, at ``compute_eff_frac`` ``eff``."""
    native, peak = 32.0, p32
    if bits <= 16.0 and p16 > 0.0:  # narrower native widths overwrite wider ones
        native, peak = 16.0, p16
    if bits <= 8.0 and p8 > 0.0:
        native, peak = 8.0, p8
    if bits <= 4.0 and p4 > 0.0:
        native, peak = 4.0, p4
    return 1.0 / (peak * eff), native


@jit.kernel
def _compute_s_per_flop_rows(bits, p4, p8, p16, p32, eff, s_out, native_out):  # noqa: ANN001
    for i in range(s_out.shape[0]):
        s_out[i], native_out[i] = native_rate_at(jit.at(bits, i), jit.at(p4, i), jit.at(p8, i), jit.at(p16, i),
                                                 jit.at(p32, i), jit.at(eff, i))


def compute_s_per_flop(hw: dict, bits: Array) -> tuple[Array, Array]:
    """(achievable seconds per dense FLOP, native bits) for arithmetic that needs ``bits``
    (:func:`native_rate_at`; reciprocal rates keep divisions out of the per-operator hot path)."""
    return fused(_compute_s_per_flop_rows, 2, bits, *peaks(hw), hw["compute_eff_frac"])


def mem_s_per_byte(hw: dict) -> Array:
    """Seconds per main-memory byte at the achievable bandwidth."""
    return 1.0 / (hw["mem_bw_bytes_per_s"] * hw["mem_bw_eff_frac"])


def attn_s_per_byte(hw: dict, s_per_byte: Array, streams: Array) -> Array:
    """Seconds per byte of decode attention with ``streams`` (sequence, KV head) pairs on the device.

    A decode-attention kernel that gives each (sequence, KV head) one thread block and never
    splits the context (PyTorch SDPA's flash kernel) reads the KV cache at
    ``min(achievable bandwidth, streams x attn_stream_bw_bytes_per_s)``; 0 (the default): not limited.
    """
    r = hw.get("attn_stream_bw_bytes_per_s", 0.0)
    if ndim(r) == 0:
        return s_per_byte if r <= 0.0 else np.maximum(s_per_byte, 1.0 / (r * streams))
    return np.maximum(s_per_byte, np.where(r > 0.0, 1.0 / (np.maximum(r, 1e-30) * streams), 0.0))


def sum_linear_nonempty(x0: Array, x1: Array, n: Array, c_sum: Array) -> Array:
    """``sum_{c} (x0 + x1 * c)`` over ``n >= 1`` integer ``c`` that sum to ``c_sum``."""
    return accumulate(n * x0, x1 * c_sum)


def sum_max_linear(a0: Array, a1: Array, b0: Array, b1: Array, lo: Array, hi: Array,
                   n: Array, c_sum: Array) -> Array:
    """Exact ``sum_{c=lo}^{hi} max(a0 + a1 c, b0 + b1 c)`` over the integers, in closed form.

    The range is non-empty: ``n = hi - lo + 1 >= 1`` terms whose ``c`` sum to ``c_sum``.
    ``max(a, b) = b + max(u, 0)`` with ``u = a - b`` linear in ``c``, positive on one
    side of the crossover ``c* = -(a0 - b0) / (a1 - b1)``: this is the decode sum across
    the compute/memory regime change. Division by ``u1 = 0`` is intended: ``c*`` becomes
    +-inf (the whole range or none) or NaN (``u == 0``, which adds nothing).
    """
    return fused(_sum_max_linear_rows, 1, a0, a1, b0, b1, lo, hi, n, c_sum)[0]


@jit.kernel
def _sum_max_linear_at(a0: float, a1: float, b0: float, b1: float, lo: float, hi: float, n: float,
                       c_sum: float) -> float:
    """:func:`sum_max_linear` of one design (compiled)."""
    u0 = a0 - b0
    u1 = a1 - b1
    cross = np.fmin(np.fmax(-u0 / u1, lo - 1.0), hi + 1.0)  # fmax maps NaN to lo - 1
    if u1 >= 0.0:  # u > 0 right of c* when rising, left of it when falling
        pos_lo, pos_hi = np.floor(cross) + 1.0, hi
    else:
        pos_lo, pos_hi = lo, np.ceil(cross) - 1.0
    terms = np.maximum(pos_hi - pos_lo + 1.0, 0.0)
    return (n * b0 + b1 * c_sum) + (terms * u0 + terms * (pos_lo + pos_hi) * 0.5 * u1)


@jit.kernel
def _sum_max_linear_rows(a0, a1, b0, b1, lo, hi, n, c_sum, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = _sum_max_linear_at(jit.at(a0, i), jit.at(a1, i), jit.at(b0, i), jit.at(b1, i), jit.at(lo, i),
                                    jit.at(hi, i), jit.at(n, i), jit.at(c_sum, i))


@jit.kernel
def power_capped_s(time_s: float, dynamic_j: float, s_per_j: float) -> float:
    """Stretch ``time_s`` so that static + dynamic power never exceeds ``tdp_w`` (compiled, one design).

    A chip at its power limit lowers its clock: the dynamic energy is unchanged and
    the time becomes ``dynamic_j / (tdp_w - static_power_w)`` when that is longer
    (``s_per_j``: :func:`capped_s_per_j`).
    """
    return np.maximum(dynamic_j * s_per_j, time_s)


def capped_s_per_j(hw: dict) -> Array:
    """Seconds per joule of dynamic energy at the power cap, ``1 / (tdp_w - static_power_w)``
    (the headroom floored at 1e-9 W)."""
    return 1.0 / np.maximum(hw["tdp_w"] - hw["static_power_w"], 1e-9)


@jit.kernel
def device_power_w(dynamic_j: float, time_s: float, static_power_w: float, tdp_w: float) -> float:
    """Power of one device that spends ``dynamic_j`` in ``time_s`` (:func:`power_capped_s`'s time;
    compiled, one design): static + dynamic / time, which is ``tdp_w`` at the cap. Computed as
    energy / time it read up to 2 ulps above ``tdp_w`` there (15.000000000000002 W on a 15 W SoC)
    and failed a ``decode_power_w <= tdp_w`` constraint; bounded by ``tdp_w`` (by the static power
    where that exceeds it, off by the 1e-9 W headroom floor) it is exact at the cap and unchanged,
    to rounding, below it."""
    return np.minimum(dynamic_j / time_s + static_power_w, np.maximum(tdp_w, static_power_w))


def capped_phase(hw: dict, raw_s: Array, dynamic_j: Array, s_per_j: Array, devices: Array | None = None,
                 link_j: Array = 0.0) -> tuple[Array, Array, Array]:
    """(seconds, joules, watts) of a phase whose devices each spend ``dynamic_j`` over ``raw_s``
    before the power cap (one compiled pass): the time :func:`power_capped_s`, the energy with
    static power, the watts :func:`device_power_w`. With ``devices`` (a replica's), energy and
    watts are those devices' plus the links' ``link_j`` (and its power over the phase)."""
    return fused(_capped_phase_rows, 3, raw_s, dynamic_j, s_per_j, hw["static_power_w"], hw["tdp_w"],
                 1.0 if devices is None else devices, link_j, 0.0 if devices is None else 1.0)


@jit.kernel
def capped_phase_at(raw_s: float, dynamic_j: float, s_per_j: float, static_w: float, tdp_w: float, devices: float,
                    link_j: float, linked: float) -> tuple[float, float, float]:
    """:func:`capped_phase` of one design (compiled)."""
    t = power_capped_s(raw_s, dynamic_j, s_per_j)
    w = device_power_w(dynamic_j, t, static_w, tdp_w)
    e = static_w * t + dynamic_j
    if linked:
        w = w * devices + link_j / t
        e = e * devices + link_j
    return t, e, w


@jit.kernel
def _capped_phase_rows(raw_s, dynamic_j, s_per_j, static_w, tdp_w, devices, link_j, linked,  # noqa: ANN001
                       time_s, energy_j, watts):
    for i in range(time_s.shape[0]):
        time_s[i], energy_j[i], watts[i] = capped_phase_at(
            jit.at(raw_s, i), jit.at(dynamic_j, i), jit.at(s_per_j, i), jit.at(static_w, i), jit.at(tdp_w, i),
            jit.at(devices, i), jit.at(link_j, i), linked)


@jit.kernel
def sparse_exec_frac_at(nm_sparse: float, nm_sparsity_native: float) -> float:
    """Share of a weight GEMM's dense FLOPs the hardware executes (compiled, one design): 1/2 for
    2:4-sparse weights (``nm_sparse``) on native sparse tensor units (``nm_sparsity_native``), which
    skip the zero half (twice the dense math rate, NVIDIA A100 architecture whitepaper), else 1. It
    scales the GEMM's time and its compute energy alike."""
    return 0.5 if nm_sparse > 0.0 and nm_sparsity_native > 0.0 else 1.0


def op_cost(hw: dict, op: Op, lo: Array, hi: Array, steps: Array, rate: tuple[Array, Array],
            s_per_byte: Array, c_sum: Array, launch_s: Array | None = None) -> dict[str, Array]:
    """Time (s, with launch overhead), FLOPs and bytes of one operator.

    Operators that do not depend on the context are costed per step (``per_step``
    True: multiply by the phase's steps, see :func:`op_totals`):
    ``max(flop * s_per_flop, bytes * s_per_byte) + launch_s``; decode attention is
    summed exactly over the steps ``j = lo..hi`` (:func:`sum_max_linear`). ``s_per_byte`` is the
    reciprocal achievable memory bandwidth, ``rate`` ``(achievable seconds, joules per dense FLOP)``
    (:func:`dse.model.power.op_rates`: the executed share, precision and arithmetic included); both
    are kept (``s_per_flop``, ``j_per_flop``) for the energy and the breakdown.
    ``c_sum`` is the sum of the step indices ``lo..hi`` (used only by context-dependent operators).
    ``launch_s``: ``op.kernels * kernel_overhead_s`` where the caller has it. One compiled pass each.
    """
    s_per_flop, j_per_flop = rate
    if launch_s is None:
        launch_s = op.kernels * hw["kernel_overhead_s"]
    if op.flop1 is None:  # no context dependence: every step costs the same
        (step_s,) = fused(_step_cost_rows, 1, op.flop0, op.bytes0, s_per_flop, s_per_byte, launch_s)
        cost = {"time_s": step_s, "flop": op.flop0, "bytes": op.bytes0, "per_step": True}
    else:
        time_s, flop, nbytes = fused(_context_cost_rows, 3, op.flop0, op.flop1, op.bytes0, op.bytes1, s_per_flop,
                                     s_per_byte, lo, hi, steps, c_sum, launch_s)
        cost = {"time_s": time_s, "flop": flop, "bytes": nbytes, "per_step": False}
    cost.update(s_per_flop=s_per_flop, j_per_flop=j_per_flop, steps=steps, launch_s=launch_s)
    return cost


@jit.kernel
def _step_cost_rows(flop, nbytes, s_per_flop, s_per_byte, launch_s, out):  # noqa: ANN001
    for i in range(out.shape[0]):
        out[i] = np.maximum(jit.at(flop, i) * jit.at(s_per_flop, i),
                            jit.at(nbytes, i) * jit.at(s_per_byte, i)) + jit.at(launch_s, i)


@jit.kernel
def _context_cost_rows(flop0, flop1, bytes0, bytes1, s_per_flop, s_per_byte, lo, hi, steps, c_sum,  # noqa: ANN001
                       launch_s, time_s, flop, nbytes):
    for i in range(time_s.shape[0]):
        f0, f1, b0, b1 = jit.at(flop0, i), jit.at(flop1, i), jit.at(bytes0, i), jit.at(bytes1, i)
        spf, spb, n, cs = jit.at(s_per_flop, i), jit.at(s_per_byte, i), jit.at(steps, i), jit.at(c_sum, i)
        time_s[i] = (_sum_max_linear_at(f0 * spf, f1 * spf, b0 * spb, b1 * spb, jit.at(lo, i), jit.at(hi, i), n, cs)
                     + n * jit.at(launch_s, i))
        flop[i] = n * f0 + f1 * cs
        nbytes[i] = n * b0 + b1 * cs


def op_totals(cost: dict[str, Array]) -> dict[str, Array]:
    """The cost with ``time_s``, ``flop`` and ``bytes`` as totals over the phase."""
    if not cost["per_step"]:
        return cost
    return {**cost, "per_step": False, **{key: op_total(cost, key) for key in ("time_s", "flop", "bytes")}}


def op_total(cost: dict[str, Array], key: str) -> Array:
    """``cost[key]`` (``time_s``, ``flop`` or ``bytes``) as a total over the phase."""
    return cost["steps"] * cost[key] if cost["per_step"] else cost[key]
