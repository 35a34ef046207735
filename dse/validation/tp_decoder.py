"""GPU side of ``dse measure --tp``: the tensor-parallel decoder, one worker per GPU, the all-reduce sweep.

Needs PyTorch with CUDA and NCCL, and NVML; imported only inside the worker processes that
:func:`dse.validation.measure_tp.run_group` spawns. The method is in that module's docstring.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import time
from typing import Any

from dse.validation.measure_decoder import Shapes, _prefill_chunk, _round_up
from dse.validation.measure_gpu import Gpu, Timer, log, median, nvml_text, run_timed
from dse.validation.measure_graphs import DecodeGraphs, capture, prefill_graph, warm
from dse.validation.tp_shard import (
    SAFE_ENV,
    decode_comm,
    estimate_rank_bytes,
    gpu_platform,
    rank_weight_bytes,
    shard,
)


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        log(f"[tp] {msg}")


class Group:
    """This rank's GPU and the (possibly absent) NCCL group, with host-side helpers."""

    def __init__(self, rank: int, tp: int, gpu: Any, dist: Any) -> None:
        self.rank, self.tp, self.gpu, self.dist = rank, tp, gpu, dist
        self.torch = gpu.torch
        self._flag = self.torch.zeros(1, device=gpu.device) if tp > 1 else None

    def gather(self, obj: Any) -> list[Any]:
        if self.tp == 1:
            return [obj]
        out: list[Any] = [None] * self.tp
        self.dist.all_gather_object(out, obj)
        return out

    def from_rank0(self, obj: Any) -> Any:
        return self.gather(obj)[0]

    def barrier(self) -> None:
        """All ranks' queued GPU work done, then one tiny all-reduce, then done again."""
        self.gpu.sync()
        if self.tp > 1:
            self.dist.all_reduce(self._flag)
            self.gpu.sync()


# --------------------------------------------------------------------------- model


class TpDecoder:
    """Rank ``rank``'s shard of a random-weight bf16 decoder (Megatron-style TP; see measure_tp).

    ``full_seed``: build the full weights from a CPU generator and slice them (for the
    numerics self-check on tiny models); else draw the shard directly on the GPU.
    """

    def __init__(self, shapes: Any, tp: int, rank: int, device: Any, *, comm: bool = True, seed: int = 0,
                 full_seed: int | None = None) -> None:
        import torch
        import torch.nn.functional as F  # noqa: N812

        self.torch, self.F, self.s = torch, F, shapes
        self.tp, self.rank, self.comm = tp, rank, comm and tp > 1
        self.sh = sh = shard(shapes, tp)
        self.device = torch.device(device)
        self.dtype = torch.bfloat16
        s, hd, d = shapes, shapes.head_dim, shapes.d_model
        self.q_dim, self.kv_dim = sh.n_heads * hd, sh.n_kv_heads * hd
        self.group = sh.n_heads // sh.n_kv_heads
        self.off = sh.vocab_offsets[rank]
        ffn_rows = (2 if s.gated else 1) * sh.d_ff
        if full_seed is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed * 1009 + rank)

            def w(rows: int, cols: int, _tag: str = "") -> Any:
                t = torch.empty(rows, cols, device=self.device, dtype=self.dtype)
                return t.normal_(0.0, 1.0 / math.sqrt(cols), generator=gen)
        else:
            w = self._sliced_init(full_seed)
        ones = lambda n: torch.ones(n, device=self.device, dtype=self.dtype)  # noqa: E731
        self.layers = [
            {"ln1": ones(d), "wqkv": w(self.q_dim + 2 * self.kv_dim, d, f"qkv{i}"), "wo": w(d, self.q_dim, f"o{i}"),
             "ln2": ones(d), "w1": w(ffn_rows, d, f"ffn1_{i}"), "w2": w(d, sh.d_ff, f"ffn2_{i}")}
            for i in range(s.n_layers)
        ]
        self.emb = w(s.vocab, d, "emb")
        self.ln_f = ones(d)
        if s.tied:
            self.lm_head = self.emb[self.off: self.off + sh.vocab_rows[rank]]
        else:
            self.lm_head = w(sh.vocab_rows[rank], d, "head")
        self.eps = 1e-5

    def _sliced_init(self, full_seed: int) -> Any:
        """Weight maker that draws each full matrix on the CPU (same on every rank) and keeps this rank's slice."""
        torch, s, sh, r = self.torch, self.s, self.sh, self.rank
        hd, gq = s.head_dim, s.n_heads // s.n_kv_heads
        counter = [0]

        def full(rows: int, cols: int) -> Any:
            g = torch.Generator()
            g.manual_seed(full_seed * 7919 + counter[0])
            counter[0] += 1
            return torch.randn(rows, cols, generator=g) / math.sqrt(cols)

        def w(rows: int, cols: int, tag: str) -> Any:
            qs, kvs = r * sh.n_heads * hd, sh.kv_head_start(r, gq) * hd
            if tag.startswith("qkv"):
                f = full(s.q_dim + 2 * s.kv_dim, cols)
                q = f[qs: qs + self.q_dim]
                k = f[s.q_dim + kvs: s.q_dim + kvs + self.kv_dim]
                v = f[s.q_dim + s.kv_dim + kvs: s.q_dim + s.kv_dim + kvs + self.kv_dim]
                out = torch.cat([q, k, v])
            elif tag.startswith("o"):
                out = full(rows, s.q_dim)[:, qs: qs + self.q_dim]
            elif tag.startswith("ffn1"):
                f = full((2 if s.gated else 1) * s.d_ff, cols)
                a = r * sh.d_ff
                parts = [f[a: a + sh.d_ff]] + ([f[s.d_ff + a: s.d_ff + a + sh.d_ff]] if s.gated else [])
                out = torch.cat(parts)
            elif tag.startswith("ffn2"):
                out = full(rows, s.d_ff)[:, r * sh.d_ff: (r + 1) * sh.d_ff]
            elif tag == "emb":
                out = full(s.vocab, cols)
            else:  # head
                out = full(s.vocab, cols)[self.off: self.off + rows]
            assert tuple(out.shape) == (rows, cols), (tag, out.shape, rows, cols)
            return out.contiguous().to(self.device, self.dtype)

        return w

    def weight_bytes(self) -> int:
        seen, total = set(), 0
        for t in [t for layer in self.layers for t in layer.values()] + [self.emb, self.ln_f, self.lm_head]:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    # -- pieces
    def norm(self, x: Any, weight: Any) -> Any:
        return self.F.rms_norm(x, (x.shape[-1],), weight, self.eps)

    def _row_parallel(self, x: Any, a: Any, w: Any) -> Any:
        """x + a @ w.T summed over ranks: rank 0 adds the residual in its GEMM, then one all-reduce."""
        torch = self.torch
        y = torch.addmm(x, a, w.t()) if self.rank == 0 else torch.mm(a, w.t())
        if self.comm:
            torch.distributed.all_reduce(y)
        return y

    def _ffn(self, x: Any, layer: dict) -> Any:
        F, ff = self.F, self.sh.d_ff
        u = F.linear(self.norm(x, layer["ln2"]), layer["w1"])
        a = F.silu(u[:, :ff]) * u[:, ff:] if self.s.gated else F.relu(u)
        return self._row_parallel(x, a, layer["w2"])

    def _next_token(self, h: Any) -> Any:
        """Greedy token from the vocabulary-parallel LM head (local max, all-gather of (value, id) pairs)."""
        torch = self.torch
        logits = self.F.linear(self.norm(h, self.ln_f), self.lm_head)
        val, idx = logits.max(dim=-1)
        if not self.comm:
            return idx + self.off
        pair = torch.stack([val.float(), (idx + self.off).float()], dim=-1)  # ids < 2**24: exact in fp32
        every = torch.empty((self.tp,) + tuple(pair.shape), device=pair.device, dtype=pair.dtype)
        torch.distributed.all_gather_into_tensor(every, pair)
        best = every[..., 0].argmax(dim=0, keepdim=True)  # [1, B]
        return every[..., 1].gather(0, best).squeeze(0).long()

    # -- prefill: tokens [b, T] -> next tokens [b]; kv_bufs[l]: [2, b, n_kv_local, T, hd]
    def prefill(self, tokens: Any, kv_bufs: list, return_hidden: bool = False) -> Any:
        F, s = self.F, self.s
        b, T = tokens.shape
        hl, kvl, hd = self.sh.n_heads, self.sh.n_kv_heads, s.head_dim
        x = F.embedding(tokens, self.emb).view(b * T, s.d_model)
        for layer, kv in zip(self.layers, kv_bufs, strict=True):
            qkv = F.linear(self.norm(x, layer["ln1"]), layer["wqkv"])
            q = qkv[:, : self.q_dim].view(b, T, hl, hd).transpose(1, 2)
            kv.copy_(qkv[:, self.q_dim:].view(b, T, 2, kvl, hd).permute(2, 0, 3, 1, 4))
            o = F.scaled_dot_product_attention(q, kv[0], kv[1], is_causal=True, enable_gqa=self.group > 1)
            x = self._row_parallel(x, o.transpose(1, 2).reshape(b * T, self.q_dim), layer["wo"])
            x = self._ffn(x, layer)
        last = x.view(b, T, s.d_model)[:, -1]
        nxt = self._next_token(last)
        return (nxt, last) if return_hidden else nxt

    # -- one decode step over cache[l] [2, B, n_kv_local, max_len, hd], attending kv_len positions
    def decode_step(self, tokens: Any, cache: list, pos: Any, kv_len: int) -> None:
        F, s = self.F, self.s
        B = tokens.shape[0]
        kvl, hd = self.sh.n_kv_heads, s.head_dim
        x = F.embedding(tokens, self.emb)
        for layer, kv in zip(self.layers, cache, strict=True):
            qkv = F.linear(self.norm(x, layer["ln1"]), layer["wqkv"])
            q = qkv[:, : self.q_dim].view(B, kvl, self.group, hd)  # GQA: query heads of a K/V head as rows
            kv.index_copy_(3, pos, qkv[:, self.q_dim:].view(B, 2, kvl, 1, hd).transpose(0, 1))
            o = F.scaled_dot_product_attention(q, kv[0, :, :, :kv_len], kv[1, :, :, :kv_len])
            x = self._row_parallel(x, o.reshape(B, self.q_dim), layer["wo"])
            x = self._ffn(x, layer)
        tokens.copy_(self._next_token(x))
        pos.add_(1)


# --------------------------------------------------------------------------- timing

#: CUDA-graph capture mode of the ranks (NCCL kernels are captured too).
CAPTURE = "thread_local"


def _run_timed(g: Group, body: Any, *, repeats: int, min_s: float, soft_s: float, min_runs: int) -> dict[str, Any]:
    """:func:`dse.validation.measure_gpu.run_timed` with the run count agreed across ranks (the slowest
    rank's warm-up) and each run's time the slowest rank's; energy summed over ranks."""
    res = run_timed(g.gpu, body, repeats=repeats, min_s=min_s, soft_s=soft_s, min_runs=min_runs,
                    agree=lambda seconds: max(g.gather(seconds)), ready=g.barrier)
    n, sampler = res["n"], res["sampler"]
    mine = {"times": res["times"], "energy_j": res["energy_j"], "wall_s": res["wall_s"], "method": res["method"],
            "sm": sampler.mean("sm"), "mem": sampler.mean("mem"), "temp": sampler.mean("temp")}
    every = g.gather(mine)
    times = [max(r["times"][i] for r in every) for i in range(n)]
    return {"times": times, "n": n, "every": every, "method": every[0]["method"],
            "energy_j": sum(r["energy_j"] for r in every),
            "power_w": [r["energy_j"] / r["wall_s"] for r in every]}


def _prefill(g: Group, dec: TpDecoder, gen: Any, stream: Any, batch: int, in_len: int, cfg: dict) -> dict[str, Any]:
    torch, s, dev = g.torch, dec.s, g.gpu.device
    bc = _prefill_chunk(batch, in_len, cfg["max_prefill_tokens"])
    tokens = torch.randint(0, s.vocab, (bc, in_len), device=dev, generator=gen)
    kv = [torch.empty(2, bc, dec.sh.n_kv_heads, in_len, s.head_dim, device=dev, dtype=dec.dtype)
          for _ in range(s.n_layers)]
    fn = lambda: dec.prefill(tokens, kv)  # noqa: E731
    with torch.inference_mode():
        body = prefill_graph(g.gpu, fn, stream, batch // bc, capture_error_mode=CAPTURE)
        res = _run_timed(g, body, repeats=cfg["repeats"], min_s=cfg["min_prefill_s"], soft_s=3.0, min_runs=1)
    return {"ttft_s": median(res["times"]), "prefill_power_w": sum(res["power_w"])}


def _decode(g: Group, dec: TpDecoder, gen: Any, stream: Any, batch: int, in_len: int, out_len: int,
            cfg: dict) -> dict[str, Any]:
    torch, s, dev, kb = g.torch, dec.s, g.gpu.device, cfg["kv_bucket"]
    max_len = _round_up(in_len + out_len, kb)
    cache = [torch.empty(2, batch, dec.sh.n_kv_heads, max_len, s.head_dim, device=dev, dtype=dec.dtype)
             .normal_(0.0, 1.0, generator=gen) for _ in range(s.n_layers)]
    tokens = torch.randint(0, s.vocab, (batch,), device=dev, generator=gen)
    pos = torch.full((1,), in_len, device=dev, dtype=torch.long)
    with torch.inference_mode():
        graphs = DecodeGraphs(g.gpu, lambda kv_len: dec.decode_step(tokens, cache, pos, kv_len), pos, in_len,
                              out_len, kb, stream, capture_error_mode=CAPTURE)
        host_step_s = graphs.host_step_s(g.barrier)
        res = _run_timed(g, graphs.loop, repeats=cfg["repeats"], min_s=cfg["min_decode_s"], soft_s=6.0, min_runs=2)
    times, tpot = res["times"], median(res["times"]) / out_len
    e_loop = res["energy_j"] / res["n"]
    every = res["every"]
    mean = lambda key: sum(r[key] for r in every) / len(every)  # noqa: E731
    return {"tpot_s": tpot, "decode_tokens_per_s": batch / tpot, "decode_power_w": sum(res["power_w"]),
            "decode_tokens_per_j": batch * out_len / e_loop if e_loop > 0 else math.nan,
            "tpot_min_s": min(times) / out_len, "tpot_max_s": max(times) / out_len, "n_decode_loops": res["n"],
            "decode_energy_j": e_loop, "host_enqueue_frac": host_step_s / tpot, "sm_clock_mhz": mean("sm"),
            "mem_clock_mhz": mean("mem"), "gpu_temp_c": max(r["temp"] for r in every),
            "energy_method": res["method"], "device_decode_power_w": ";".join(f"{p:.1f}" for p in res["power_w"])}


# --------------------------------------------------------------------------- all-reduce sweep, self-check


def allreduce_sweep(g: Group, sizes: list[int], *, min_time_s: float = 0.02) -> list[dict[str, Any]]:
    """Median time of one bf16 NCCL all-reduce per message size, eager (back-to-back launches) and
    captured (``k`` all-reduces in one CUDA graph, time / k). Returns rank 0's rows (others: [])."""
    torch, dist, gpu = g.torch, g.dist, g.gpu
    chk = torch.full((1024,), float(g.rank + 1), device=gpu.device, dtype=torch.bfloat16)
    dist.all_reduce(chk)
    want = g.tp * (g.tp + 1) / 2
    if not bool((chk == want).all()):
        raise RuntimeError(f"all-reduce check failed: got {chk[0].item()}, want {want}")
    buf = torch.empty(max(sizes) // 2, device=gpu.device, dtype=torch.bfloat16).normal_()
    rows = []
    stream = torch.cuda.Stream(gpu.device)
    for size in sizes:
        x = buf[: size // 2]
        for _ in range(5):
            dist.all_reduce(x)
        g.barrier()
        t = Timer(gpu)
        t.start()
        for _ in range(5):
            dist.all_reduce(x)
        t.stop()
        one = max(g.gather(t.seconds() / 5))
        n = int(min(500, max(5, min_time_s / max(one, 1e-7))))
        res = {}
        for mode in ("eager", "graph"):
            if mode == "graph":
                k = min(n, 100)
                warm(gpu, lambda x=x: dist.all_reduce(x), stream)
                replay = capture(gpu, lambda x=x, k=k: [dist.all_reduce(x) for _ in range(k)], None, stream,
                                 capture_error_mode=CAPTURE)
                body, per = replay, k
            else:
                body, per = (lambda x=x, n=n: [dist.all_reduce(x) for _ in range(n)]), n
            body()
            g.barrier()
            ts = []
            for _ in range(5):
                tm = Timer(gpu)
                tm.start()
                body()
                tm.stop()
                ts.append(tm.seconds() / per)
            g.barrier()
            ts = [max(v) for v in zip(*g.gather(ts), strict=True)]
            res[mode] = (median(ts), min(ts), max(ts), per * 5)
        for mode, (med, lo, hi, n_ops) in res.items():
            alg = size / med
            rows.append({"n_ranks": g.tp, "mode": mode, "msg_bytes": size, "dtype": "bf16", "time_s": med,
                         "time_min_s": lo, "time_max_s": hi, "n_ops": n_ops, "algbw_bytes_per_s": alg,
                         "busbw_bytes_per_s": alg * 2 * (g.tp - 1) / g.tp})
        _log(g.rank, f"all-reduce {size:>10d} B: eager {res['eager'][0] * 1e6:8.1f} us, graph "
                     f"{res['graph'][0] * 1e6:8.1f} us, busbw {rows[-1]['busbw_bytes_per_s'] / 1e9:6.1f} GB/s")
    del buf
    torch.cuda.empty_cache()
    return rows if g.rank == 0 else []


def self_check(g: Group) -> tuple[float, float]:
    """TP decoder vs the TP1 decoder with the same (sliced) weights on a tiny card: (relative error
    of the last hidden state after prefill, fraction of next tokens that agree). bf16 rounding of
    the partial sums gives ~1e-3; a sharding error gives ~1."""
    torch = g.torch
    s = Shapes(name="tiny-check", n_layers=2, d_model=256, n_heads=8, n_kv_heads=max(1, g.tp // 2) * 2,
                  head_dim=32, d_ff=512, gated=True, vocab=1001, tied=False)
    dev = g.gpu.device
    tokens = torch.randint(0, s.vocab, (2, 24), generator=torch.Generator().manual_seed(5)).to(dev)
    with torch.inference_mode():
        tp_dec = TpDecoder(s, g.tp, g.rank, dev, full_seed=11)
        kv = [torch.empty(2, 2, tp_dec.sh.n_kv_heads, 24, s.head_dim, device=dev, dtype=torch.bfloat16)
              for _ in range(s.n_layers)]
        nxt, hid = tp_dec.prefill(tokens, kv, return_hidden=True)
        ref = TpDecoder(s, 1, 0, dev, full_seed=11)
        kv1 = [torch.empty(2, 2, s.n_kv_heads, 24, s.head_dim, device=dev, dtype=torch.bfloat16)
               for _ in range(s.n_layers)]
        nxt1, hid1 = ref.prefill(tokens, kv1, return_hidden=True)
        err = float((hid.float() - hid1.float()).norm() / hid1.float().norm())
        same = float((nxt == nxt1).float().mean())
    g.gpu.sync()
    return err, same


# --------------------------------------------------------------------------- worker


def worker_main(rank: int, tp: int, cfg: dict) -> None:
    """One process per GPU (``torch.multiprocessing.spawn`` entry point)."""
    for k, v in SAFE_ENV.items():
        os.environ[k] = v
    import torch
    import torch.distributed as dist

    gpu = Gpu(cfg["first_device"] + rank)
    if tp > 1:
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{cfg['port']}", rank=rank, world_size=tp,
                                timeout=_dt.timedelta(seconds=cfg["nccl_timeout_s"]), device_id=gpu.device)
    g = Group(rank, tp, gpu, dist)
    try:
        g.barrier()
        ver = torch.cuda.nccl.version() if tp > 1 else ""
        nccl = ".".join(str(v) for v in ver) if isinstance(ver, (tuple, list)) else str(ver)
        if tp > 1 and cfg["self_check"]:
            err, same = self_check(g)
            _log(rank, f"self-check TP{tp} vs TP1 (tiny card, same weights): hidden rel err {err:.2e}, "
                       f"next tokens agree {same:.0%}" + ("  ** SHARDING ERROR? **" if err > 5e-2 else ""))
        temp = gpu.heat(cfg["heat_s"])
        g.barrier()
        idle = g.gather(gpu.idle_power_w(cfg["idle_s"]))
        _log(rank, f"{gpu.name} x{tp}, driver {gpu.driver}, torch {torch.__version__}, NCCL {nccl or '-'}, "
                   f"heated to {temp:.0f} C, idle {sum(idle):.1f} W ({'; '.join(f'{p:.1f}' for p in idle)})")
        if tp > 1 and cfg["allreduce_sizes"]:
            gpus = ";".join(g.gather(_uuid(gpu)))
            ar = allreduce_sweep(g, cfg["allreduce_sizes"])
            src = f"measured with dse measure --tp on {tp}x {gpu.name}, {cfg['date']}"
            env = " ".join(f"{k}={os.environ.get(k, '')}" for k in ("NCCL_NVLS_ENABLE", "NCCL_PROTO", "NCCL_ALGO"))
            with open(cfg["allreduce_path"], "a", encoding="utf-8") as fh:
                for r in ar:
                    r.update(gpu_name=gpu.name, nccl_version=nccl, torch_version=torch.__version__,
                             driver_version=gpu.driver, nccl_env=env, source=src, gpus=gpus)
                    fh.write(json.dumps(r) + "\n")
        _cases(g, cfg, idle, nccl)
    finally:
        if tp > 1 and dist.is_initialized():
            dist.destroy_process_group()
        gpu.close()


def _uuid(gpu: Any) -> str:
    """First 12 characters of the GPU's NVML UUID ("GPU-48b773e7"), "" if NVML cannot say."""
    try:
        return nvml_text(gpu.nvml.nvmlDeviceGetUUID(gpu.handle))[:12]
    except Exception:  # noqa: BLE001 - a label only
        return ""


def _cases(g: Group, cfg: dict, idle: list[float], nccl: str) -> None:
    torch, gpu, rank, tp = g.torch, g.gpu, g.rank, g.tp
    comm = cfg["comm"] == "nccl"
    tag = f"TP{tp}" + ("" if comm or tp == 1 else " (no collectives)")
    source = (f"measured with dse measure --tp {tp} on {tp}x {gpu.name}, torch {torch.__version__} "
              f"(CUDA {torch.version.cuda}){', NCCL ' + nccl if nccl else ''}, driver {gpu.driver}, {cfg['date']}")
    stack = (f"dse measure --tp: PyTorch {torch.__version__} bf16, random weights, Megatron TP{tp} over "
             f"{'NCCL' if comm and tp > 1 else 'no collectives'}, CUDA graphs, kv_bucket {cfg['kv_bucket']}")
    static = {"power_limit_w": gpu.power_limit_w() * tp, "max_sm_clock_mhz": gpu.max_sm_clock(),
              "torch_version": torch.__version__, "driver_version": gpu.driver}
    gpus = ";".join(g.gather(_uuid(gpu)))
    built: dict[str, Any] = {}
    stream = torch.cuda.Stream(gpu.device)
    for i, (name, b, il, ol) in enumerate(cfg["cases"]):
        s = cfg["shapes"][name]
        head = f"{i + 1}/{len(cfg['cases'])} {name} {tag} batch={b} in={il} out={ol}"
        late = cfg["deadline"] is not None and time.time() > cfg["deadline"]
        if g.from_rank0(late):
            _log(rank, f"{head}: skipped (deadline)")
            continue
        if name not in built:
            dec = None
            built.clear()
            torch.cuda.empty_cache()
            need_w = rank_weight_bytes(s, tp, rank) + cfg["mem_margin_bytes"]
            if not all(g.gather(need_w < torch.cuda.mem_get_info(gpu.device)[0])):
                _log(rank, f"{head}: skipped (weights {need_w / 1e9:.1f} GB per GPU do not fit)")
                continue
            t0 = time.perf_counter()
            built[name] = TpDecoder(s, tp, rank, gpu.device, comm=comm, seed=cfg["seed"])
            g.barrier()
            _log(rank, f"{name} {tag}: built {built[name].weight_bytes() / 1e9:.2f} GB per GPU in "
                       f"{time.perf_counter() - t0:.1f} s")
        dec = built[name]
        est = estimate_rank_bytes(s, tp, b, il, ol, kv_bucket=cfg["kv_bucket"],
                                  max_prefill_tokens=cfg["max_prefill_tokens"])
        need = max(est["decode"], est["prefill"]) + cfg["mem_margin_bytes"]
        if not all(g.gather(need < torch.cuda.mem_get_info(gpu.device)[0])):
            _log(rank, f"{head}: skipped (needs ~{need / 1e9:.1f} GB per GPU)")
            continue
        t0 = time.perf_counter()
        gen = torch.Generator(device=gpu.device)
        gen.manual_seed(cfg["seed"] + 1)
        row = _prefill(g, dec, gen, stream, b, il, cfg)
        g.barrier()
        torch.cuda.empty_cache()
        row.update(_decode(g, dec, gen, stream, b, il, ol, cfg))
        g.barrier()
        torch.cuda.empty_cache()
        c = decode_comm(s, b, tp if comm else 1)
        row.update({"platform": gpu_platform(gpu.name), "gpu_name": gpu.name, "model": name, "batch": b,
                    "in_len": il, "out_len": ol, "w_bits": 16, "a_bits": 16, "kv_bits": 16,
                    "idle_power_w": sum(idle), "source": source, "stack": stack,
                    "weight_bytes": sum(g.gather(dec.weight_bytes())), "kv_bucket": cfg["kv_bucket"],
                    "max_prefill_tokens": cfg["max_prefill_tokens"], **static, "tp": tp, "n_devices": tp,
                    "comm": cfg["comm"] if tp > 1 else "none", "n_allreduce_per_step": c["n_allreduce"],
                    "allreduce_msg_bytes": c["allreduce_msg_bytes"], "rank_weight_bytes": dec.weight_bytes(),
                    "device_idle_power_w": ";".join(f"{p:.1f}" for p in idle), "nccl_version": nccl, "gpus": gpus})
        row["tokens_per_s"] = b * ol / (row["ttft_s"] + ol * row["tpot_s"])
        row["power_kind"] = "measured"
        if rank == 0:
            with open(cfg["rows_path"], "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        _log(rank, f"{head}: ttft {row['ttft_s'] * 1e3:.2f} ms, tpot {row['tpot_s'] * 1e3:.3f} ms "
                   f"({row['decode_tokens_per_s']:.1f} tok/s), {row['decode_power_w']:.0f} W "
                   f"[{row['device_decode_power_w']}], {row['decode_tokens_per_j']:.2f} tok/J, "
                   f"enqueue {row['host_enqueue_frac']:.2f} [{time.perf_counter() - t0:.1f} s]")
