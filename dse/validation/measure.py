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

Modules: this one measures cases and writes the rows; the decoder and its shapes are in
:mod:`dse.validation.measure_decoder`, the GPU (NVML energy counter, clocks, timers, the
timed-run loop) in :mod:`dse.validation.measure_gpu`, the CUDA-graph capture and replay
(shared with ``dse measure --tp``) in :mod:`dse.validation.measure_graphs`.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Iterable, Sequence
from itertools import product
from pathlib import Path
from typing import Any

from dse.spec.errors import DseError
from dse.validation.measure_decoder import (  # noqa: F401 - Shapes, estimate_bytes, Decoder: the public names
    Decoder,
    Shapes,
    _prefill_chunk,
    _round_up,
    estimate_bytes,
)
from dse.validation.measure_gpu import Gpu, median, platform_name, run_timed  # noqa: F401 - platform_name: public
from dse.validation.measure_gpu import log as _log
from dse.validation.measure_graphs import DecodeGraphs, prefill_graph

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


# --------------------------------------------------------------------------- one case


def _prefill_phase(gpu: Gpu, dec: Decoder, gen: Any, stream: Any, batch: int, in_len: int, *, repeats: int,
                   max_prefill_tokens: int, min_prefill_s: float) -> dict[str, Any]:
    torch, s, dev = gpu.torch, dec.s, gpu.device
    bc = _prefill_chunk(batch, in_len, max_prefill_tokens)
    p_tokens = torch.randint(0, s.vocab, (bc, in_len), device=dev, generator=gen)
    p_kv = [torch.empty(2, bc, s.n_kv_heads, in_len, s.head_dim, device=dev, dtype=dec.dtype)
            for _ in range(s.n_layers)]
    p_out: dict[str, Any] = {}

    def prefill_fn() -> None:
        p_out["next"] = dec.prefill(p_tokens, p_kv)

    with torch.inference_mode():
        prefill_all = prefill_graph(gpu, prefill_fn, stream, batch // bc)
        pre = run_timed(gpu, prefill_all, repeats=repeats, min_s=min_prefill_s, soft_s=3.0, min_runs=1)
    return {"ttft_s": median(pre["times"]),
            "prefill_power_w": pre["energy_j"] / pre["wall_s"] if pre["wall_s"] > 0 else math.nan}


def _decode_phase(gpu: Gpu, dec: Decoder, gen: Any, stream: Any, batch: int, in_len: int, out_len: int, *,
                  repeats: int, kv_bucket: int, min_decode_s: float) -> dict[str, Any]:
    torch, s, dev = gpu.torch, dec.s, gpu.device
    max_len = _round_up(in_len + out_len, kv_bucket)
    cache = [torch.empty(2, batch, s.n_kv_heads, max_len, s.head_dim, device=dev, dtype=dec.dtype)
             for _ in range(s.n_layers)]
    for kv in cache:
        kv.normal_(0.0, 1.0, generator=gen)
    tokens = torch.randint(0, s.vocab, (batch,), device=dev, generator=gen)
    pos = torch.full((1,), in_len, device=dev, dtype=torch.long)
    with torch.inference_mode():
        graphs = DecodeGraphs(gpu, lambda kv_len: dec.decode_step(tokens, cache, pos, kv_len), pos, in_len, out_len,
                              kv_bucket, stream)
        host_step_s = graphs.host_step_s(gpu.sync)
        res = run_timed(gpu, graphs.loop, repeats=repeats, min_s=min_decode_s, soft_s=6.0, min_runs=2)
    times = res["times"]
    tpot = median(times) / out_len
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


def measure_one(gpu: Gpu, dec: Decoder, batch: int, in_len: int, out_len: int, *, repeats: int = DEFAULT_REPEATS,
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


def _release(gpu: Gpu) -> None:
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
    gpu = Gpu(device)
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


def _free_bytes(gpu: Gpu) -> int:
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
