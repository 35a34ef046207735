"""The metric columns (DESIGN.md 3.2): name, SI unit, direction, meaning.

The model produces them (:mod:`dse.model.pipeline`); studies pick objectives and
constraints among them; result files carry their units. Declared once, here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One output column of the model."""

    name: str
    unit: str
    maximise: bool  # larger is better (else a cost)
    doc: str


METRIC_TABLE: tuple[Metric, ...] = (
    Metric("ttft_s", "s", False, "prefill time of the whole batch (time to first token)"),
    Metric("tpot_s", "s", False, "mean decode step time per output token of one sequence"),
    Metric("decode_tokens_per_s", "token/s", True, "decode throughput of the system (batch / tpot_s)"),
    Metric("tokens_per_s", "token/s", True, "end-to-end throughput (generated tokens / (prefill + decode))"),
    Metric("decode_power_w", "W", False, "modelled mean power while decoding"),
    Metric("avg_power_w", "W", False, "modelled mean power over prefill and decode"),
    Metric("decode_tokens_per_j", "token/J", True, "decode energy efficiency"),
    Metric("tokens_per_j", "token/J", True, "end-to-end energy efficiency"),
    Metric("tdp_tokens_per_j", "token/J", True, "decode tokens/s per watt of TDP (the survey's convention)"),
    Metric("memory_bytes", "B", False, "memory footprint per device"),
    Metric("g_memory_bytes", "B", False, "footprint minus capacity: <= 0 fits (a constraint)"),
    Metric("n_devices", "1", False, "devices in the system (tp x pp x ep x dp)"),
)
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in METRIC_TABLE}
METRICS: tuple[str, ...] = tuple(METRIC_BY_NAME)
METRIC_UNITS: dict[str, str] = {m.name: m.unit for m in METRIC_TABLE}
MAXIMISED_METRICS: frozenset[str] = frozenset(m.name for m in METRIC_TABLE if m.maximise)
