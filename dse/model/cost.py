"""Manufacturing cost of a device and a system, total cost of ownership, cost per token.

Pure functions of arrays (numpy, and compiled kernels of :mod:`dse.model.jit`); ``tech`` is
:func:`dse.spec.technology.load_technology`'s table. Equations:

* Dies per wafer (de Vries 2005, as in Chiplet Actuary / LLMCompass), with the usable
  diameter ``d = wafer_diameter - 2 edge_loss`` and the die padded by the scribe lane,
  ``A' = (sqrt(A) + scribe)^2``: ``DPW = pi (d/2)^2 / A' - pi d / sqrt(2 A')`` (kept >= 1,
  not floored, so cost is smooth in area).
* Yield, negative binomial (Stapper; clustering ``alpha``): ``Y = (1 + A D0 / alpha)^-alpha``
  with the defect density ``D0`` per mm2 of the node.
* Die cost: ``wafer_usd / (DPW * Y)`` (known-good die).
* Memory: ``mem_capacity_bytes / 1e9 * usd_per_gb`` of the technology.
* Packaging: a device with HBM or more than one die sits on a 2.5D interposer of area
  ``interposer_area_factor * (die_area + n_hbm * footprint_mm2)`` priced
  ``interposer_usd_base + interposer_usd_per_mm2 * area``; otherwise an organic substrate of
  ``organic_area_factor * die_area`` at ``organic_usd_per_mm2`` plus bumping per mm2 of die.
  Attaching each die and HBM stack succeeds with ``bonding_yield_per_component``; the lost
  packages' parts are paid: ``device = (dies + memory + package) / y_bond^(n_dies + n_hbm)``
  ``* (1 + assembly_test_frac) * (1 + markup_frac)``.
* System: ``n_devices * (device_cost_usd + host_usd_per_device)``.
* TCO per hour: ``system_cost_usd / (lifetime_years * hours_per_year)``
  ``+ avg_power_w / 1000 * pue * usd_per_kwh`` (the modelled power of all devices).
* Cost per million decode tokens: ``tco_usd_per_hour / (decode_tokens_per_s * 3600) * 1e6``.
"""

from __future__ import annotations

import numpy as np

from dse.model import jit
from dse.model.area import area_breakdown, resolve_params
from dse.model.arrays import ndim
from dse.spec.registry import KNOBS
from dse.spec.units import GIGA

Array = np.ndarray | float
S_PER_HOUR = 3600.0


def dies_per_wafer(area_per_die_mm2: Array, tech: dict, side_mm: Array | None = None) -> Array:
    """Gross dies per wafer for a die of ``area_per_die_mm2`` (edge loss and scribe lanes), at least 1
    (``side_mm``: ``sqrt(area_per_die_mm2)`` when already computed)."""
    return _dies_per_wafer(np.sqrt(area_per_die_mm2) if side_mm is None else side_mm, *_wafer_terms(tech))


def _wafer_terms(tech: dict) -> tuple[float, float, float]:
    """The scribe lane (mm), the usable disc ``pi (d/2)^2`` (mm2) and the rim term ``pi d / sqrt(2)`` (mm)."""
    d = tech["wafer_diameter_mm"] - 2.0 * tech["edge_loss_mm"]
    return tech["scribe_mm"], np.pi * (d / 2.0) ** 2, np.pi * d / np.sqrt(2.0)


@jit.kernel
def _dies_per_wafer(side_mm, scribe_mm, disc_mm2, rim_mm):  # noqa: ANN001, ANN202 - numbers or arrays
    """:func:`dies_per_wafer` of a die of side ``side_mm``, padded by the scribe lane (``sqrt(A')``)."""
    side = side_mm + scribe_mm
    return np.maximum(disc_mm2 / (side * side) - rim_mm / side, 1.0)


def die_yield_frac(area_per_die_mm2: Array, defect_density_per_mm2: Array, alpha: float) -> Array:
    """Negative-binomial die yield, 0..1 (as ``exp(-alpha log1p(.))``: one transcendental pair, no pow)."""
    return np.exp(-alpha * np.log1p(area_per_die_mm2 * (defect_density_per_mm2 / alpha)))


def die_cost_usd(area_per_die_mm2: Array, wafer_usd: Array, defect_density_per_mm2: Array, tech: dict,
                 yield_frac: Array | None = None, side_mm: Array | None = None) -> Array:
    """Cost of one known-good die, USD (``yield_frac``: :func:`die_yield_frac`, ``side_mm``: the die's
    side, when already computed)."""
    if yield_frac is None:
        yield_frac = die_yield_frac(area_per_die_mm2, defect_density_per_mm2, tech["yield_cluster_alpha"])
    side = np.sqrt(area_per_die_mm2) if side_mm is None else side_mm
    return _die_cost_usd(side, wafer_usd, yield_frac, *_wafer_terms(tech))


@jit.kernel
def _die_cost_usd(side_mm, wafer_usd, yield_frac, scribe_mm, disc_mm2, rim_mm):  # noqa: ANN001, ANN202
    """:func:`die_cost_usd` of a die of side ``side_mm``: the wafer over its good dies."""
    return wafer_usd / (_dies_per_wafer(side_mm, scribe_mm, disc_mm2, rim_mm) * yield_frac)


def device_cost_usd(hw: dict, tech: dict, area: dict | None = None,
                    params: tuple[dict, dict] | None = None) -> dict[str, Array]:
    """Manufacturing cost of one device and its parts, USD.

    ``hw`` as for :func:`dse.model.area.area_breakdown` plus ``mem_capacity_bytes``; ``area``
    is that function's result and ``params`` :func:`dse.model.area.resolve_params`'s when already
    computed. Returns ``dies_usd``, ``memory_usd``, ``package_usd``, ``bond_yield_frac``,
    ``device_cost_usd`` and the die ``yield_frac``. The yields are numpy's (transcendentals); the
    rest is one compiled pass (:func:`_device_rows`).
    """
    node, mem = resolve_params(hw, tech) if params is None else params
    area = area_breakdown(hw, tech, (node, mem)) if area is None else area
    n_dies = area["n_dies"]
    n_hbm = mem["hbm"] * hw["n_mem_units"]
    die_yield = die_yield_frac(area["area_per_die_mm2"], node["defect_density_per_mm2"], tech["yield_cluster_alpha"])
    bond = np.exp(np.log(tech["bonding_yield_per_component"]) * (n_dies + n_hbm))  # y ** components, no pow
    args, n, shape = jit.columns(area["die_side_mm"], node["wafer_usd"], die_yield, n_dies, n_hbm,
                                 hw["mem_capacity_bytes"], mem["usd_per_gb"], area["die_area_mm2"],
                                 mem["footprint_mm2"], bond,
                                 (1.0 + tech["assembly_test_frac"]) * (1.0 + tech["markup_frac"]))
    out = {name: np.empty(n) for name in ("dies_usd", "memory_usd", "package_usd", "device_cost_usd")}
    _device_rows(*args, *_wafer_terms(tech), tech["interposer_area_factor"], tech["interposer_usd_base"],
                 tech["interposer_usd_per_mm2"],
                 tech["organic_area_factor"] * tech["organic_usd_per_mm2"] + tech["bump_usd_per_mm2"], *out.values())
    return {**{name: x.reshape(shape) for name, x in out.items()}, "bond_yield_frac": bond, "yield_frac": die_yield}


@jit.kernel
def _device_rows(side_mm, wafer_usd, yield_frac, n_dies, n_hbm, mem_capacity_bytes, usd_per_gb,  # noqa: ANN001
                 die_area_mm2, footprint_mm2, bond_yield_frac, uplift, scribe_mm, disc_mm2, rim_mm,
                 interposer_factor, interposer_base_usd, interposer_usd_per_mm2, organic_usd_per_mm2,
                 dies_usd, memory_usd, package_usd, device_usd):
    """:func:`device_cost_usd` row by row: the dies, the memory, the package (a 2.5D interposer where
    there is HBM or more than one die, else organic) and the device with assembly, test and markup
    (``uplift``) over the packages that bond."""
    for i in range(device_usd.shape[0]):
        dies = jit.at(n_dies, i)
        hbm = jit.at(n_hbm, i)
        area = jit.at(die_area_mm2, i)
        dies_i = dies * _die_cost_usd(jit.at(side_mm, i), jit.at(wafer_usd, i), jit.at(yield_frac, i), scribe_mm,
                                      disc_mm2, rim_mm)
        memory_i = jit.at(mem_capacity_bytes, i) / GIGA * jit.at(usd_per_gb, i)
        if hbm > 0 or dies > 1:
            interposer_mm2 = interposer_factor * (area + hbm * jit.at(footprint_mm2, i))
            package_i = interposer_base_usd + interposer_usd_per_mm2 * interposer_mm2
        else:
            package_i = organic_usd_per_mm2 * area
        dies_usd[i], memory_usd[i], package_usd[i] = dies_i, memory_i, package_i
        device_usd[i] = (dies_i + memory_i + package_i) * (jit.at(uplift, i) / jit.at(bond_yield_frac, i))


def system_cost_usd(device_cost: Array, n_devices: Array, host_usd_per_device: Array) -> Array:
    """Purchase cost of the whole system: devices plus their share of hosts and network, USD."""
    system = device_cost + host_usd_per_device
    return system if ndim(n_devices) == 0 and n_devices == 1 else n_devices * system


def tco_usd_per_hour(system_cost: Array, avg_power_w: Array, lifetime_years: Array, usd_per_kwh: Array,
                     pue: Array, hours_per_year: float = 8766.0) -> Array:
    """Capex amortised linearly over the lifetime plus facility energy, USD per hour."""
    return system_cost / (lifetime_years * hours_per_year) + avg_power_w * (1e-3 * pue * usd_per_kwh)


def usd_per_mtoken(tco_per_hour: Array, decode_tokens_per_s: Array) -> Array:
    """Cost of one million decode tokens at the system's decode throughput, USD (inf at zero throughput)."""
    tokens_per_hour = np.asarray(decode_tokens_per_s, dtype=float) * S_PER_HOUR
    if (tokens_per_hour >= 1e-300).all():  # no zero throughput: no select
        return tco_per_hour / tokens_per_hour * 1e6
    with np.errstate(divide="ignore"):
        return np.where(tokens_per_hour > 0, tco_per_hour / np.maximum(tokens_per_hour, 1e-300) * 1e6, np.inf)


# the registry's knobs without a default: taken from spaces/technology.yaml unless a study sets them
COST_SETTINGS: tuple[str, ...] = tuple(f.name for f in KNOBS if f.default is None)


def cost_setting(study: dict, tech: dict) -> dict[str, Array]:
    """The study's cost settings (:data:`COST_SETTINGS`), each defaulting to ``tech``'s sourced value."""
    return {key: study.get(key, tech[key]) for key in COST_SETTINGS}


def cost_metrics(hw: dict, tech: dict, study: dict, n_devices: Array, avg_power_w: Array,
                 decode_tokens_per_s: Array, area: dict | None = None,
                 params: tuple[dict, dict] | None = None) -> dict[str, Array]:
    """``system_cost_usd``, ``tco_usd_per_hour`` and ``usd_per_mtoken`` for a batch.

    ``study`` may set ``lifetime_years``, ``usd_per_kwh``, ``pue``, ``host_usd_per_device`` and
    ``markup_frac`` (defaults: ``tech``'s sourced values). ``avg_power_w`` is the system's mean power.
    """
    setting = cost_setting(study, tech)
    device = device_cost_usd(hw, {**tech, "markup_frac": setting["markup_frac"]}, area, params)["device_cost_usd"]
    system = system_cost_usd(device, n_devices, setting["host_usd_per_device"])
    tco = tco_usd_per_hour(system, avg_power_w, setting["lifetime_years"], setting["usd_per_kwh"], setting["pue"],
                           tech["hours_per_year"])
    return {"system_cost_usd": system, "tco_usd_per_hour": tco,
            "usd_per_mtoken": usd_per_mtoken(tco, decode_tokens_per_s)}
