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
    stage: str = "perf"  # the model stage that computes it: perf (and power), cost, quality


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
    Metric("c_link", "1", False, "1 where the devices need a link or network the platform lacks (a constraint)"),
    Metric("die_area_mm2", "mm2", False, "silicon area of one device's compute die(s)", "cost"),
    Metric("c_reticle_mm2", "mm2", False, "area of one die minus the reticle limit: <= 0 fits (a constraint)", "cost"),
    Metric("c_shoreline_mm", "mm", False,
           "die edge the HBM stacks need minus the reticle's long edge: <= 0 fits (a constraint)", "cost"),
    Metric("provisioned_static_power_w", "W", False,
           "static power of one device as provisioned (anchored on its preset)", "cost"),
    Metric("c_static_power_w", "W", False,
           "static power of one device minus its TDP: <= 0 leaves power to compute (a constraint)", "cost"),
    Metric("system_cost_usd", "USD", False, "purchase cost of the system (dies, memory, packages, hosts)", "cost"),
    Metric("tco_usd_per_hour", "USD/h", False, "capex over the lifetime + decode energy at $/kWh and PUE", "cost"),
    Metric("usd_per_mtoken", "USD", False, "cost of one million decode tokens (tco / decode tokens per hour)", "cost"),
    Metric("serving_tokens_per_s", "token/s", True, "output tokens/s of the system at the operating load",
           "serving"),
    Metric("goodput_req_per_s", "1/s", True, "largest request rate whose TTFT and TPOT p90 meet the SLOs",
           "serving"),
    Metric("serving_capacity_req_per_s", "1/s", True, "request rate at which the system saturates", "serving"),
    Metric("ttft_p90_s", "s", False, "90th-percentile time to first token at the operating load", "serving"),
    Metric("tpot_p90_s", "s", False, "90th-percentile time per output token at the operating load", "serving"),
    Metric("kv_max_seqs", "1", True, "sequences the KV cache of a replica holds at the mean footprint", "serving"),
    Metric("serving_batch", "1", False, "mean sequences decoding per replica at the operating load", "serving"),
    Metric("serving_power_w", "W", False, "mean power of the system at the operating load", "serving"),
    Metric("serving_tokens_per_j", "token/J", True, "output tokens per joule at the operating load", "serving"),
    Metric("serving_usd_per_mtoken", "USD", False, "cost of one million output tokens at the operating load",
           "serving"),
    Metric("ppl_delta", "1", False, "WikiText-2 perplexity increase over the 16-bit dense model (inf: no data)",
           "quality"),
    Metric("quality_extrapolated", "1", False, "1 where no own measurement of the model backs ppl_delta", "quality"),
)
PERFORMANCE_METRICS: tuple[str, ...] = tuple(m.name for m in METRIC_TABLE if m.stage == "perf")
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in METRIC_TABLE}
METRICS: tuple[str, ...] = tuple(METRIC_BY_NAME)
METRIC_UNITS: dict[str, str] = {m.name: m.unit for m in METRIC_TABLE}
MAXIMISED_METRICS: frozenset[str] = frozenset(m.name for m in METRIC_TABLE if m.maximise)
# Constraints the model itself reports (<= 0 feasible): every study and sweep applies those present.
MODEL_CONSTRAINTS: tuple[str, ...] = ("g_memory_bytes", "c_link", "c_reticle_mm2", "c_shoreline_mm", "c_static_power_w",
                                      "c_invalid_input")  # the last: dse.loading.SpaceEvaluator
