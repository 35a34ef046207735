"""Hardware fields: the numeric description of a platform that the models consume.

A platform preset (``spaces/platforms/*.yaml``) sets these fields; any of them can
also be a column of a design batch, which overrides the preset per row. Every field
is SI, its name ends in its unit (DESIGN.md 3.3). A ``flop{B}_peak_flop_per_s`` of 0
means the precision is not native: work at that precision is emulated at the next
wider native precision (:func:`dse.model.perf.native_bits`); the 32-bit peak must be > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

PLATFORM_CLASSES: tuple[str, ...] = ("gpu", "cpu", "fpga", "asic", "pim")


@dataclass(frozen=True)
class HardwareField:
    name: str
    default: float | None  # None: a preset must give it
    doc: str


HARDWARE_FIELDS: tuple[HardwareField, ...] = (
    HardwareField("flop32_peak_flop_per_s", None, "dense peak at 32-bit (FP32/TF32 matrix path), FLOP/s"),
    HardwareField("flop16_peak_flop_per_s", None, "dense peak at 16-bit (FP16/BF16), FLOP/s; 0 = not native"),
    HardwareField("flop8_peak_flop_per_s", 0.0, "dense peak at 8-bit (FP8 or INT8), OP/s; 0 = not native"),
    HardwareField("flop4_peak_flop_per_s", 0.0, "dense peak at 4-bit (INT4/FP4), OP/s; 0 = not native"),
    HardwareField("nm_sparsity_native", 0.0, "1 if 2:4 structured sparsity doubles matrix throughput"),
    HardwareField("flop16_energy_pj_per_flop", None, "energy of one 16-bit FLOP incl. operand delivery, pJ"),
    HardwareField("mem_bw_bytes_per_s", None, "main-memory peak bandwidth, bytes/s"),
    HardwareField("mem_capacity_bytes", None, "main-memory capacity usable by the model, bytes"),
    HardwareField("mem_energy_pj_per_bit", None, "main-memory access energy, pJ/bit"),
    HardwareField("onchip_energy_pj_per_bit", 0.0,
                  "energy to carry one main-memory bit across the chip to the compute units (PHY, memory "
                  "controller, caches, network-on-chip, load path), beyond the SRAM array accesses, pJ/bit"),
    HardwareField("sram_bytes", 0.0, "on-chip SRAM (last-level cache / scratchpad), bytes"),
    HardwareField("sram_energy_pj_per_bit", 0.0, "on-chip SRAM access energy, pJ/bit"),
    HardwareField("static_power_w", None, "power drawn whatever the work (idle / leakage), W"),
    HardwareField("tdp_w", None, "thermal design power; modelled power is capped here by slowing down, W"),
    HardwareField("compute_eff_frac", None, "achievable fraction of peak compute in matrix kernels"),
    HardwareField("mem_bw_eff_frac", None, "achievable fraction of peak memory bandwidth"),
    HardwareField("kernel_overhead_s", 0.0, "fixed cost per operator launch (kernel launch, sync), s"),
    HardwareField("pim_bw_bytes_per_s", 0.0, "aggregate in-memory (bank-level) bandwidth of PIM units, bytes/s"),
    HardwareField("pim_peak_flop_per_s", 0.0, "aggregate PIM compute at 16-bit, FLOP/s; 0 = no PIM"),
    HardwareField("pim_energy_pj_per_bit", 0.0, "in-bank access energy seen by PIM units, pJ/bit"),
    HardwareField("pim_energy_pj_per_flop", 0.0, "energy of one PIM 16-bit FLOP, pJ"),
    HardwareField("host_link_bw_bytes_per_s", 0.0, "host <-> PIM/offload link bandwidth, bytes/s"),
    HardwareField("host_link_energy_pj_per_bit", 0.0, "host <-> PIM link energy, pJ/bit"),
)
HARDWARE_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in HARDWARE_FIELDS)
REQUIRED_HARDWARE_FIELDS: frozenset[str] = frozenset(f.name for f in HARDWARE_FIELDS if f.default is None)
HARDWARE_DEFAULTS: dict[str, float] = {f.name: f.default for f in HARDWARE_FIELDS if f.default is not None}
