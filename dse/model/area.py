"""Silicon area of one device: compute, SRAM and memory interfaces per process node.

Pure functions of arrays (scalars broadcast; the per-design chain is one compiled kernel,
:mod:`dse.model.jit`). ``tech`` is the table of
:func:`dse.spec.technology.load_technology`. The equations (units in the names):

* Node lookup (:func:`node_params`): every per-node column is interpolated linearly in
  ``log(value)`` against ``log(process_nm)`` between the table's rows and held at the ends.
  ``logic_scale = D(ref) / D(node)`` with ``D`` the logic density (MTr/mm2) is the area of
  logic relative to the reference node; SRAM area per MB scales with the HD bitcell area:
  ``sram_mm2_per_mb = sram_mm2_per_mb_ref * bitcell(node) / bitcell(ref)``.
* Compute (``p_eff_tflop``, ``compute_mm2`` of :func:`area_breakdown`): the precisions share one
  datapath, so the array is sized by its most demanding native rate weighted per class,
  ``P_max = max_b(w_b P_b)`` (accelerators: ``w_32 = 2, w_16 = 1, w_8 = 0.25, w_4 = 0.125``;
  CPUs are sized by their FP32 vector rate, their cores), and every other native format adds
  ``mu`` of its own weighted rate: ``P_eff = P_max + mu * (sum_b w_b P_b - P_max)`` (TFLOP/s).
  ``A_compute = c_class * logic_scale * P_eff`` with ``c_class`` (mm2 per TFLOP/s at the
  reference node) per platform class. A zero peak means "not native" and costs no area.
* SRAM: ``A_sram = sram_mm2_per_mb * sram_bytes / 1e6``.
* Memory interfaces (per unit of ``spaces/memory_technologies.yaml``: HBM stack, GDDR x32,
  LPDDR x64, DDR channel): ``A_mem = n_mem_units * (phy_mm2 + ctrl_mtr / D(node))``; the
  PHY (analog, bump-limited) does not scale with the node, the controller does (LLMCompass).
* Monolithic-equivalent area: ``A_mono = (A_compute + A_sram + A_mem) / (1 - uncore_frac)``.
* HBM shoreline: the stacks sit along the two long edges of dies of the reticle's aspect
  (``r = 33/26``), ``edge_mm_per_unit`` of die edge per stack. Per die the long edge must be
  ``L_hbm = n_hbm * edge_mm_per_unit / (2 n_dies)``, so a die is at least ``L_hbm^2 / r``.
* Dies: the fewest that fit both the reticle and the shoreline,
  ``n_dies = max(ceil(A_mono / reticle), ceil(n_hbm * edge / (2 * 33 mm)), 1)`` capped at
  ``n_dies_max``, unless the design fixes ``n_dies`` (> 0). A die of a multi-die device carries
  a die-to-die interface: ``area_per_die = max(A_mono / n_dies * (1 + d2d_area_frac [n_dies > 1]),
  L_hbm^2 / r)``; ``die_area_mm2 = n_dies * area_per_die`` (all the device's logic silicon).
* Constraints (``<= 0`` feasible): ``c_reticle = area_per_die - reticle_mm2`` (mm2) and
  ``c_shoreline = L_hbm - reticle_long_edge_mm`` (mm).
"""

from __future__ import annotations

import numpy as np

from dse.model import jit
from dse.spec.units import MEGA, TERA

Array = np.ndarray | float
PRECISION_BITS: tuple[int, ...] = (32, 16, 8, 4)


def _interp_log(log_x: Array, xp_nm: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise log-log interpolation at ``log_x = log(nm)`` of a positive column ``fp`` over nodes ``xp_nm``."""
    return np.exp(np.interp(log_x, np.log(xp_nm), np.log(fp)))


def node_params(tech: dict, process_nm: Array) -> dict[str, np.ndarray]:
    """Per-design node quantities: ``logic_scale`` (area of logic relative to the reference
    node), ``logic_mtr_per_mm2``, ``sram_mm2_per_mb``, ``wafer_usd``, ``defect_density_per_mm2``,
    ``idle_w_per_mm2``."""
    xp = tech["node_nm"]
    log_x, log_ref = np.log(process_nm), np.log(tech["reference_node_nm"])
    density = _interp_log(log_x, xp, tech["logic_mtr_per_mm2"])
    bitcell = _interp_log(log_x, xp, tech["sram_bitcell_um2"])
    return {
        "logic_mtr_per_mm2": density,
        "logic_scale": _interp_log(log_ref, xp, tech["logic_mtr_per_mm2"]) / density,
        "sram_mm2_per_mb": tech["sram_mm2_per_mb_ref"] / _interp_log(log_ref, xp, tech["sram_bitcell_um2"]) * bitcell,
        "wafer_usd": _interp_log(log_x, xp, tech["wafer_usd"]),
        "defect_density_per_mm2": _interp_log(log_x, xp, tech["defect_density_per_cm2"]) / 100.0,
        "idle_w_per_mm2": _interp_log(log_x, xp, tech["idle_w_per_mm2"]),
    }


def memory_params(tech: dict, mem_code: Array) -> dict[str, np.ndarray]:
    """Per-design memory-technology columns gathered by integer code (row of ``tech['mem_names']``)."""
    code = np.asarray(mem_code, dtype=np.int64)
    return {col: tech[col][code] for col in ("phy_mm2", "ctrl_mtr", "usd_per_gb", "background_w_per_unit",
                                             "hbm", "edge_mm_per_unit", "footprint_mm2")}


def resolve_params(hw: dict, tech: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(node, mem)``: the node and memory-technology columns of each design, looked up once and
    passed to :func:`area_breakdown` and :func:`dse.model.cost.device_cost_usd` (``params=``)."""
    return node_params(tech, hw["process_nm"]), memory_params(tech, hw["mem_technology_code"])


def area_breakdown(hw: dict, tech: dict, params: tuple[dict, dict] | None = None) -> dict[str, Array]:
    """Area terms, die split and constraints of each design (the module docstring's equations), in
    one compiled pass (:func:`_area_rows`).

    ``hw`` holds the peaks ``flop{32,16,8,4}_peak_flop_per_s``, ``sram_bytes``, ``n_mem_units``,
    ``process_nm``, ``platform_class_code`` (index in ``PLATFORM_CLASSES``),
    ``mem_technology_code`` (row of ``tech['mem_names']``), optionally ``n_dies`` (0 or absent:
    the fewest that fit) and ``n_dies_max`` (default ``tech``'s). Returns ``p_eff_tflop`` (the
    weighted peak that sizes the compute array, TFLOP/s), ``compute_mm2``, ``sram_mm2``,
    ``mem_if_mm2``, ``mono_mm2``, ``n_dies``, ``area_per_die_mm2``, ``die_area_mm2``, ``c_reticle``
    (mm2), ``c_shoreline`` and ``die_side_mm`` (the side of a square die, ``sqrt(area_per_die_mm2)``)
    (mm); constraints ``<= 0`` feasible. ``params`` is :func:`resolve_params`'s result when already
    looked up.
    """
    node, mem = resolve_params(hw, tech) if params is None else params
    cls = np.asarray(hw["platform_class_code"], dtype=np.int64)
    weights = tech["class_area_weight"][cls]
    args, n, shape = jit.columns(
        *(weights[..., i] for i in range(len(PRECISION_BITS))),
        *(hw[f"flop{b}_peak_flop_per_s"] for b in PRECISION_BITS),
        tech["class_compute_mm2_per_tflop"][cls], node["logic_scale"], hw["sram_bytes"], node["sram_mm2_per_mb"],
        hw["n_mem_units"], mem["phy_mm2"], mem["ctrl_mtr"], node["logic_mtr_per_mm2"], mem["hbm"],
        mem["edge_mm_per_unit"], hw.get("n_dies", 0.0), hw.get("n_dies_max", tech["n_dies_max"]))
    out = {name: np.empty(n) for name in _AREA_OUTPUTS}
    _area_rows(*args, tech["multi_mode_frac"], tech["uncore_frac"], tech["reticle_mm2"], tech["reticle_long_edge_mm"],
               tech["reticle_short_edge_mm"], tech["d2d_area_frac"], *out.values())
    return {name: x.reshape(shape) for name, x in out.items()}


_AREA_OUTPUTS = ("p_eff_tflop", "compute_mm2", "sram_mm2", "mem_if_mm2", "mono_mm2", "n_dies", "area_per_die_mm2",
                 "die_area_mm2", "c_reticle", "c_shoreline", "die_side_mm")


@jit.kernel
def _area_rows(w32, w16, w8, w4, p32, p16, p8, p4, c_ref, logic_scale, sram_bytes, sram_mm2_per_mb,  # noqa: ANN001
               n_mem_units, phy_mm2, ctrl_mtr, logic_mtr_per_mm2, hbm, edge_mm_per_unit, n_dies_fixed, n_dies_max,
               multi_mode_frac, uncore_frac, reticle_mm2, reticle_long_mm, reticle_short_mm, d2d_area_frac,
               p_eff, compute, sram, mem_if, mono, n_dies, per_die, total, c_reticle, c_shoreline, side):
    """:func:`area_breakdown` row by row into the outputs (:data:`_AREA_OUTPUTS` order)."""
    aspect = reticle_long_mm / reticle_short_mm
    for i in range(p_eff.shape[0]):
        # weighted peaks (TFLOP/s): the array is sized by the largest, each other native format adds mu of its own
        a32 = jit.at(w32, i) * (jit.at(p32, i) / TERA)
        a16 = jit.at(w16, i) * (jit.at(p16, i) / TERA)
        a8 = jit.at(w8, i) * (jit.at(p8, i) / TERA)
        a4 = jit.at(w4, i) * (jit.at(p4, i) / TERA)
        p_max = np.maximum(np.maximum(np.maximum(a32, a16), a8), a4)
        eff = p_max + multi_mode_frac * (((a32 + a16) + a8) + a4 - p_max)
        compute_i = jit.at(c_ref, i) * jit.at(logic_scale, i) * eff
        sram_i = jit.at(sram_mm2_per_mb, i) * (jit.at(sram_bytes, i) / MEGA)
        units = jit.at(n_mem_units, i)
        mem_if_i = units * (jit.at(phy_mm2, i) + jit.at(ctrl_mtr, i) / jit.at(logic_mtr_per_mm2, i))
        mono_i = (compute_i + sram_i + mem_if_i) / (1.0 - uncore_frac)
        edge = units * (jit.at(hbm, i) * jit.at(edge_mm_per_unit, i))  # die edge the HBM stacks need, mm
        dies = jit.at(n_dies_fixed, i)
        if not dies > 0:  # the fewest dies that fit the reticle and the HBM shoreline
            by_area = np.ceil(mono_i / reticle_mm2)
            by_edge = np.ceil(edge / (2.0 * reticle_long_mm))
            dies = np.minimum(np.maximum(np.maximum(by_area, by_edge), 1.0), np.maximum(jit.at(n_dies_max, i), 1.0))
        overhead = 1.0 + d2d_area_frac * (dies > 1)
        long_edge = edge / (2.0 * dies)
        per_die_i = np.maximum(mono_i / dies * overhead, long_edge * long_edge / aspect)
        p_eff[i], compute[i], sram[i], mem_if[i], mono[i] = eff, compute_i, sram_i, mem_if_i, mono_i
        n_dies[i], per_die[i], total[i] = dies, per_die_i, dies * per_die_i
        c_reticle[i], c_shoreline[i], side[i] = per_die_i - reticle_mm2, long_edge - reticle_long_mm, np.sqrt(per_die_i)


def die_area_mm2(hw: dict, tech: dict) -> Array:
    """Silicon area of one device's logic die(s), mm2 (the ``die_area_mm2`` metric)."""
    return area_breakdown(hw, tech)["die_area_mm2"]


def default_n_mem_units(mem_bw_bytes_per_s: Array, mem_capacity_bytes: Array, unit_bw_bytes_per_s: Array,
                        unit_capacity_bytes: Array) -> np.ndarray:
    """Memory units a preset without ``n_mem_units`` implies: enough for its bandwidth and for its
    capacity, ``max(ceil(bw / unit_bw - 0.02), ceil(cap / (unit_cap * 2^30 / 1e9)))`` -- the per-unit
    capacities of ``memory_technologies.yaml`` are vendor GB, i.e. GiB (A100 5, H100 5, H200 6
    stacks; a preset with taller stacks than the table's, e.g. MI300X's 8 x 24 GB, must state its count)."""
    by_bw = np.ceil(mem_bw_bytes_per_s / unit_bw_bytes_per_s - 0.02)  # Gaudi 2: 2.46 TB/s = 6 x 410 GB/s
    by_cap = np.ceil(mem_capacity_bytes / (unit_capacity_bytes * 2.0**30 / 1e9) - 1e-6)
    return np.maximum(by_bw, by_cap)
