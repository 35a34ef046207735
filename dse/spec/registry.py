"""The one registry of knobs, hardware fields and model-card fields.

Every name a design, a preset or a card can set is declared here once: SI unit, default,
valid range, kind, one-line doc and the model stage that reads it. The workload defaults,
the API's range checks, the CLI flags, the spec schemas, ``dse list knobs`` and the
knob table in ``docs/ARCHITECTURE.md`` are all derived from these tuples
(:func:`markdown_table` writes the table; a test keeps the doc in step).
Adding a knob is one :class:`Field` here plus the stage code that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dse.spec.metrics import METRICS

PLATFORM_CLASSES: tuple[str, ...] = ("gpu", "cpu", "fpga", "asic", "pim")
# Request-length workloads of spaces/workloads.yaml, after "none" (a test checks the file against it).
WORKLOADS: tuple[str, ...] = ("none", "splitwise-code", "splitwise-conv", "arxiv-summarization", "sharegpt-vllm-paper",
                              "sharegpt-vllm-bench-llama3", "lmsys-chat-1m", "chat-lognormal", "fixed-128-128",
                              "fixed-2048-512", "uniform-chat")
# Rows of spaces/memory_technologies.yaml and of spaces/technology.yaml's memory table, in order
# (a test checks both files against this tuple).
MEMORY_TECHNOLOGIES: tuple[str, ...] = ("ddr4", "ddr5", "lpddr5", "lpddr5x", "gddr6", "gddr6x", "hbm2", "hbm2e",
                                        "hbm3", "hbm3e", "hbm2-pim", "gddr6-aim")
KINDS: tuple[str, ...] = ("int", "float", "code", "flag")
# quantisation methods whose weight GEMMs run in integer arithmetic when activations are quantised
# (a_bits < 16): SmoothQuant INT8 W8A8 (Xiao et al., arXiv:2211.10438), QuaRot and its RTN variant INT4
# W4A4 (Ashkboos et al., arXiv:2404.00456), SpinQuant INT4 W4A4 (Liu et al., arXiv:2405.16406), OmniQuant
# uniform integer W4A4/W6A6 (Shao et al., arXiv:2308.13137). FP8 and the weight-only methods compute in
# floating point; their activations, when quantised, are taken as FP8-like.
INTEGER_GEMM_METHODS: tuple[str, ...] = ("smoothquant", "quarot", "quarot_rtn", "spinquant", "omniquant")
STAGES: tuple[str, ...] = ("workload", "mapping", "perf", "power", "cost", "quality", "serving")


@dataclass(frozen=True)
class Field:
    """One named input of the model, SI units.

    ``default`` None means a preset or card must give it. ``low``/``high`` bound the valid
    values (a design outside them is rejected with a one-line error). ``kind``: ``int``
    (whole numbers), ``float``, ``code`` (an integer code of a categorical, listed in the
    doc) or ``flag`` (0/1). ``stage`` is the model stage that reads it.
    """

    name: str
    unit: str
    default: float | None
    low: float
    high: float
    kind: str
    stage: str
    doc: str
    positive: bool = False  # low is exclusive: the value must be > low
    choices: tuple[str, ...] = ()  # names of the codes 0, 1, ... of a ``code`` field (YAML may use the name)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.stage not in STAGES or not self.low <= self.high or (
                self.choices and (self.kind != "code" or len(self.choices) != self.high - self.low + 1)):
            raise ValueError(f"bad registry entry {self.name}")

    def cli_help(self) -> str:
        """Help text for a CLI flag: the doc, the unit, the range and the default."""
        unit = f" [{self.unit}]" if self.unit != "1" else ""
        default = " (default from spaces/technology.yaml)" if self.default is None else f" (default {self.default:g})"
        codes = f" ({', '.join(f'{i}={c}' for i, c in enumerate(self.choices))})" if self.choices else ""
        return f"{self.doc}{codes}{unit}; {self.low:g}..{self.high:g}{default}"

    def code_of(self, name: str) -> float | None:
        """The code of a choice name, None if ``name`` is not one."""
        return float(self.choices.index(name)) if name in self.choices else None


_INF = float("inf")

KNOBS: tuple[Field, ...] = (
    Field("batch", "1", 1.0, 1.0, 1e9, "int", "workload", "sequences decoded together"),
    Field("in_len", "token", 128.0, 1.0, 1e9, "int", "workload", "prompt tokens per sequence"),
    Field("out_len", "token", 128.0, 1.0, 1e9, "int", "workload", "generated tokens per sequence (decode steps)"),
    Field("w_bits", "bit", 16.0, 1.0, 32.0, "float", "workload", "weight bits"),
    Field("a_bits", "bit", 16.0, 1.0, 32.0, "float", "workload",
          "activation bits; w_bits < a_bits is weight-only quantisation (computes at a_bits)"),
    Field("kv_bits", "bit", 16.0, 1.0, 32.0, "float", "workload", "KV-cache bits"),
    Field("w_sparsity_frac", "1", 0.0, 0.0, 0.99, "float", "workload",
          "unstructured weight sparsity, stored as values + 1-bit bitmap"),
    Field("nm_sparse", "1", 0.0, 0.0, 1.0, "flag", "workload",
          "2:4 structured sparsity (half the weights + 2-bit indices; fast only where native)"),
    Field("pim_offload", "1", 0.0, 0.0, 2.0, "code", "mapping",
          "0 none, 1 decode attention on PIM, 2 every decode GEMV on PIM"),
    Field("spec_len", "token", 0.0, 0.0, 16.0, "int", "workload",
          "speculative decoding: draft tokens per verification step (0 = off)"),
    Field("spec_accept_frac", "1", 0.7, 0.0, 0.99, "float", "workload",
          "probability that the target accepts each draft token"),
    Field("spec_draft_frac", "1", 0.05, 0.0, 1.0, "float", "workload", "draft model size / target model size"),
    Field("tp", "1", 1.0, 1.0, 1024.0, "int", "mapping",
          "tensor-parallel degree (Megatron: heads, FFN, vocabulary split)"),
    Field("pp", "1", 1.0, 1.0, 1024.0, "int", "mapping", "pipeline stages (layers split in contiguous blocks)"),
    Field("ep", "1", 1.0, 1.0, 1024.0, "int", "mapping",
          "expert-parallel groups of tp devices (MoE experts split across them; dense: data parallel)"),
    Field("dp", "1", 1.0, 1.0, 65536.0, "int", "mapping", "independent replicas (no communication)"),
    Field("micro_batches", "1", 1.0, 1.0, 1024.0, "int", "mapping",
          "micro-batches the batch is split into for the pipeline"),
    Field("comm_overlap_frac", "1", 0.0, 0.0, 1.0, "float", "mapping",
          "share of the shorter of (compute, tp/ep communication) hidden under the other"),
    Field("collective_algo", "1", 0.0, 0.0, 3.0, "code", "mapping", "collective algorithm",
          choices=("ring", "tree", "direct", "auto")),
    Field("quant_method", "1", 0.0, 0.0, 9.0, "code", "quality",
          "quantisation method the quality table is read for (RTN/GPTQ/AWQ weight-only; SmoothQuant/FP8/QuaRot W+A)",
          choices=("rtn", "gptq", "gptq_r", "awq", "omniquant", "smoothquant", "fp8", "quarot", "quarot_rtn",
                   "spinquant")),
    Field("kv_method", "1", 0.0, 0.0, 3.0, "code", "quality",
          "KV-cache quantisation method (any: the worst with data)", choices=("any", "quarot_kv", "kivi", "kvquant")),
    Field("sparse_method", "1", 0.0, 0.0, 2.0, "code", "quality", "pruning method",
          choices=("sparsegpt", "wanda", "magnitude")),
    Field("w_group_size", "1", 128.0, 0.0, 1e6, "int", "quality",
          "weights per quantisation scale (0: per-channel; 1..128 read as g128; per-channel methods such as "
          "SmoothQuant read 0)"),
    Field("workload", "1", 0.0, 0.0, float(len(WORKLOADS) - 1), "code", "serving",
          "request-length distribution served (spaces/workloads.yaml); none: every request is in_len/out_len",
          choices=WORKLOADS),
    Field("token_budget", "token", 2048.0, 1.0, 1e7, "int", "serving",
          "tokens per scheduler iteration (chunked-prefill budget, vLLM max_num_batched_tokens)"),
    Field("max_seqs", "1", 256.0, 1.0, 1e6, "int", "serving", "running sequences at most (vLLM max_num_seqs)"),
    Field("kv_block_tokens", "token", 16.0, 1.0, 4096.0, "int", "serving", "paged KV-cache block size"),
    Field("kv_watermark_frac", "1", 0.01, 0.0, 0.5, "float", "serving", "KV cache kept free at admission"),
    Field("arrival_rate_req_per_s", "1/s", 0.0, 0.0, 1e9, "float", "serving",
          "offered Poisson load of the system (0: evaluate at the goodput rate)"),
    Field("ttft_slo_s", "s", 1.0, 0.0, 1e5, "float", "serving", "time-to-first-token SLO (p90)", positive=True),
    Field("tpot_slo_s", "s", 0.1, 0.0, 1e4, "float", "serving", "time-per-output-token SLO (p90)", positive=True),
    Field("lifetime_years", "year", None, 0.1, 50.0, "float", "cost", "depreciation lifetime of the system"),
    Field("usd_per_kwh", "USD/kWh", None, 0.0, 10.0, "float", "cost", "electricity price"),
    Field("pue", "1", None, 1.0, 5.0, "float", "cost", "power usage effectiveness of the data centre"),
    Field("host_usd_per_device", "USD", None, 0.0, 1e6, "float", "cost",
          "host, network and chassis share per device (servers, NICs, switches)"),
    Field("markup_frac", "1", None, 0.0, 100.0, "float", "cost", "vendor margin over manufacturing cost (0: at cost)"),
)

HARDWARE_FIELDS: tuple[Field, ...] = (
    Field("flop32_peak_flop_per_s", "FLOP/s", None, 0.0, 1e19, "float", "perf",
          "dense peak at 32-bit (FP32/TF32 matrix path)", positive=True),
    Field("flop16_peak_flop_per_s", "FLOP/s", None, 0.0, 1e19, "float", "perf",
          "dense peak at 16-bit (FP16/BF16); 0 = not native"),
    Field("flop8_peak_flop_per_s", "FLOP/s", 0.0, 0.0, 1e19, "float", "perf",
          "dense peak at 8-bit (FP8 or INT8); 0 = not native"),
    Field("flop4_peak_flop_per_s", "FLOP/s", 0.0, 0.0, 1e19, "float", "perf",
          "dense peak at 4-bit (INT4/FP4); 0 = not native"),
    Field("nm_sparsity_native", "1", 0.0, 0.0, 1.0, "flag", "perf",
          "1 if 2:4 structured sparsity doubles matrix throughput (and halves GEMM compute energy)"),
    Field("fp8_native", "1", 1.0, 0.0, 1.0, "flag", "perf",
          "1 if FP8 arithmetic runs on the 8-bit units (flop8); 0: FP8 weight-and-activation designs run as W8A16 "
          "(FP8 weights dequantised, 16-bit activations)"),
    Field("fp8_rate_frac", "1", 1.0, 0.0, 1.0, "float", "perf",
          "FP8 weight-GEMM rate over the 8-bit peak (flop8) with the FP32 accumulation serving kernels use "
          "(GeForce Ada: 0.5); 1: the full 8-bit peak", positive=True),
    Field("flop16_energy_pj_per_flop", "pJ/FLOP", None, 0.0, 1e3, "float", "power",
          "energy of one 16-bit FLOP incl. operand delivery"),
    Field("int_op_energy_ratio", "1", 1.0, 0.0, 100.0, "float", "power",
          "energy of an integer weight-GEMM operation (INT8/INT4 activations: INTEGER_GEMM_METHODS) over the "
          "floating-point rule at the same native width; 1: the same", positive=True),
    Field("decode_attn_energy_ratio", "1", 1.0, 0.0, 100.0, "float", "power",
          "dynamic energy of decode attention (its KV reads, activations and FLOPs) over the per-byte and "
          "per-FLOP rule with 4 or more query rows per KV head (query heads per KV head x positions); the "
          "excess over 1 shrinks in proportion below 4 rows (a quarter of it at one); 1: the same", positive=True),
    Field("flop_energy_fixed_frac", "1", 0.14, 0.0, 1.0, "float", "power",
          "share of the 16-bit energy per FLOP that does not shrink with operand width: a FLOP at b native "
          "bits costs flop16_energy x (f + (1 - f) b / 16); default 0.14 fitted to "
          "validation/gemm_precision_h200.csv (H200, FP8 / BF16 GEMM energy per FLOP 0.568, median of 19 shapes)"),
    Field("mem_bw_bytes_per_s", "B/s", None, 0.0, 1e15, "float", "perf", "main-memory peak bandwidth",
          positive=True),
    Field("mem_capacity_bytes", "B", None, 0.0, 1e15, "float", "perf", "main-memory capacity usable by the model",
          positive=True),
    Field("mem_energy_pj_per_bit", "pJ/bit", None, 0.0, 1e3, "float", "power", "main-memory access energy"),
    Field("onchip_energy_pj_per_bit", "pJ/bit", 0.0, 0.0, 1e3, "float", "power",
          "energy to carry one main-memory bit across the chip to the compute units, beyond SRAM accesses"),
    Field("sram_bytes", "B", 0.0, 0.0, 1e13, "float", "perf", "on-chip SRAM (last-level cache / scratchpad)"),
    Field("sram_energy_pj_per_bit", "pJ/bit", 0.0, 0.0, 1e3, "float", "power", "on-chip SRAM access energy"),
    Field("static_power_w", "W", None, 0.0, 1e5, "float", "power", "power drawn whatever the work (idle, leakage)"),
    Field("tdp_w", "W", None, 0.0, 1e5, "float", "perf",
          "thermal design power; modelled power is capped here by slowing down", positive=True),
    Field("compute_eff_frac", "1", None, 0.0, 1.0, "float", "perf",
          "achievable fraction of peak compute in matrix kernels", positive=True),
    Field("mem_bw_eff_frac", "1", None, 0.0, 1.0, "float", "perf",
          "achievable fraction of peak memory bandwidth", positive=True),
    Field("kernel_overhead_s", "s", 0.0, 0.0, 1.0, "float", "perf",
          "fixed cost per operator launch (kernel launch, sync)"),
    Field("attn_stream_bw_bytes_per_s", "B/s", 0.0, 0.0, 1e15, "float", "perf",
          "KV-cache read rate of one decode-attention stream (one sequence x KV head, context not split); "
          "decode attention reads at min(memory bandwidth, streams x this); 0: not limited"),
    Field("pim_bw_bytes_per_s", "B/s", 0.0, 0.0, 1e16, "float", "mapping",
          "aggregate in-memory (bank-level) bandwidth of PIM units"),
    Field("pim_peak_flop_per_s", "FLOP/s", 0.0, 0.0, 1e19, "float", "mapping",
          "aggregate PIM compute at 16-bit; 0 = no PIM"),
    Field("pim_energy_pj_per_bit", "pJ/bit", 0.0, 0.0, 1e3, "float", "power",
          "in-bank access energy seen by PIM units"),
    Field("pim_energy_pj_per_flop", "pJ/FLOP", 0.0, 0.0, 1e3, "float", "power", "energy of one PIM 16-bit FLOP"),
    Field("pim_capacity_bytes", "B", 0.0, 0.0, 1e15, "float", "mapping",
          "main memory the PIM units can reach (0: all of it); offloaded data beyond it runs on the host"),
    Field("host_link_bw_bytes_per_s", "B/s", 0.0, 0.0, 1e15, "float", "mapping",
          "host <-> PIM/offload link bandwidth"),
    Field("host_link_energy_pj_per_bit", "pJ/bit", 0.0, 0.0, 1e3, "float", "power", "host <-> PIM link energy"),
    Field("process_nm", "nm", 7.0, 1.0, 250.0, "float", "cost", "logic process node of the compute die(s)"),
    Field("platform_class_code", "1", 0.0, 0.0, len(PLATFORM_CLASSES) - 1.0, "code", "cost",
          "architecture class (sets compute density per FLOP/s)", choices=PLATFORM_CLASSES),
    Field("mem_technology_code", "1", 0.0, 0.0, len(MEMORY_TECHNOLOGIES) - 1.0, "code", "cost",
          "main-memory technology (row of spaces/memory_technologies.yaml)", choices=MEMORY_TECHNOLOGIES),
    Field("n_mem_units", "1", 0.0, 0.0, 1e4, "int", "cost",
          "memory stacks/channels/chips provisioned (0: the fewest that give the bandwidth and capacity)"),
    Field("n_dies", "1", 0.0, 0.0, 64.0, "int", "cost", "compute dies per device (0: the fewest under the reticle)"),
    Field("n_devices_per_node", "1", 1.0, 1.0, 1024.0, "int", "mapping", "devices on one node's local links"),
    Field("link_topology", "1", 0.0, 0.0, 3.0, "code", "mapping", "topology of the node's device links",
          choices=("switch", "ring", "pcie_host", "full_mesh")),
    Field("link_bw_bytes_per_s", "B/s", 0.0, 0.0, 1e14, "float", "mapping",
          "device-to-device link bandwidth per device per direction (0: no link)"),
    Field("link_bw_eff_frac", "1", 1.0, 0.0, 1.0, "float", "mapping", "achievable fraction of the link bandwidth",
          positive=True),
    Field("link_latency_s", "s", 0.0, 0.0, 1.0, "float", "mapping", "latency of one collective step on the link"),
    Field("link_energy_pj_per_bit", "pJ/bit", 0.0, 0.0, 1e4, "float", "power", "energy per bit sent on the link"),
    Field("fabric_bw_bytes_per_s", "B/s", 0.0, 0.0, 1e14, "float", "mapping",
          "shared host-fabric bandwidth per direction that links share (0: non-blocking)"),
    Field("collective_overhead_s", "s", 0.0, 0.0, 1.0, "float", "mapping", "fixed software cost per collective call"),
    Field("internode_bw_bytes_per_s", "B/s", 0.0, 0.0, 1e14, "float", "mapping",
          "network bandwidth per device per direction between nodes (0: no network)"),
    Field("internode_bw_eff_frac", "1", 1.0, 0.0, 1.0, "float", "mapping",
          "achievable fraction of the network bandwidth", positive=True),
    Field("internode_latency_s", "s", 0.0, 0.0, 1.0, "float", "mapping", "latency of one step between nodes"),
    Field("internode_energy_pj_per_bit", "pJ/bit", 0.0, 0.0, 1e5, "float", "power", "energy per bit on the network"),
)

CARD_FIELDS: tuple[Field, ...] = (
    Field("n_layers", "1", None, 1.0, 1e4, "int", "workload", "decoder blocks"),
    Field("d_model", "1", None, 1.0, 1e6, "int", "workload", "hidden size"),
    Field("n_heads", "1", None, 1.0, 1e4, "int", "workload", "query heads"),
    Field("n_kv_heads", "1", None, 1.0, 1e4, "int", "workload",
          "key/value heads (= n_heads for MHA, 1 for MQA, else GQA)"),
    Field("head_dim", "1", None, 1.0, 1e5, "int", "workload", "dimension of one head"),
    Field("d_ff", "1", None, 1.0, 1e7, "int", "workload", "FFN inner size (per expert for MoE)"),
    Field("ffn_gated", "1", None, 0.0, 1.0, "flag", "workload",
          "1 for gated FFN (SwiGLU/GeGLU: 3 matrices), 0 for plain (2 matrices)"),
    Field("vocab_size", "1", None, 1.0, 1e8, "int", "workload", "vocabulary size"),
    Field("tied_embeddings", "1", None, 0.0, 1.0, "flag", "workload",
          "1 if the LM head shares the input embedding matrix"),
    Field("n_experts", "1", 1.0, 1.0, 1e5, "int", "workload", "FFN experts per layer (1 = dense)"),
    Field("n_experts_active", "1", 1.0, 1.0, 1e5, "int", "workload", "experts each token is routed to (top-k)"),
    Field("max_seq_len", "token", None, 1.0, 1e9, "int", "workload", "context length the model was trained for"),
)

KNOB_BY_NAME: dict[str, Field] = {f.name: f for f in KNOBS}
HARDWARE_BY_NAME: dict[str, Field] = {f.name: f for f in HARDWARE_FIELDS}
KNOB_NAMES: tuple[str, ...] = tuple(KNOB_BY_NAME)
# knobs with no registry default take theirs from spaces/technology.yaml (the cost stage's sourced settings)
KNOB_DEFAULTS: dict[str, float] = {f.name: float(f.default) for f in KNOBS if f.default is not None}
HARDWARE_FIELD_NAMES: tuple[str, ...] = tuple(HARDWARE_BY_NAME)
REQUIRED_HARDWARE_FIELDS: frozenset[str] = frozenset(f.name for f in HARDWARE_FIELDS if f.default is None)
HARDWARE_DEFAULTS: dict[str, float] = {f.name: f.default for f in HARDWARE_FIELDS if f.default is not None}
CARD_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in CARD_FIELDS)
REQUIRED_CARD_FIELDS: frozenset[str] = frozenset(f.name for f in CARD_FIELDS if f.default is None)
CARD_DEFAULTS: dict[str, float] = {f.name: f.default for f in CARD_FIELDS if f.default is not None}
# Columns a design batch may hold: the categorical names plus every knob and hardware field.
INPUT_COLUMNS: tuple[str, ...] = ("model", "platform") + KNOB_NAMES + HARDWARE_FIELD_NAMES
# Design-table columns that results own: never a knob or a space variable.
RESULT_COLUMNS: tuple[str, ...] = ("trial", "feasible", "design_index")
RESERVED_NAMES: frozenset[str] = frozenset(RESULT_COLUMNS) | frozenset(METRICS)
INPUT_FIELDS: dict[str, Field] = {**KNOB_BY_NAME, **HARDWARE_BY_NAME}


def markdown_table(fields: tuple[Field, ...]) -> str:
    """A Markdown table of ``fields`` (name, unit, default, range, kind, stage, doc)."""
    rows = ["| name | unit | default | range | kind | stage | meaning |", "|---|---|---|---|---|---|---|"]
    for f in fields:
        default = ("technology.yaml" if f in KNOBS else "required") if f.default is None else f"{f.default:g}"
        low = f"({f.low:g}" if f.positive else f"[{f.low:g}"
        rows.append(f"| `{f.name}` | {f.unit} | {default} | {low}, {f.high:g}] | {f.kind} | {f.stage} | {f.doc} |")
    return "\n".join(rows) + "\n"
