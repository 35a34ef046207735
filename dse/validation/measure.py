"""Measure LLM inference speed and energy on a local NVIDIA GPU (``dse measure``).

Optional extra: needs PyTorch (with CUDA) and NVML (the ``nvidia-ml-py`` package,
imported as ``pynvml``). Both are imported lazily inside functions, so
``import dse.validation.measure`` works without them; using the GPU path without them
raises :class:`dse.spec.errors.DseError` with a one-line reason.

Method
------
* **Model.** A decoder with the model card's exact shapes in bf16 and random
  weights (values do not change speed): token embedding, per layer RMSNorm,
  one fused QKV matrix (GQA: ``n_kv_heads`` key/value heads), a KV-cache
  write, SDPA attention, output projection with the residual add fused into the
  matrix product (``addmm``), RMSNorm, a gated (SwiGLU: fused gate+up matrix,
  ``silu(g) * u``) or plain (ReLU, 2 matrices) FFN, final norm, LM head (the
  embedding when tied) and a greedy ``argmax`` that feeds the next step. No
  rotary embedding, no biases, no LayerNorm bias (OPT): real engines spend
  about one fused element-wise kernel per layer on RoPE, so omitting it makes
  us at most a few percent faster at batch 1. MoE cards (``n_experts > 1``) are
  not supported and are skipped with a message.
* **Prefill (TTFT).** The whole batch's prompt (``batch x in_len`` tokens)
  through all layers with causal flash attention, writing K/V for every prompt
  token, logits for the last position only. Batches with more than
  ``max_prefill_tokens`` tokens run as equal micro-batches one after another
  (as chunked-prefill engines do); ``ttft_s`` is the time for the whole
  batch. Each micro-batch is one CUDA graph; after a warm-up, the median of
  timed runs (CUDA events) is reported; runs repeat for >= ~1 s to also give
  ``prefill_power_w`` from the energy counter.
* **Decode (TPOT).** ``out_len`` steps over a KV cache that grows from
  ``in_len`` to ``in_len + out_len``. One decode step is captured as a CUDA
  graph per *bucket* of attended length (multiples of ``kv_bucket``, default
  16): the step writes its K/V at the device-side position ``pos``, attends
  over the first ``ceil((pos+1)/kv_bucket)*kv_bucket`` cache positions
  without a mask (flash attention; the positions not yet written hold random
  values, which costs the same as masking them), picks the next token and
  increments ``pos`` on the GPU. The host only replays one graph per step, so
  the GPU, not Python, is the limit (``host_enqueue_frac`` = host time to
  enqueue one step on an empty queue / ``tpot_s``; well under 1 means the
  host runs ahead of the GPU).
  Bias: attention reads on average ``(kv_bucket-1)/2`` extra cached tokens per
  step (< 0.5 % of the K/V bytes at contexts >= 1024, a few percent of them at
  128); the weights are read exactly once per step. GQA decode folds the query
  heads of one K/V head into the query-length axis (``[B, n_kv, group, hd]``),
  so each K/V head is read once. ``tpot_s`` = median loop time / ``out_len``.
* **Energy.** NVML ``nvmlDeviceGetTotalEnergyConsumption`` (mJ, whole board)
  read around back-to-back decode loops repeated until >= ``min_decode_s``
  (default 2 s): ``decode_power_w`` = energy / wall time,
  ``decode_tokens_per_j`` = batch * out_len * loops / energy. Board energy
  includes static/idle power; ``idle_power_w`` (measured once, a few seconds of
  nothing with the CUDA context open) is recorded so that it can be separated.
  A background thread samples SM/memory clocks, power and temperature during
  the decode loops (``sm_clock_mhz`` etc.). If the energy counter is not
  supported, the sampled power is integrated instead (``energy_method``).

Output columns (names as in :mod:`dse.model.pipeline`) are listed in :data:`COLUMNS`.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from dse.spec.errors import DseError

#: Required columns of a measurement file (what ``dse calibrate`` reads).
COLUMNS: tuple[str, ...] = (
    "platform", "gpu_name", "model", "batch", "in_len", "out_len", "w_bits", "a_bits", "kv_bits",
    "ttft_s", "tpot_s", "decode_tokens_per_s", "decode_power_w", "decode_tokens_per_j",
    "idle_power_w", "source",
)
#: Extra columns written after :data:`COLUMNS` (``tokens_per_s`` and ``power_kind`` as in
#: ``validation/README.md``; the rest are diagnostics).
EXTRA_COLUMNS: tuple[str, ...] = (
    "tokens_per_s", "power_kind", "stack", "prefill_power_w", "tpot_min_s", "tpot_max_s", "n_decode_loops",
    "decode_energy_j", "host_enqueue_frac", "sm_clock_mhz", "mem_clock_mhz", "max_sm_clock_mhz", "power_limit_w",
    "gpu_temp_c", "weight_bytes", "kv_bucket", "max_prefill_tokens", "energy_method",
    "torch_version", "driver_version",
)

DEFAULT_REPEATS = 5


def _log(msg: str) -> None:
    print(f"[dse measure] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- imports


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise DseError("dse measure needs PyTorch: pip install 'llm-dse[measure]' (torch, nvidia-ml-py)") from None
    return torch


def _import_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise DseError("dse measure needs NVML bindings: pip install nvidia-ml-py") from None
    return pynvml


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shapes:
    """Integer decoder shapes taken from a model card."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    gated: bool
    vocab: int
    tied: bool
    n_experts: int = 1

    @classmethod
    def from_card(cls, card: Any) -> Shapes:
        def get(key: str, default: float | None = None) -> int:
            value = getattr(card, key, default)
            if value is None:
                raise DseError(f"model card {getattr(card, 'name', '?')}: missing {key}")
            return int(value)

        return cls(
            name=str(getattr(card, "name", "model")),
            n_layers=get("n_layers"), d_model=get("d_model"), n_heads=get("n_heads"),
            n_kv_heads=get("n_kv_heads"), head_dim=get("head_dim"), d_ff=get("d_ff"),
            gated=bool(get("ffn_gated")), vocab=get("vocab_size"), tied=bool(get("tied_embeddings")),
            n_experts=get("n_experts", 1),
        )

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def n_params(self) -> int:
        """Parameters of the built decoder (norm vectors included)."""
        per_layer = (self.d_model * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.d_model
                     + (3 if self.gated else 2) * self.d_model * self.d_ff + 2 * self.d_model)
        emb = self.vocab * self.d_model
        return self.n_layers * per_layer + emb * (1 if self.tied else 2) + self.d_model

    def kv_bytes_per_token(self, elem_bytes: int = 2) -> int:
        return 2 * self.n_layers * self.kv_dim * elem_bytes


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _prefill_chunk(batch: int, in_len: int, max_tokens: int) -> int:
    """Largest divisor of ``batch`` whose micro-batch has <= ``max_tokens`` tokens (at least 1)."""
    limit = max(1, max_tokens // max(1, in_len))
    return max(d for d in range(1, batch + 1) if batch % d == 0 and d <= limit)


def estimate_bytes(shapes: Shapes, batch: int, in_len: int, out_len: int, *, kv_bucket: int = 16,
                   max_prefill_tokens: int = 16384, elem_bytes: int = 2) -> dict[str, int]:
    """GPU memory needed (weights, decode phase, prefill phase), conservative."""
    weights = shapes.n_params() * elem_bytes
    max_len = _round_up(in_len + out_len, kv_bucket)
    kv = shapes.kv_bytes_per_token(elem_bytes) * batch * max_len
    ffn_w = (2 if shapes.gated else 1) * shapes.d_ff
    dec_act = batch * (4 * shapes.d_model + 2 * (shapes.q_dim + 2 * shapes.kv_dim) + 3 * ffn_w) * elem_bytes \
        + batch * shapes.vocab * 8
    bc = _prefill_chunk(batch, in_len, max_prefill_tokens)
    tok = bc * in_len
    pre_kv = shapes.kv_bytes_per_token(elem_bytes) * tok
    pre_act = tok * (6 * shapes.d_model + 3 * (shapes.q_dim + 2 * shapes.kv_dim) + 3 * ffn_w) * elem_bytes \
        + bc * shapes.vocab * 8
    return {"weights": weights, "decode": kv + dec_act, "prefill": pre_kv + pre_act}


# --------------------------------------------------------------------------- model


class Decoder:
    """Random-weight decoder with a card's shapes (see the module docstring)."""

    def __init__(self, shapes: Shapes, device: Any, dtype: Any = None, seed: int = 0) -> None:
        torch = _import_torch()
        if shapes.n_experts > 1:
            raise DseError(f"{shapes.name}: MoE cards (n_experts={shapes.n_experts}) are not supported by "
                           "dse measure")
        if shapes.n_heads % shapes.n_kv_heads:
            raise DseError(f"{shapes.name}: n_kv_heads must divide n_heads")
        self.torch = torch
        self.s = shapes
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.bfloat16
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)

        def w(rows: int, cols: int) -> Any:
            t = torch.empty(rows, cols, device=self.device, dtype=self.dtype)
            return t.normal_(0.0, 1.0 / math.sqrt(cols), generator=gen)

        def ones(n: int) -> Any:
            return torch.ones(n, device=self.device, dtype=self.dtype)

        s = shapes
        ffn_rows = (2 if s.gated else 1) * s.d_ff
        self.layers = [
            {"ln1": ones(s.d_model), "wqkv": w(s.q_dim + 2 * s.kv_dim, s.d_model), "wo": w(s.d_model, s.q_dim),
             "ln2": ones(s.d_model), "w1": w(ffn_rows, s.d_model), "w2": w(s.d_model, s.d_ff)}
            for _ in range(s.n_layers)
        ]
        self.emb = w(s.vocab, s.d_model)
        self.ln_f = ones(s.d_model)
        self.lm_head = self.emb if s.tied else w(s.vocab, s.d_model)
        self.eps = 1e-5
        import torch.nn.functional as F  # noqa: N812

        self.F = F
        self._rms = getattr(F, "rms_norm", None)

    def weight_bytes(self) -> int:
        seen: set[int] = set()
        total = 0
        tensors = [t for layer in self.layers for t in layer.values()] + [self.emb, self.ln_f, self.lm_head]
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        return total

    def norm(self, x: Any, weight: Any) -> Any:
        if self._rms is not None:
            return self._rms(x, (x.shape[-1],), weight, self.eps)
        xf = x.float()
        return (xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * weight

    def _ffn(self, x: Any, layer: dict) -> Any:
        """x: [N, d] -> x + FFN(norm(x))."""
        F, s = self.F, self.s
        h = self.norm(x, layer["ln2"])
        u = F.linear(h, layer["w1"])
        a = F.silu(u[:, : s.d_ff]) * u[:, s.d_ff:] if s.gated else F.relu(u)
        return self.torch.addmm(x, a, layer["w2"].t())

    # -- prefill: tokens [b, T] -> next tokens [b]; writes K/V into kv_bufs[l] [2, b, n_kv, T, hd]
    def prefill(self, tokens: Any, kv_bufs: list) -> Any:
        torch, F, s = self.torch, self.F, self.s
        b, T = tokens.shape
        x = F.embedding(tokens, self.emb).view(b * T, s.d_model)
        for layer, kv in zip(self.layers, kv_bufs, strict=True):
            h = self.norm(x, layer["ln1"])
            qkv = F.linear(h, layer["wqkv"])
            q = qkv[:, : s.q_dim].view(b, T, s.n_heads, s.head_dim).transpose(1, 2)
            kv.copy_(qkv[:, s.q_dim:].view(b, T, 2, s.n_kv_heads, s.head_dim).permute(2, 0, 3, 1, 4))
            o = self._sdpa_causal(q, kv[0], kv[1])
            o = o.transpose(1, 2).reshape(b * T, s.q_dim)
            x = torch.addmm(x, o, layer["wo"].t())
            x = self._ffn(x, layer)
        last = x.view(b, T, s.d_model)[:, -1]
        logits = F.linear(self.norm(last, self.ln_f), self.lm_head)
        return torch.argmax(logits, dim=-1)

    def _sdpa_causal(self, q: Any, k: Any, v: Any) -> Any:
        F, s = self.F, self.s
        if s.group == 1:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except TypeError:  # torch < 2.5: no enable_gqa
            return F.scaled_dot_product_attention(q, k.repeat_interleave(s.group, 1),
                                                  v.repeat_interleave(s.group, 1), is_causal=True)

    # -- one decode step over cache [2, B, n_kv, max_len, hd] per layer, attending kv_len positions
    def decode_step(self, tokens: Any, cache: list, pos: Any, kv_len: int) -> None:
        torch, F, s = self.torch, self.F, self.s
        B = tokens.shape[0]
        x = F.embedding(tokens, self.emb)
        for layer, kv in zip(self.layers, cache, strict=True):
            h = self.norm(x, layer["ln1"])
            qkv = F.linear(h, layer["wqkv"])
            q = qkv[:, : s.q_dim].view(B, s.n_kv_heads, s.group, s.head_dim)
            new = qkv[:, s.q_dim:].view(B, 2, s.n_kv_heads, 1, s.head_dim).transpose(0, 1)
            kv.index_copy_(3, pos, new)
            o = F.scaled_dot_product_attention(q, kv[0, :, :, :kv_len], kv[1, :, :, :kv_len])
            x = torch.addmm(x, o.reshape(B, s.q_dim), layer["wo"].t())
            x = self._ffn(x, layer)
        logits = F.linear(self.norm(x, self.ln_f), self.lm_head)
        tokens.copy_(torch.argmax(logits, dim=-1))
        pos.add_(1)


# --------------------------------------------------------------------------- device / NVML


class _Gpu:
    """The CUDA device, its NVML handle and static facts."""

    def __init__(self, device: int | str) -> None:
        torch = _import_torch()
        self.torch = torch
        self.is_cuda = str(device) != "cpu"
        self.nvml = None
        self.handle = None
        self.energy_ok = False
        self.driver = ""
        if not self.is_cuda:
            self.device = torch.device("cpu")
            self.name = "cpu"
            self.platform = "cpu"
            return
        if not torch.cuda.is_available():
            raise DseError("dse measure: torch sees no CUDA GPU (torch.cuda.is_available() is False)")
        index = int(device)
        if index >= torch.cuda.device_count():
            raise DseError(f"dse measure: no CUDA device {index} (found {torch.cuda.device_count()})")
        self.device = torch.device("cuda", index)
        torch.cuda.set_device(self.device)
        props = torch.cuda.get_device_properties(self.device)
        self.name = props.name
        self.platform = platform_name(props.name)
        pynvml = _import_nvml()
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise DseError(f"dse measure: NVML did not initialise: {exc}") from None
        self.nvml = pynvml
        self.handle = self._nvml_handle(props, index)
        self.driver = _s(pynvml.nvmlSystemGetDriverVersion())
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.energy_ok = True
        except pynvml.NVMLError:
            self.energy_ok = False

    def _nvml_handle(self, props: Any, index: int) -> Any:
        pynvml = self.nvml
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            text = str(uuid)
            for cand in (text, "GPU-" + text):
                try:
                    return pynvml.nvmlDeviceGetHandleByUUID(cand)
                except (pynvml.NVMLError, TypeError, ValueError):
                    pass
        bus = getattr(props, "pci_bus_id", None)
        if bus is not None:
            dom = getattr(props, "pci_domain_id", 0)
            dev = getattr(props, "pci_device_id", 0)
            try:
                return pynvml.nvmlDeviceGetHandleByPciBusId(f"{dom:08x}:{bus:02x}:{dev:02x}.0")
            except pynvml.NVMLError:
                pass
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def sync(self) -> None:
        if self.is_cuda:
            self.torch.cuda.synchronize(self.device)

    def energy_mj(self) -> float:
        if not self.energy_ok:
            return math.nan
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def power_limit_w(self) -> float:
        if self.nvml is None:
            return math.nan
        try:
            return self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1000.0
        except self.nvml.NVMLError:
            return math.nan

    def max_sm_clock(self) -> float:
        if self.nvml is None:
            return math.nan
        try:
            return float(self.nvml.nvmlDeviceGetMaxClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
        except self.nvml.NVMLError:
            return math.nan

    def sample(self) -> dict[str, float]:
        """One reading of clocks (MHz), power (W) and temperature (C)."""
        out = {"sm": math.nan, "mem": math.nan, "power": math.nan, "temp": math.nan}
        if self.nvml is None:
            return out
        nv, h = self.nvml, self.handle
        for key, fn in (("sm", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                        ("mem", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
                        ("power", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                        ("temp", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))):
            try:
                out[key] = float(fn())
            except nv.NVMLError:
                pass
        return out

    def idle_power_w(self, seconds: float) -> float:
        """Mean board power over ``seconds`` of nothing (after 1 s to let clocks settle)."""
        if not self.is_cuda or seconds <= 0:
            return math.nan
        self.sync()
        time.sleep(1.0)
        with _Sampler(self) as sampler:
            e0, t0 = self.energy_mj(), time.perf_counter()
            time.sleep(seconds)
            e1, t1 = self.energy_mj(), time.perf_counter()
        if self.energy_ok:
            return (e1 - e0) / 1000.0 / (t1 - t0)
        return sampler.mean("power")

    def heat(self, seconds: float) -> float:
        """Run bf16 matrix products for ``seconds``; returns the GPU temperature (C) after."""
        if not self.is_cuda or seconds <= 0:
            return math.nan
        torch = self.torch
        a = torch.randn(8192, 8192, device=self.device, dtype=torch.bfloat16)
        b = torch.randn_like(a)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(20):
                torch.mm(a, b)
            self.sync()
        del a, b
        torch.cuda.empty_cache()
        return self.sample()["temp"]

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def platform_name(gpu_name: str) -> str:
    """Platform preset name for a GPU name: ``h100-sxm`` for an H100 SXM/HBM3, else the name."""
    upper = gpu_name.upper()
    if "H100" in upper and ("SXM" in upper or "HBM3" in upper):
        return "h100-sxm"
    return gpu_name


class _Sampler:
    """Background thread sampling NVML clocks/power/temperature every ``period_s``."""

    def __init__(self, gpu: _Gpu, period_s: float = 0.05) -> None:
        self.gpu, self.period = gpu, period_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.gpu.sample())
            self._stop.wait(self.period)

    def __enter__(self) -> _Sampler:
        if self.gpu.nvml is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self, key: str) -> float:
        vals = [s[key] for s in self.samples if not math.isnan(s[key])]
        return sum(vals) / len(vals) if vals else math.nan


class _Timer:
    """CUDA events on a GPU, the host clock on the CPU."""

    def __init__(self, gpu: _Gpu) -> None:
        self.gpu = gpu
        torch = gpu.torch
        if gpu.is_cuda:
            self.a = torch.cuda.Event(enable_timing=True)
            self.b = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.gpu.is_cuda:
            self.a.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.gpu.is_cuda:
            self.b.record()
        else:
            self.t1 = time.perf_counter()

    def seconds(self) -> float:
        if self.gpu.is_cuda:
            self.b.synchronize()
            return self.a.elapsed_time(self.b) / 1000.0
        return self.t1 - self.t0


def _median(values: Sequence[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


# --------------------------------------------------------------------------- one case


def _graph(gpu: _Gpu, fn: Any, pool: Any, stream: Any) -> Any:
    """A callable that runs ``fn`` (a CUDA graph replay on the GPU, a plain call on the CPU)."""
    if not gpu.is_cuda:
        return fn
    torch = gpu.torch
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=pool, stream=stream):
        fn()
    return g.replay


def _warm(gpu: _Gpu, fn: Any, stream: Any) -> None:
    """Run ``fn`` once eagerly (on the capture stream on a GPU) before capturing it."""
    if not gpu.is_cuda:
        fn()
        return
    torch = gpu.torch
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    gpu.sync()


def _run_timed(gpu: _Gpu, body: Any, *, repeats: int, min_s: float, soft_s: float,
               min_runs: int = 1) -> dict[str, Any]:
    """Warm once, then time ``body`` back to back, with energy and NVML samples around the timed runs.

    Runs: ``repeats``, fewer (down to ``min_runs``) where they would take over ``soft_s``, and more
    where needed to last ``min_s`` seconds (for the energy counter).
    """
    t = _Timer(gpu)
    t.start()
    body()
    t.stop()
    warm_s = max(t.seconds(), 1e-9)
    n = min(repeats, max(min_runs, int(soft_s / warm_s)))
    n = max(1, min(max(n, math.ceil(min_s / warm_s)), 100000))
    timers = [_Timer(gpu) for _ in range(n)]
    gpu.sync()
    with _Sampler(gpu) as sampler:
        e0, w0 = gpu.energy_mj(), time.perf_counter()
        for tm in timers:
            tm.start()
            body()
            tm.stop()
        gpu.sync()
        e1, w1 = gpu.energy_mj(), time.perf_counter()
    times = [tm.seconds() for tm in timers]
    wall = w1 - w0
    if gpu.energy_ok:
        energy_j, method = (e1 - e0) / 1000.0, "nvml_total_energy"
    elif gpu.is_cuda:
        energy_j, method = sampler.mean("power") * wall, "nvml_power_samples"
    else:
        energy_j, method = math.nan, "none"
    return {"times": times, "n": n, "wall_s": wall, "energy_j": energy_j, "method": method, "sampler": sampler}


def _prefill_phase(gpu: _Gpu, dec: Decoder, gen: Any, stream: Any, batch: int, in_len: int, *, repeats: int,
                   max_prefill_tokens: int, min_prefill_s: float) -> dict[str, Any]:
    torch, s, dev = gpu.torch, dec.s, gpu.device
    bc = _prefill_chunk(batch, in_len, max_prefill_tokens)
    n_chunks = batch // bc
    p_tokens = torch.randint(0, s.vocab, (bc, in_len), device=dev, generator=gen)
    p_kv = [torch.empty(2, bc, s.n_kv_heads, in_len, s.head_dim, device=dev, dtype=dec.dtype)
            for _ in range(s.n_layers)]
    p_out: dict[str, Any] = {}

    def prefill_fn() -> None:
        p_out["next"] = dec.prefill(p_tokens, p_kv)

    with torch.inference_mode():
        _warm(gpu, prefill_fn, stream)
        pool = torch.cuda.graph_pool_handle() if gpu.is_cuda else None
        p_graph = _graph(gpu, prefill_fn, pool, stream)

        def prefill_all() -> None:
            for _ in range(n_chunks):
                p_graph()

        pre = _run_timed(gpu, prefill_all, repeats=repeats, min_s=min_prefill_s, soft_s=3.0, min_runs=1)
    return {"ttft_s": _median(pre["times"]),
            "prefill_power_w": pre["energy_j"] / pre["wall_s"] if pre["wall_s"] > 0 else math.nan}


def _decode_phase(gpu: _Gpu, dec: Decoder, gen: Any, stream: Any, batch: int, in_len: int, out_len: int, *,
                  repeats: int, kv_bucket: int, min_decode_s: float) -> dict[str, Any]:
    torch, s, dev = gpu.torch, dec.s, gpu.device
    max_len = _round_up(in_len + out_len, kv_bucket)
    cache = [torch.empty(2, batch, s.n_kv_heads, max_len, s.head_dim, device=dev, dtype=dec.dtype)
             for _ in range(s.n_layers)]
    for kv in cache:
        kv.normal_(0.0, 1.0, generator=gen)
    tokens = torch.randint(0, s.vocab, (batch,), device=dev, generator=gen)
    pos = torch.full((1,), in_len, device=dev, dtype=torch.long)
    lengths = [min(max_len, _round_up(in_len + step + 1, kv_bucket)) for step in range(out_len)]
    steps: dict[int, Any] = {}
    with torch.inference_mode():
        pool = torch.cuda.graph_pool_handle() if gpu.is_cuda else None
        for kv_len in sorted(set(lengths)):
            def step_fn(kv_len: int = kv_len) -> None:
                dec.decode_step(tokens, cache, pos, kv_len)
            if not steps:
                _warm(gpu, step_fn, stream)
            steps[kv_len] = _graph(gpu, step_fn, pool, stream)
        sequence = [steps[n] for n in lengths]

        def decode_loop() -> None:
            pos.fill_(in_len)
            for replay in sequence:
                replay()

        # host cost of one step, measured on an idle queue (a full launch queue would block the host)
        probe = min(8, out_len)
        gpu.sync()
        h0 = time.perf_counter()
        pos.fill_(in_len)
        for replay in sequence[:probe]:
            replay()
        host_step_s = (time.perf_counter() - h0) / probe
        gpu.sync()
        res = _run_timed(gpu, decode_loop, repeats=repeats, min_s=min_decode_s, soft_s=6.0, min_runs=2)
    times = res["times"]
    tpot = _median(times) / out_len
    e_loop = res["energy_j"] / res["n"]
    sampler = res["sampler"]
    return {
        "tpot_s": tpot,
        "decode_tokens_per_s": batch / tpot,
        "decode_power_w": res["energy_j"] / res["wall_s"],
        "decode_tokens_per_j": batch * out_len / e_loop if e_loop > 0 else math.nan,
        "tpot_min_s": min(times) / out_len,
        "tpot_max_s": max(times) / out_len,
        "n_decode_loops": res["n"],
        "decode_energy_j": e_loop,
        "host_enqueue_frac": host_step_s / tpot,
        "sm_clock_mhz": sampler.mean("sm"),
        "mem_clock_mhz": sampler.mean("mem"),
        "gpu_temp_c": sampler.mean("temp"),
        "energy_method": res["method"],
    }


def measure_one(gpu: _Gpu, dec: Decoder, batch: int, in_len: int, out_len: int, *, repeats: int = DEFAULT_REPEATS,
                kv_bucket: int = 16, max_prefill_tokens: int = 16384, min_decode_s: float = 2.0,
                min_prefill_s: float = 2.0, seed: int = 0) -> dict[str, Any]:
    """Measure one (batch, in_len, out_len) case on an already built decoder; returns a partial row.

    The prefill and decode phases run one after the other, each freeing its buffers and graphs.
    """
    torch = gpu.torch
    gen = torch.Generator(device=gpu.device)
    gen.manual_seed(seed + 1)
    stream = torch.cuda.Stream(gpu.device) if gpu.is_cuda else None
    row = _prefill_phase(gpu, dec, gen, stream, batch, in_len, repeats=repeats,
                         max_prefill_tokens=max_prefill_tokens, min_prefill_s=min_prefill_s)
    _release(gpu)
    row.update(_decode_phase(gpu, dec, gen, stream, batch, in_len, out_len, repeats=repeats,
                             kv_bucket=kv_bucket, min_decode_s=min_decode_s))
    _release(gpu)
    return row


def _release(gpu: _Gpu) -> None:
    if gpu.is_cuda:
        gpu.sync()
        gpu.torch.cuda.empty_cache()


# --------------------------------------------------------------------------- sweep


def _load_card(name: Any) -> Any:
    from dse.spec.presets import load_model

    return load_model(name)


def measure_cases(cases: Iterable[tuple[Any, int, int, int]], *, repeats: int = DEFAULT_REPEATS,
                  device: int | str = 0, kv_bucket: int = 16, max_prefill_tokens: int = 16384,
                  min_decode_s: float = 2.0, min_prefill_s: float = 2.0, idle_s: float = 3.0,
                  heat_s: float = 30.0, seed: int = 0, mem_margin_bytes: int = 3 << 30):
    """Measure explicit ``(model, batch, in_len, out_len)`` cases; a pandas DataFrame, one row each.

    ``model`` is a card name, a YAML path or a :class:`dse.spec.presets.ModelCard`. Cases that would not
    fit in GPU memory (estimate, or an out-of-memory error) and MoE cards are skipped with a line
    on stderr. ``device="cpu"`` runs the same code eagerly on the CPU (no graphs, no energy).
    ``heat_s``: seconds of bf16 matrix products first, so that the GPU measures near its working
    temperature (leakage power grows with temperature); then ``idle_s`` seconds of idle power.
    """
    import pandas as pd

    cases = [(m, int(b), int(i), int(o)) for m, b, i, o in cases]
    for _, b, i, o in cases:
        if b < 1 or i < 1 or o < 1:
            raise DseError(f"dse measure: batch, in_len and out_len must be >= 1 (got {b}, {i}, {o})")
    if kv_bucket < 1 or repeats < 1:
        raise DseError("dse measure: kv_bucket and repeats must be >= 1")
    gpu = _Gpu(device)
    torch = gpu.torch
    try:
        cards = {}
        for m, *_ in cases:
            key = m if isinstance(m, (str, Path)) else id(m)
            if key not in cards:
                cards[key] = _load_card(m)
        if gpu.is_cuda:
            torch.empty(1, device=gpu.device)  # create the context before reading idle power
        temp = gpu.heat(heat_s)
        if heat_s > 0 and gpu.is_cuda:
            _log(f"heated the GPU for {heat_s:.0f} s: {temp:.0f} C")
        idle = gpu.idle_power_w(idle_s)
        if gpu.is_cuda:
            _log(f"{gpu.name} (platform {gpu.platform}), driver {gpu.driver}, torch {torch.__version__}, "
                 f"idle {idle:.1f} W, power limit {gpu.power_limit_w():.0f} W")
        today = _dt.date.today().isoformat()
        source = (f"measured with dse measure on {gpu.name}, torch {torch.__version__}"
                  + (f" (CUDA {torch.version.cuda}), driver {gpu.driver}" if gpu.is_cuda else "")
                  + f", {today}")
        stack = (f"dse measure: PyTorch {torch.__version__} bf16, random weights, "
                 + (f"CUDA graphs, kv_bucket {kv_bucket}" if gpu.is_cuda else "eager CPU"))
        static = {"power_limit_w": gpu.power_limit_w(), "max_sm_clock_mhz": gpu.max_sm_clock(),
                  "torch_version": torch.__version__, "driver_version": gpu.driver}
        rows: list[dict[str, Any]] = []
        order: list[Any] = []
        for m, *_ in cases:
            key = m if isinstance(m, (str, Path)) else id(m)
            if key not in order:
                order.append(key)
        total = len(cases)
        done = 0
        for key in order:
            card = cards[key]
            shapes = Shapes.from_card(card)
            mine = [c for c in cases if (c[0] if isinstance(c[0], (str, Path)) else id(c[0])) == key]
            if shapes.n_experts > 1:
                for _, b, i, o in mine:
                    done += 1
                    _log(f"{done}/{total} {shapes.name} batch={b} in={i} out={o}: skipped (MoE not supported)")
                continue
            free = _free_bytes(gpu)
            need_w = shapes.n_params() * 2
            if need_w + mem_margin_bytes > free:
                for _, b, i, o in mine:
                    done += 1
                    _log(f"{done}/{total} {shapes.name} batch={b} in={i} out={o}: skipped (weights "
                         f"{need_w / 1e9:.1f} GB do not fit in {free / 1e9:.1f} GB free)")
                continue
            t_build = time.perf_counter()
            dec = Decoder(shapes, gpu.device, seed=seed)
            gpu.sync()
            _log(f"{shapes.name}: built {dec.weight_bytes() / 1e9:.2f} GB of bf16 weights in "
                 f"{time.perf_counter() - t_build:.1f} s")
            for _, b, i, o in mine:
                done += 1
                head = f"{done}/{total} {shapes.name} batch={b} in={i} out={o}"
                est = estimate_bytes(shapes, b, i, o, kv_bucket=kv_bucket, max_prefill_tokens=max_prefill_tokens)
                free = _free_bytes(gpu)
                need = max(est["decode"], est["prefill"]) + mem_margin_bytes
                if need > free:
                    _log(f"{head}: skipped (needs ~{need / 1e9:.1f} GB, {free / 1e9:.1f} GB free)")
                    continue
                t0 = time.perf_counter()
                try:
                    part = measure_one(gpu, dec, b, i, o, repeats=repeats, kv_bucket=kv_bucket,
                                       max_prefill_tokens=max_prefill_tokens, min_decode_s=min_decode_s,
                                       min_prefill_s=min_prefill_s, seed=seed)
                except torch.cuda.OutOfMemoryError:
                    _log(f"{head}: skipped (out of GPU memory)")
                    if gpu.is_cuda:
                        torch.cuda.empty_cache()
                    continue
                row = {"platform": gpu.platform, "gpu_name": gpu.name, "model": shapes.name, "batch": b,
                       "in_len": i, "out_len": o, "w_bits": 16, "a_bits": 16, "kv_bits": 16,
                       "idle_power_w": idle, "source": source, "weight_bytes": dec.weight_bytes(),
                       "kv_bucket": kv_bucket, "max_prefill_tokens": max_prefill_tokens, **static, **part}
                row["tokens_per_s"] = b * o / (row["ttft_s"] + o * row["tpot_s"])
                row["power_kind"] = "measured" if math.isfinite(row["decode_power_w"]) else ""
                row["stack"] = stack
                rows.append(row)
                _log(f"{head}: ttft {row['ttft_s'] * 1e3:.2f} ms, tpot {row['tpot_s'] * 1e3:.3f} ms "
                     f"({row['decode_tokens_per_s']:.1f} tok/s), {row['decode_power_w']:.0f} W, "
                     f"{row['decode_tokens_per_j']:.2f} tok/J, sm {row['sm_clock_mhz']:.0f} MHz, "
                     f"enqueue {row['host_enqueue_frac']:.2f} [{time.perf_counter() - t0:.1f} s]")
            del dec
            if gpu.is_cuda:
                gpu.sync()
                torch.cuda.empty_cache()
    finally:
        gpu.close()
    return pd.DataFrame(rows, columns=list(COLUMNS + EXTRA_COLUMNS))


def _free_bytes(gpu: _Gpu) -> int:
    if not gpu.is_cuda:
        return 1 << 62
    return int(gpu.torch.cuda.mem_get_info(gpu.device)[0])


def measure(models: Sequence[Any], batches: Sequence[int], in_lens: Sequence[int], out_lens: Sequence[int], *,
            repeats: int = DEFAULT_REPEATS, device: int | str = 0, **kwargs: Any):
    """Measure the cartesian product models x batches x in_lens x out_lens; a pandas DataFrame.

    See :func:`measure_cases` for the keyword arguments and the module docstring for the method.
    """
    cases = [(m, b, i, o) for m, b, i, o in product(models, batches, in_lens, out_lens)]
    return measure_cases(cases, repeats=repeats, device=device, **kwargs)


def write_measurements(df: Any, path: str | Path) -> Path:
    """Write a measurement DataFrame as CSV atomically (:func:`write_csv`) after checking its columns."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DseError(f"measurement table lacks columns {missing}")
    return write_csv(df, path)


def write_csv(df: Any, path: str | Path) -> Path:
    """Write a DataFrame as CSV atomically (:func:`dse.results.io.atomic_write`), 6 significant digits."""
    from dse.results.io import atomic_write  # on first use: the GPU side imports this module without pyarrow

    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))
