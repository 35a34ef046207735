"""Collective communication over ``n`` devices: closed-form time (s) and bytes on the wire.

Pure numpy over arrays (scalars broadcast). The cost model is Hockney's ``alpha + bytes *
beta`` per step, as in Thakur, Rabenseifner and Gropp, "Optimization of collective
communication operations in MPICH", IJHPCA 19(1), 2005 (below: *Thakur05*):

* ``S``: bytes of the buffer each device holds (all-reduce, reduce-scatter input,
  all-gather output, all-to-all send buffer), ``n``: devices in the group;
* ``B``: link bandwidth per device per direction (bytes/s) times its achievable fraction
  (``link_bw_eff_frac``, 1 by default; calibrated like ``mem_bw_eff_frac``), ``beta = 1 / B``;
* ``alpha``: latency of one step (``link_latency_s``), plus one fixed software overhead
  per collective call (``collective_overhead_s``, NCCL's "base latency").

Formulas per algorithm (``ceil(log2 n)`` written ``lg``); the reduction arithmetic
(Thakur05's gamma term) is neglected, a GPU reduces far faster than a link delivers:

=========================  ==============================  ===============================
collective                 ring (``ALGO_RING``)            tree (``ALGO_TREE``)
=========================  ==============================  ===============================
all-reduce                 2(n-1) a + 2(n-1)/n S/B          2 lg a + 2(n-1)/n S/B
                           (Patarasuk & Yuan 2009;          (Rabenseifner: recursive halving
                           NCCL ring = reduce-scatter +     + doubling, Thakur05 sec. 4.4;
                           all-gather)                      NCCL double binary tree has the
                                                            same log latency)
reduce-scatter             (n-1) a + (n-1)/n S/B            lg a + (n-1)/n S/B (rec. halving)
all-gather                 (n-1) a + (n-1)/n S/B            lg a + (n-1)/n S/B (rec. doubling)
all-to-all                 (n-1) a + (n-1)/n S/B            lg a + lg S/(2B) (Bruck, Thakur05)
                           (pairwise exchange, Thakur05)
=========================  ==============================  ===============================

``ALGO_DIRECT`` exchanges with every peer at once (one step): all-reduce is the one-shot
``a + (n-1) S/B`` or two-shot ``2a + 2(n-1)/n S/B`` kernel, whichever is faster (the custom
all-reduce of TensorRT-LLM and vLLM, ``custom_all_reduce.cuh``); reduce-scatter,
all-gather and all-to-all take ``a + (n-1)/n S/B``. ``ALGO_AUTO`` takes the fastest of
the three, as NCCL's tuner does from its own cost table (``src/graph/tuning.cc``).

Topologies (``link_topology``) change the usable bandwidth and which algorithms are native:

* ``SWITCH`` (NVSwitch, a fat-tree network): every device owns ``B`` into a non-blocking
  switch; all formulas as above.
* ``RING`` (ring/torus, e.g. TPU ICI): only neighbour exchange is native, so tree and
  direct fall back to the ring algorithm; all-to-all is bisection bound on a
  bidirectional ring: ``floor(n/2) a + floor(n^2/4)/n S/B`` (``sum_d min(d, n-d) =
  floor(n^2/4)`` byte-hops per source over ``n`` links' worth of injection bandwidth).
  ``B`` is what a 1-D bidirectional ring can inject (both neighbours' links).
* ``FULL_MESH`` (AMD Infinity Fabric on MI300X, Gaudi2's on-board RoCE): one dedicated
  link to each of the ``g - 1`` other devices of the node (``g = n_devices_per_node``),
  ``B / (g - 1)`` each; a group of ``n`` uses ``n - 1`` of them: ``B_eff = B (n-1)/(g-1)``
  (``n - 1`` edge-disjoint directed rings exist in the complete digraph, so rings reach it).
* ``PCIE_HOST``: devices on PCIe under one host; every transfer crosses the host's shared
  fabric, ``fabric_bw_bytes_per_s`` (aggregate per direction) divided among the devices
  that communicate at once. Any topology may set that cap (0 = non-blocking).

Groups larger than a node are hierarchical (``n_per_node`` members in each of
``N = ceil(n / n_per_node)`` nodes, one NIC per device, rail-aligned):
all-reduce = intra reduce-scatter + inter all-reduce of ``S / n_per_node`` + intra
all-gather (the 2-D/hierarchical all-reduce of Jia et al., arXiv 1807.11205, and of NCCL's
NVLink+IB trees); all-gather = inter all-gather of ``S / n_per_node`` + intra all-gather;
reduce-scatter its mirror; all-to-all = intra part ``(n_per_node - 1)/n S`` + inter part
``(n - n_per_node)/n S`` by pairwise exchange over nodes, not overlapped. The network is a
non-blocking switch with ``internode_bw_bytes_per_s`` per device and ``internode_latency_s``.

Bytes on the wire are what one device sends (forwarding included); energy is those bytes
times ``link_energy_pj_per_bit`` (intra) or ``internode_energy_pj_per_bit`` (inter).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from dse.model import jit
from dse.model.arrays import accumulate, all_rows, any_rows, fused, ndim
from dse.spec.registry import HARDWARE_BY_NAME, HARDWARE_DEFAULTS, KNOB_BY_NAME
from dse.spec.units import BITS_PER_BYTE, PJ

Array = np.ndarray | float

SWITCH, RING, PCIE_HOST, FULL_MESH = 0.0, 1.0, 2.0, 3.0
TOPOLOGY_CODES: dict[str, float] = {c: float(i) for i, c in enumerate(HARDWARE_BY_NAME["link_topology"].choices)}
ALGO_RING, ALGO_TREE, ALGO_DIRECT, ALGO_AUTO = 0.0, 1.0, 2.0, 3.0
ALGO_CODES: dict[str, float] = {c: float(i) for i, c in enumerate(KNOB_BY_NAME["collective_algo"].choices)}
COLLECTIVES: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")

# System fields read here (SI units, declared in dse.spec.registry); a missing field takes its
# registry default: one device per node and no link, so any collective over n > 1 devices
# costs infinite time.
SYSTEM_FIELDS: tuple[str, ...] = (
    "n_devices_per_node", "link_topology", "link_bw_bytes_per_s", "link_bw_eff_frac", "link_latency_s",
    "link_energy_pj_per_bit", "fabric_bw_bytes_per_s", "collective_overhead_s", "internode_bw_bytes_per_s",
    "internode_bw_eff_frac", "internode_latency_s", "internode_energy_pj_per_bit",
)
SYSTEM_FIELD_DEFAULTS: dict[str, float] = {name: HARDWARE_DEFAULTS[name] for name in SYSTEM_FIELDS}


class Comm(NamedTuple):
    """Time of one collective (s) and bytes one device sends inside the node and between nodes."""

    time_s: Array
    intra_bytes: Array
    inter_bytes: Array


class Link(NamedTuple):
    """One level of the interconnect as a collective sees it: effective ``bw`` (bytes/s per
    device per direction), step latency ``lat_s`` and topology code."""

    bw: Array
    lat_s: Array
    topology: Array


def field(sys: dict, key: str) -> Array:
    """``sys[key]`` or its default from :data:`SYSTEM_FIELD_DEFAULTS`."""
    return sys.get(key, SYSTEM_FIELD_DEFAULTS[key])


def xfer_s(nbytes: Array, bw: Array) -> Array:
    """``nbytes / bw`` seconds (``nbytes >= 0``); 0 for no bytes, +inf for bytes over no
    bandwidth (never NaN). One positive bandwidth for the batch takes one multiplication."""
    if ndim(bw) == 0 and bw > 0:
        return nbytes * (1.0 / bw)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(nbytes > 0, nbytes / np.where(bw > 0, bw, 0.0), 0.0)


def _lg(n: Array) -> Array:
    """``ceil(log2 n)`` steps of a recursive-doubling/halving algorithm (0 for n <= 1)."""
    return np.ceil(np.log2(np.maximum(n, 1.0)))


# ---- flat collectives: (time_s, bytes sent per device) within one level ------------------
# Each row runs one algorithm, ``time = steps * alpha + wire / B``: its (latency steps, wire
# bytes) are selected per row first and timed once. Ring, tree and direct send the same wire
# bytes (Bruck's all-to-all and the ring topology's all-to-all aside); the direct all-reduce
# takes the faster of its two-shot and one-shot kernels (ties keep the one-shot).

def _batch_rows(rows: Array) -> bool | np.ndarray:
    """A row mask as one bool when it holds the same value for the whole batch."""
    if ndim(rows) == 0:
        return bool(rows)
    return True if rows.all() else rows if rows.any() else False


def _native_rows(rows: Array, native: bool | np.ndarray) -> bool | np.ndarray:
    """The rows of an algorithm (``rows``) where it is native (:func:`_batch_rows`)."""
    if native is False:
        return False
    return _batch_rows(rows if native is True else rows & native)


def _pick(rows: bool | np.ndarray, a: Array, b: Array) -> Array:
    """``a`` where ``rows``, else ``b``; one select only when the rows differ."""
    return a if rows is True else b if rows is False else np.where(rows, a, b)


class Group(NamedTuple):
    """``n`` devices on one level ``ln`` running ``algo``: what every collective over them shares.

    ``native``, ``tree``, ``direct``: the rows where the topology is not a ring and where the
    tree or the direct algorithm runs (:func:`_batch_rows`); ``steps``: the all-gather's latency
    steps (an all-reduce takes twice as many), ``lat_s`` their latency; ``frac``: ``(n - 1) / n``;
    ``lg``: ``ceil(log2 n)`` (None without tree rows); ``one_shot_lat_s``: the one-shot
    all-reduce's latency (one step where ``n > 1``) on direct rows, NaN on the others (None without
    direct rows).
    """

    n: Array
    ln: Link
    native: bool | np.ndarray
    tree: bool | np.ndarray
    direct: bool | np.ndarray
    n1: Array
    steps: Array
    lat_s: Array
    frac: Array
    lg: Array | None
    one_shot_lat_s: Array | None


def group(n: Array, ln: Link, algo: Array = ALGO_RING) -> Group:
    """The :class:`Group` of ``n`` devices on ``ln`` running ``algo``. Tree and direct algorithms
    are not native on a ring topology and fall back to the ring algorithm."""
    native = _batch_rows(ln.topology != RING)
    tree = _native_rows(algo == ALGO_TREE, native)
    direct = _native_rows(algo >= ALGO_DIRECT, native)  # auto: direct
    n1 = n - 1.0
    steps, lg = n1, None  # the ring's
    if tree is not False:  # recursive halving / doubling
        lg = _lg(n)
        steps = _pick(tree, lg, steps)
    if direct is not False:  # one step; a one-device group takes none (ring and tree steps vanish there by themselves)
        steps = _pick(direct, n > 1.0, steps)
    lat_s = steps * ln.lat_s
    one_shot_lat_s = None if direct is False else _pick(direct, lat_s, math.nan)  # one step, as the two-shot's
    return Group(n, ln, native, tree, direct, n1, steps, lat_s, n1 / n, lg, one_shot_lat_s)


def _finite(x: Array) -> bool:
    """True when ``x`` (a scalar or an array) is finite everywhere."""
    return math.isfinite(x) if ndim(x) == 0 else bool(np.isfinite(x).all())


# ---- levels of the interconnect ---------------------------------------------------------

def intra_link(sys: dict, n_local: Array, n_sharing: Array | None = None) -> Link:
    """The node's interconnect as seen by a group with ``n_local`` members in the node.

    Full mesh: ``B (n_local - 1) / (g - 1)``; a shared fabric caps every device at
    ``fabric_bw_bytes_per_s / n_sharing`` (``n_sharing`` devices communicating at once,
    default ``n_local``).
    """
    topo = field(sys, "link_topology")
    bw = field(sys, "link_bw_bytes_per_s") * field(sys, "link_bw_eff_frac")
    if any_rows(topo == FULL_MESH):
        g = field(sys, "n_devices_per_node")
        mesh_frac = np.clip((n_local - 1.0) / np.maximum(g - 1.0, 1.0), 0.0, 1.0)
        bw = bw * mesh_frac if all_rows(topo == FULL_MESH) else np.where(topo == FULL_MESH, bw * mesh_frac, bw)
    fabric = field(sys, "fabric_bw_bytes_per_s")
    if any_rows(fabric > 0):
        share = np.maximum(n_local if n_sharing is None else n_sharing, 1.0)
        bw = np.where(fabric > 0, np.minimum(bw, fabric / share), bw)
    return Link(bw, field(sys, "link_latency_s"), topo)


def inter_link(sys: dict) -> Link:
    """The scale-out network: a non-blocking switch, one NIC's bandwidth per device."""
    bw = field(sys, "internode_bw_bytes_per_s") * field(sys, "internode_bw_eff_frac")
    return Link(bw, field(sys, "internode_latency_s"), SWITCH)


def _members_per_node(sys: dict, n: Array, n_per_node: Array | None) -> Array:
    a = np.minimum(n, field(sys, "n_devices_per_node")) if n_per_node is None else np.minimum(n_per_node, n)
    return np.maximum(a, 1.0)


def collective(kind: str, nbytes: Array, n: Array, sys: dict, algo: Array = ALGO_RING,
               n_per_node: Array | None = None, n_sharing: Array | None = None) -> Comm:
    """Time and wire bytes of one collective, hierarchical when the group spans nodes.

    ``kind``: one of :data:`COLLECTIVES`; ``nbytes``: buffer bytes per device (see the
    module docstring); ``n``: group size; ``n_per_node``: members of the group in one node
    (default ``min(n, n_devices_per_node)``; a strided group has fewer); ``algo``: an
    ``ALGO_*`` code used at both levels. Adds ``collective_overhead_s`` once when ``n > 1``.
    """
    return collectives(((kind, nbytes),), n, sys, algo, n_per_node, n_sharing)[0]


def collectives(calls: tuple[tuple[str, Array], ...], n: Array, sys: dict, algo: Array = ALGO_RING,
                n_per_node: Array | None = None, n_sharing: Array | None = None) -> list[Comm]:
    """:func:`collective` of each ``(kind, nbytes)`` of ``calls`` over one group (:func:`collectives_in`
    of :func:`setup`)."""
    return collectives_in(calls, setup(n, sys, algo, n_per_node, n_sharing))


class Setup(NamedTuple):
    """What every collective over one group of ``n`` devices shares: the group ``whole`` on the
    node's interconnect, the call ``overhead_s``, and where the group spans nodes (``hier``: the
    rows, None when no row does) its ``local`` group of ``a`` members per node and the ``net``
    group of its nodes."""

    n: Array
    whole: Group
    overhead_s: Array
    a: Array
    hier: Array | None
    local: Group | None
    net: Group | None


def setup(n: Array, sys: dict, algo: Array = ALGO_RING, n_per_node: Array | None = None,
          n_sharing: Array | None = None) -> Setup:
    """The :class:`Setup` of a group of ``n`` devices (arguments as :func:`collective`): links,
    algorithm masks, step counts and overhead, for any number of collectives over the group."""
    one_node = n_per_node is None and all_rows(n <= field(sys, "n_devices_per_node"))
    # every group of the batch fits in a node: flat, no hierarchy to set up (intra_link needs
    # no max(n, 1): it clips its mesh share and its fabric share by itself)
    a = n if one_node else _members_per_node(sys, n, n_per_node)
    intra = intra_link(sys, a, n_sharing)
    whole = group(n, intra, algo)
    overhead_s = field(sys, "collective_overhead_s")
    overhead = overhead_s * (n > 1.0) if any_rows(overhead_s != 0.0) else 0.0
    nodes = None if one_node else np.ceil(n / a)
    if nodes is None or not any_rows(nodes > 1.0):
        return Setup(n, whole, overhead, a, None, None, None)
    return Setup(n, whole, overhead, a, nodes > 1.0, group(a, intra, algo), group(nodes, inter_link(sys), algo))


def collectives_in(calls: tuple[tuple[str, Array], ...], s: Setup) -> list[Comm]:
    """:func:`collective` of each ``(kind, nbytes)`` of ``calls`` over the group set up in ``s``
    (one compiled pass each, :func:`call_at`)."""
    return [Comm(*fused(_call_rows, 3, KIND_CODES[kind], nbytes, *call_args(kind, s))) for kind, nbytes in calls]


# ---- one collective of one design, compiled: what a call adds to its group's set-up --------
# Each level (the whole group on the node's link; where the group spans nodes, a node's members
# and the nodes on the network) runs ``time = xfer(c * s) + lat`` with its coefficients from the
# set-up (:func:`call_args`): ring, tree and direct send the same wire bytes (Bruck's all-to-all
# and the ring topology's all-to-all aside), the direct all-reduce also times its one-shot kernel.

ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL = 0, 1, 2, 3  # kinds inside kernels
KIND_CODES: dict[str, int] = {name: i for i, name in enumerate(COLLECTIVES)}
N_CALL_ARGS = 25  # the length of call_args' tuple


def _level_args(kind: str, g: Group) -> tuple[Array, Array, Array, Array, Array]:
    """``(c, lat, n1, one_shot_lat, zero)`` of one collective ``kind`` over the group ``g``
    (:func:`level_at`): its wire bytes per buffer byte and latency; the one-shot all-reduce's
    ``n - 1`` and latency (NaN where it does not run); 1 where the level takes no time at all
    (``n <= 1`` under an infinite latency)."""
    n1, one_shot = 0.0, math.nan
    if kind == "all_reduce":
        c, lat = 2.0 * g.frac, 2.0 * g.lat_s
        if g.direct is not False:
            n1, one_shot = g.n1, g.one_shot_lat_s
    else:
        c, lat = g.frac, g.lat_s
        if kind == "all_to_all":
            if g.native is not True:  # the ring's bisection-bound form on a ring
                on_ring = True if g.native is False else ~g.native
                lat = _pick(on_ring, np.floor(g.n / 2.0) * g.ln.lat_s, lat)
                c = _pick(on_ring, np.floor(g.n * g.n / 4.0) / g.n, c)
            if g.tree is not False:  # Bruck: lg n / 2 of the buffer ((lg s) / 2 exactly, halving is exact)
                c = _pick(g.tree, g.lg * 0.5, c)
    zero = 0.0 if _finite(g.ln.lat_s) else g.n <= 1.0  # zero steps times an infinite latency
    return c, lat, n1, one_shot, zero


def link_args(ln: Link) -> tuple[Array, float, bool]:
    """``(bw, 1 / bw, recip)`` of a level for :func:`xfer_at`: ``recip`` where the batch's
    bandwidth is one positive number (:func:`xfer_s` multiplies by its reciprocal)."""
    recip = ndim(ln.bw) == 0 and ln.bw > 0
    return ln.bw, (1.0 / ln.bw) if recip else 0.0, recip


def call_args(kind: str, s: Setup) -> tuple:
    """The arguments of :func:`call_at` but the kind and the bytes: one collective ``kind`` over the
    group set up in ``s`` (:data:`N_CALL_ARGS` numbers or arrays)."""
    whole = _level_args(kind, s.whole)
    if s.hier is None:  # no design spans nodes
        hier, nodes, net_link, local, net = 0.0, 1.0, (0.0, 0.0, False), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0, 0.0)
        net_lat = 0.0
    else:
        hier, nodes, net_link, net_lat = s.hier, s.net.n, link_args(s.net.ln), s.net.ln.lat_s
        c, lat, _, _, zero = _level_args("reduce_scatter" if kind == "all_reduce" else kind, s.local)
        local = (c, lat, zero)
        net = (0.0, 0.0, 0.0, 0.0, 0.0) if kind == "all_to_all" else _level_args(kind, s.net)
    return (s.n, s.a, hier, s.overhead_s, *link_args(s.whole.ln), *net_link, net_lat, nodes, *whole, *local, *net)


@jit.kernel
def xfer_at(nbytes: float, bw: float, rbw: float, recip: bool) -> float:
    """:func:`xfer_s` of one design: ``nbytes * rbw`` (``rbw = 1 / bw``) where ``recip``."""
    if recip:
        return nbytes * rbw
    if nbytes > 0.0:
        return nbytes / (bw if bw > 0.0 else 0.0)
    return 0.0


@jit.kernel
def level_at(s: float, c: float, lat: float, n1: float, one_shot_lat: float, zero: float, bw: float, rbw: float,
             recip: bool) -> tuple[float, float]:
    """``(time_s, bytes sent per device)`` of a collective of ``s`` bytes on one level
    (:func:`_level_args`, :func:`link_args`). ``ALGO_AUTO`` is the direct algorithm where it is
    native and the ring elsewhere: direct takes 1 or 2 latency steps and sends no more bytes than
    ring or tree (whose steps are at least ``lg n >= 1``; Bruck's all-to-all sends ``lg n / 2 >=
    (n-1)/n`` of the buffer), so it is never slower for ``alpha >= 0`` and is what the
    fastest-of-three choice returns."""
    wire = c * s
    t = xfer_at(wire, bw, rbw, recip) + lat
    # the one-shot kernel where the two-shot is not faster (ties: one-shot); no branch: a NaN latency
    # (no one-shot) leaves the two-shot's time and bytes
    wire1 = n1 * s
    t1 = xfer_at(wire1, bw, rbw, recip) + one_shot_lat
    wire = wire1 if t1 <= t else wire
    t = np.fmin(t, t1)
    if zero:
        return 0.0, 0.0
    return t, wire


@jit.kernel
def call_at(kind: int, s: float, n: float, a: float, hier: float, overhead_s: float, bw: float, rbw: float,
            recip: bool, net_bw: float, net_rbw: float, net_recip: bool, net_lat: float, nodes: float, c: float,
            lat: float, n1: float, one_shot_lat: float, zero: float, c_in: float, lat_in: float, zero_in: float,
            c_out: float, lat_out: float, n1_out: float, one_shot_out: float,
            zero_out: float) -> tuple[float, float, float]:
    """:func:`collective` of one design from :func:`call_args`: ``(time_s, intra bytes, inter bytes)``.
    Where the group spans nodes: all-reduce = intra reduce-scatter + inter all-reduce of ``s / a`` +
    intra all-gather; all-gather (reduce-scatter) = the intra and inter halves in sequence;
    all-to-all = an intra part of ``s a / n`` and a pairwise exchange over the nodes."""
    if hier:
        if kind == ALL_TO_ALL:
            t_in, b_in = level_at(s * a / n, c_in, lat_in, 0.0, math.nan, zero_in, bw, rbw, recip)
            b_out = (n - a) / n * s
            t = t_in + ((nodes - 1.0) * net_lat + xfer_at(b_out, net_bw, net_rbw, net_recip))
        else:
            t_in, b_in = level_at(s, c_in, lat_in, 0.0, math.nan, zero_in, bw, rbw, recip)
            t_out, b_out = level_at(s / a, c_out, lat_out, n1_out, one_shot_out, zero_out, net_bw, net_rbw,
                                    net_recip)
            if kind == ALL_REDUCE:  # the reduce-scatter twice (with the all-gather)
                t_in, b_in = 2.0 * t_in, 2.0 * b_in
            t = t_in + t_out
    else:
        t, b_in = level_at(s, c, lat, n1, one_shot_lat, zero, bw, rbw, recip)
        b_out = 0.0
    return t + overhead_s, b_in, b_out


@jit.kernel
def _call_rows(kind, s, n, a, hier, overhead_s, bw, rbw, recip, net_bw, net_rbw, net_recip, net_lat, nodes,  # noqa: ANN001
               c, lat, n1, one_shot_lat, zero, c_in, lat_in, zero_in, c_out, lat_out, n1_out, one_shot_out,
               zero_out, t_out, b_in, b_out):
    for i in range(t_out.shape[0]):
        t_out[i], b_in[i], b_out[i] = call_at(
            int(kind), jit.at(s, i), jit.at(n, i), jit.at(a, i), jit.at(hier, i), jit.at(overhead_s, i),
            jit.at(bw, i), rbw, recip, jit.at(net_bw, i), net_rbw, net_recip, jit.at(net_lat, i), jit.at(nodes, i),
            jit.at(c, i), jit.at(lat, i), jit.at(n1, i), jit.at(one_shot_lat, i), jit.at(zero, i), jit.at(c_in, i),
            jit.at(lat_in, i), jit.at(zero_in, i), jit.at(c_out, i), jit.at(lat_out, i), jit.at(n1_out, i),
            jit.at(one_shot_out, i), jit.at(zero_out, i))


def all_reduce(nbytes: Array, n: Array, sys: dict, algo: Array = ALGO_RING, **kw) -> Comm:
    """All-reduce of ``nbytes`` per device over ``n`` devices (:func:`collective`)."""
    return collective("all_reduce", nbytes, n, sys, algo, **kw)


def all_gather(nbytes: Array, n: Array, sys: dict, algo: Array = ALGO_RING, **kw) -> Comm:
    """All-gather whose output is ``nbytes`` per device (input ``nbytes / n``)."""
    return collective("all_gather", nbytes, n, sys, algo, **kw)


def reduce_scatter(nbytes: Array, n: Array, sys: dict, algo: Array = ALGO_RING, **kw) -> Comm:
    """Reduce-scatter whose input is ``nbytes`` per device (output ``nbytes / n``)."""
    return collective("reduce_scatter", nbytes, n, sys, algo, **kw)


def all_to_all(nbytes: Array, n: Array, sys: dict, algo: Array = ALGO_RING, **kw) -> Comm:
    """All-to-all: each device sends ``nbytes / n`` to every device (itself included)."""
    return collective("all_to_all", nbytes, n, sys, algo, **kw)


def send_s(link: Link, nbytes: Array) -> tuple[Array, Array]:
    """(latency, transfer seconds) of one send of ``nbytes`` to one peer over ``link``."""
    return link.lat_s, xfer_s(nbytes, link.bw)


def point_to_point(nbytes: Array, sys: dict, across_nodes: Array = False) -> Comm:
    """One send of ``nbytes`` to one peer: ``alpha + S/B`` on the node's link or the network.

    On a full mesh the pair owns one link (``B / (g - 1)``); no collective overhead.
    """
    def one_send(link: Link) -> Array:
        lat_s, transfer_s = send_s(link, nbytes)
        return lat_s + transfer_s

    def near() -> Array:
        return one_send(intra_link(sys, 2.0))

    def far() -> Array:
        return one_send(inter_link(sys))

    if ndim(across_nodes) == 0:  # one placement for the whole batch: one branch
        return Comm(far(), 0.0, nbytes) if across_nodes else Comm(near(), nbytes, 0.0)
    zero = np.zeros_like(np.asarray(nbytes, dtype=float))
    return Comm(np.where(across_nodes, far(), near()), np.where(across_nodes, zero, nbytes),
                np.where(across_nodes, nbytes, zero))


def wire_energy_j(intra_bytes: Array, inter_bytes: Array, sys: dict) -> Array:
    """Link energy of bytes sent on the node's links and on the network, joules."""
    j_intra, j_inter = wire_j_per_byte(sys)
    if ndim(inter_bytes) == 0 and inter_bytes == 0.0:
        return intra_bytes * j_intra
    return accumulate(intra_bytes * j_intra, inter_bytes * j_inter)


def wire_j_per_byte(sys: dict) -> tuple[Array, Array]:
    """Joules per byte sent on the node's links and on the network (:func:`wire_energy_j`)."""
    return (field(sys, "link_energy_pj_per_bit") * (BITS_PER_BYTE * PJ),
            field(sys, "internode_energy_pj_per_bit") * (BITS_PER_BYTE * PJ))
