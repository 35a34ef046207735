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
    """What every collective over one group of ``n`` devices running ``algo`` shares, as
    :func:`call_at` reads it (after the kind and the bytes): the node's link (``topology``, ``bw``,
    its reciprocal ``rbw`` where ``recip``: :func:`link_args`, step latency ``lat_s``); ``lg``:
    ``ceil(log2 n)`` (0 where no row runs the tree algorithm); ``zero``: the link's latency is not
    finite everywhere, so a level of one device takes no time (zero steps times an infinite
    latency); the call ``overhead_s`` (0 where no row has one); ``hier``: some group spans nodes
    (``nodes > 1``), with ``a`` members per node, ``lg_a``, ``lg_nodes`` and the network's link
    (without it, ``nodes`` is 1 and the network 0)."""

    n: Array
    algo: Array
    topology: Array
    bw: Array
    rbw: float
    recip: bool
    lat_s: Array
    lg: Array
    zero: bool
    overhead_s: Array
    hier: bool
    a: Array
    nodes: Array
    lg_a: Array
    lg_nodes: Array
    net_bw: Array
    net_rbw: float
    net_recip: bool
    net_lat_s: Array


def setup(n: Array, sys: dict, algo: Array = ALGO_RING, n_per_node: Array | None = None,
          n_sharing: Array | None = None) -> Setup:
    """The :class:`Setup` of a group of ``n`` devices (arguments as :func:`collective`), for any
    number of collectives over the group: the links, and the batch's shortcuts (no tree row: no
    ``lg``; every group in a node: no hierarchy)."""
    one_node = n_per_node is None and all_rows(n <= field(sys, "n_devices_per_node"))
    # every group of the batch fits in a node: flat, no hierarchy to set up (intra_link needs
    # no max(n, 1): it clips its mesh share and its fabric share by itself)
    a = n if one_node else _members_per_node(sys, n, n_per_node)
    intra = intra_link(sys, a, n_sharing)
    tree = algo == ALGO_TREE
    tree_in_node = any_rows(tree) and any_rows(tree & (intra.topology != RING))  # a ring runs no tree
    lg = _lg(n) if tree_in_node else 0.0
    overhead_s = field(sys, "collective_overhead_s")
    if not any_rows(overhead_s != 0.0):
        overhead_s = 0.0
    nodes = None if one_node else np.ceil(n / a)
    node = (n, algo, intra.topology, *link_args(intra), intra.lat_s, lg, not _finite(intra.lat_s), overhead_s)
    if nodes is None or not any_rows(nodes > 1.0):
        return Setup(*node, False, n, 1.0, 0.0, 0.0, 0.0, 0.0, False, 0.0)
    net = inter_link(sys)
    return Setup(*node, True, a, nodes, _lg(a) if tree_in_node else 0.0, _lg(nodes) if any_rows(tree) else 0.0,
                 *link_args(net), net.lat_s)


def link_args(ln: Link) -> tuple[Array, float, bool]:
    """``(bw, 1 / bw, recip)`` of a level for :func:`xfer_at`: ``recip`` where the batch's
    bandwidth is one positive number (:func:`xfer_s` multiplies by its reciprocal)."""
    recip = ndim(ln.bw) == 0 and ln.bw > 0
    return ln.bw, (1.0 / ln.bw) if recip else 0.0, recip


def collectives_in(calls: tuple[tuple[str, Array], ...], s: Setup) -> list[Comm]:
    """:func:`collective` of each ``(kind, nbytes)`` of ``calls`` over the group set up in ``s``
    (one compiled pass each, :func:`call_at`)."""
    return [Comm(*fused(_call_rows, 3, KIND_CODES[kind], nbytes, *s)) for kind, nbytes in calls]


# ---- one collective of one design, compiled ----------------------------------------------
# Each level (the whole group on the node's link; where the group spans nodes, a node's members
# and the nodes on the network) runs one algorithm per design, ``time = xfer(c * s) + steps *
# alpha``: ring, tree and direct send the same wire bytes (Bruck's all-to-all and the ring
# topology's all-to-all aside), the direct all-reduce also times its one-shot kernel. No branch
# on a design's values (selects only), so that a loop over the designs runs in SIMD lanes.

ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL = 0, 1, 2, 3  # kinds inside kernels
KIND_CODES: dict[str, int] = {name: i for i, name in enumerate(COLLECTIVES)}


@jit.kernel
def xfer_at(nbytes: float, bw: float, rbw: float, recip: bool) -> float:
    """:func:`xfer_s` of one design: ``nbytes * rbw`` (``rbw = 1 / bw``) where ``recip``."""
    if recip:
        return nbytes * rbw
    q = nbytes / (bw if bw > 0.0 else 0.0)  # selected, not branched on
    return q if nbytes > 0.0 else 0.0


@jit.kernel
def level_at(kind: int, s: float, n: float, algo: float, topology: float, lg: float, lat_s: float, zero: bool,
             bw: float, rbw: float, recip: bool) -> tuple[float, float]:
    """``(time_s, bytes sent per device)`` of a collective ``kind`` of ``s`` bytes over ``n`` devices
    on one level (step latency ``lat_s``, bandwidth :func:`link_args`; ``lg``: ``ceil(log2 n)``).
    Tree and direct algorithms are not native on a ring topology and fall back to the ring's.
    ``ALGO_AUTO`` is the direct algorithm where it is native and the ring elsewhere: direct takes 1
    or 2 latency steps and sends no more bytes than ring or tree (whose steps are at least ``lg n >=
    1``; Bruck's all-to-all sends ``lg n / 2 >= (n-1)/n`` of the buffer), so it is never slower for
    ``alpha >= 0`` and is what the fastest-of-three choice returns. The direct all-reduce takes the
    faster of its two-shot and one-shot kernels (ties: one-shot). ``zero``: no time where ``n <=
    1`` (zero steps times an infinite latency)."""
    n1 = n - 1.0
    native = topology != RING
    tree = native and algo == ALGO_TREE
    direct = native and algo >= ALGO_DIRECT  # auto: direct
    # latency steps of an all-gather (an all-reduce takes twice as many): one for direct (none for
    # one device), lg n for recursive halving / doubling, n - 1 for the ring
    steps = (1.0 if n > 1.0 else 0.0) if direct else lg if tree else n1
    step_lat = steps * lat_s
    frac = n1 / n
    if kind == ALL_REDUCE:
        c, lat = 2.0 * frac, 2.0 * step_lat
    elif kind == ALL_TO_ALL:  # the ring's bisection-bound form on a ring; Bruck's lg n / 2 of the buffer on tree
        ring_lat = np.floor(n / 2.0) * lat_s  # rows ((lg s) / 2 exactly, halving is exact)
        ring_c = np.floor(n * n / 4.0) / n
        lat = step_lat if native else ring_lat
        c = (lg * 0.5 if tree else frac) if native else ring_c
    else:
        c, lat = frac, step_lat
    wire = c * s
    t = xfer_at(wire, bw, rbw, recip) + lat
    if kind == ALL_REDUCE:
        # the one-shot kernel where the two-shot is not faster (ties: one-shot); a NaN latency off
        # the direct rows leaves the two-shot's time and bytes
        wire1 = n1 * s
        t1 = xfer_at(wire1, bw, rbw, recip) + (step_lat if direct else math.nan)
        wire = wire1 if t1 <= t else wire
        t = np.fmin(t, t1)
    none = zero and n <= 1.0
    return (0.0 if none else t), (0.0 if none else wire)


@jit.inlined
def call_at(kind: int, s: float, n: float, algo: float, topology: float, bw: float, rbw: float, recip: bool,
            lat_s: float, lg: float, zero: bool, overhead_s: float, hier: bool, a: float, nodes: float, lg_a: float,
            lg_nodes: float, net_bw: float, net_rbw: float, net_recip: bool,
            net_lat_s: float) -> tuple[float, float, float]:
    """:func:`collective` of one design from its :class:`Setup`: ``(time_s, intra bytes, inter bytes)``.
    Where the group spans nodes: all-reduce = intra reduce-scatter + inter all-reduce of ``s / a`` +
    intra all-gather; all-gather (reduce-scatter) = the intra and inter halves in sequence;
    all-to-all = an intra part of ``s a / n`` and a pairwise exchange over the nodes."""
    t, b_in = level_at(kind, s, n, algo, topology, lg, lat_s, zero, bw, rbw, recip)
    b_out = 0.0
    if hier:  # a constant: no branch where no group of the batch spans nodes
        if kind == ALL_TO_ALL:
            h_in, hb_in = level_at(ALL_TO_ALL, s * a / n, a, algo, topology, lg_a, lat_s, zero, bw, rbw, recip)
            hb_out = (n - a) / n * s
            h = h_in + ((nodes - 1.0) * net_lat_s + xfer_at(hb_out, net_bw, net_rbw, net_recip))
        else:
            h_in, hb_in = level_at(REDUCE_SCATTER if kind == ALL_REDUCE else kind, s, a, algo, topology, lg_a,
                                   lat_s, zero, bw, rbw, recip)
            h_out, hb_out = level_at(kind, s / a, nodes, algo, SWITCH, lg_nodes, net_lat_s, False, net_bw, net_rbw,
                                     net_recip)
            if kind == ALL_REDUCE:  # the reduce-scatter twice (with the all-gather)
                h_in, hb_in = 2.0 * h_in, 2.0 * hb_in
            h = h_in + h_out
        spans = nodes > 1.0
        t, b_in, b_out = (h if spans else t), (hb_in if spans else b_in), (hb_out if spans else b_out)
    return t + overhead_s * (1.0 if n > 1.0 else 0.0), b_in, b_out


@jit.inlined
def call_in(kind: int, s: float, i: int, g: tuple, hier: bool, recip: bool) -> tuple[float, float, float]:
    """:func:`call_at` of row ``i`` of the columns ``g`` of a :class:`Setup`, whose ``hier`` and
    ``recip`` are given (constants where the caller specialises its loop on them)."""
    n, algo, topology, bw, rbw, _, lat_s, lg, zero, overhead_s, _, a, nodes, lg_a, lg_nodes, net_bw, net_rbw, \
        net_recip, net_lat_s = g
    return call_at(kind, s, jit.at(n, i), jit.at(algo, i), jit.at(topology, i), jit.at(bw, i), rbw, recip,
                   jit.at(lat_s, i), jit.at(lg, i), zero, jit.at(overhead_s, i), hier, jit.at(a, i), jit.at(nodes, i),
                   jit.at(lg_a, i), jit.at(lg_nodes, i), jit.at(net_bw, i), net_rbw, net_recip, jit.at(net_lat_s, i))


@jit.kernel
def _call_rows(kind, s, n, algo, topology, bw, rbw, recip, lat_s, lg, zero, overhead_s, hier, a, nodes,  # noqa: ANN001
               lg_a, lg_nodes, net_bw, net_rbw, net_recip, net_lat_s, t_out, b_in, b_out):
    g = (n, algo, topology, bw, rbw, recip, lat_s, lg, zero, overhead_s, hier, a, nodes, lg_a, lg_nodes, net_bw,
         net_rbw, net_recip, net_lat_s)
    if hier:
        _call_loop(int(kind), s, g, t_out, b_in, b_out, True)
    else:
        _call_loop(int(kind), s, g, t_out, b_in, b_out, False)


@jit.inlined
def _call_loop(kind, s, g, t_out, b_in, b_out, hier):  # noqa: ANN001
    for i in range(t_out.shape[0]):
        t_out[i], b_in[i], b_out[i] = call_in(kind, jit.at(s, i), i, g, hier, g[5])


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
