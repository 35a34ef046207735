"""The on-chip energy rule R-ONCHIP-P applied to the platform presets.

:func:`preset_onchip` evaluates :mod:`dse.model.onchip_energy` for a preset listed in
``spaces/onchip_energy.yaml`` (its architecture, dies on the path and die-to-die crossings, with
the preset's node and memory technology) and writes the provenance string the preset's YAML
carries. ``python -m dse.validation.onchip_presets`` prints every preset's value, its terms and
the value the preset holds now.
"""

from __future__ import annotations

from typing import Any

from dse.model.onchip_energy import onchip_terms, path_side_mm
from dse.spec.errors import SpecError
from dse.spec.onchip_table import ARCHITECTURES, load_onchip_table
from dse.spec.presets import load_platform
from dse.spec.registry import MEMORY_TECHNOLOGIES

RULE = "R-ONCHIP-P"


def preset_onchip(name: str, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rule for preset ``name``: its terms (pJ/bit), ``total``, the inputs and the source string."""
    table = load_onchip_table() if table is None else table
    if name not in table["presets"]:
        raise SpecError("onchip_energy.yaml", "presets", "no entry for this preset", name)
    entry = table["presets"][name]
    plat = load_platform(name)
    nm = float(plat.process_nm)
    mem = plat.mem_technology
    side = float(path_side_mm(entry["path_mm2"]))
    terms = {k: float(v) for k, v in onchip_terms(table, nm, MEMORY_TECHNOLOGIES.index(mem), entry["arch_code"],
                                                  side, entry["d2d_pj_per_bit"]).items()}
    arch = ARCHITECTURES[entry["arch_code"]]
    areas = " + ".join(f"sqrt({a:g})" for a in entry["path_mm2"])
    e_wire = terms["wire"] / (table["path_factor"][entry["arch_code"]] * table["route_factor"][entry["arch_code"]]
                              * side)
    scale = terms["load"] / table["load_pj_per_bit"][entry["arch_code"]]
    cross = ", ".join(f"{n:g} {k}" for k, n in entry["crossings"].items()) or "none"
    source = (f"model: {RULE} (spaces/onchip_energy.yaml, dse/model/onchip_energy.py), {arch} load path, "
              f"{nm:g} nm, {mem}, dies {areas} mm2: interface {terms['interface']:.2f} + wire {e_wire:.3f} pJ/bit/mm "
              f"x {table['path_factor'][entry['arch_code']]:g} x {table['route_factor'][entry['arch_code']]:g} x "
              f"{side:.1f} mm = {terms['wire']:.2f} + die-to-die ({cross}) {terms['d2d']:.2f} + load "
              f"{table['load_pj_per_bit'][entry['arch_code']]:g} x s({nm:g} nm)/s(7 nm) {scale:.3f} = "
              f"{terms['load']:.2f} -> {terms['total']:.1f} pJ/bit; "
              + _LOAD_PROVENANCE[arch])
    return {"name": name, "arch": arch, "process_nm": nm, "mem_technology": mem, "side_mm": side, **terms,
            "source": source}


_LOAD_PROVENANCE = {
    "gpu": "the GPU load-path energy is fitted to this project's H100 and H200 GEMV power measurements and "
           "checks within 2% against an A100 microbenchmark study (Antepara et al., SC'25); medium-low confidence",
    "soc": "the load-path energy is transferred from the GPU fit (the LLM kernels run on the SoC's GPU); "
           "low confidence",
    "cpu": "the load-path energy is transferred from the GPU fit x 0.5 (64-B vector loads, out-of-order cores, "
           "coherent caches); no CPU power measurement; low confidence",
    "asic": "the load-path energy is transferred from the GPU fit x 0.1 (DMA into a scratchpad, no per-element "
            "instructions); no measurement; low confidence",
    "fpga": "the load-path energy is transferred from the ASIC value (dataflow, no instructions) and FPGA routing "
            "costs 4x an ASIC wire; no measurement; low confidence",
}


def main() -> None:
    """Print the rule's value and terms for every preset in the table, with the preset's current value."""
    table = load_onchip_table()
    print(f"{'preset':22s} {'arch':4s} {'nm':>3s} {'memory':8s} {'if':>5s} {'wire':>5s} {'d2d':>5s} {'load':>5s} "
          f"{'rule':>6s} {'preset':>7s}")
    for name in table["presets"]:
        r = preset_onchip(name, table)
        current = load_platform(name).fields["onchip_energy_pj_per_bit"]
        print(f"{name:22s} {r['arch']:4s} {r['process_nm']:3g} {r['mem_technology']:8s} {r['interface']:5.2f} "
              f"{r['wire']:5.2f} {r['d2d']:5.2f} {r['load']:5.2f} {r['total']:6.2f} {current:7.2f}")


if __name__ == "__main__":
    main()
