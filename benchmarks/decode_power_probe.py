"""Board power of decode-shaped work on an NVIDIA GPU: skinny GEMMs over one large weight and
flash-decode attention over long KV caches (NVML energy counter).

Run on a GPU machine: ``python benchmarks/decode_power_probe.py [--seconds 3] [--out FILE.csv]``.
The model prices a decode step as static power + bytes x energy per DRAM byte + FLOPs x energy
per FLOP (fitted on a GEMV and an 8192^3 GEMM, ``benchmarks/onchip_energy_probe.py`` and
``gemm_precision_probe.py``). This probe measures the shapes in between, where the project's own
decode measurements read more power than the model (validation/README.md):

* ``gemm``: ``x (M, K) @ W^T`` for one BF16 weight of 28,672 x 8,192 (470 MB, Llama-3-70B's gate+up
  slice; far larger than L2) and M = 1 ... 256 tokens (the decode batch);
* ``attn``: ``scaled_dot_product_attention`` of one query per sequence over a BF16 KV cache of
  B sequences x 8 KV heads (GQA, 32 query heads) x L tokens x 128 (Llama-3-8B's layer shape).

Each case is replayed from a CUDA graph for about ``--seconds``; per case it prints seconds per
call, bytes and FLOPs per second, mean board power and the power beyond idle (context resident).
Needs torch with CUDA and nvidia-ml-py.
"""

from __future__ import annotations

from gpu_power import open_gpu, probe_parser, replay_power, write_rows

TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ATTN = ((1, 8192), (4, 8192), (16, 8192), (16, 2048), (64, 2048))  # (sequences, context)


def main() -> None:
    import pynvml as nvml
    import torch
    import torch.nn.functional as F

    parser = probe_parser(__doc__, 3.0)
    args = parser.parse_args()
    handle, dev, idle_w = open_gpu(nvml, torch, max(args.seconds, 2.0))
    rows = []

    def record(kind, m, nbytes, flop, fn):
        s, watts = replay_power(fn, args.seconds, nvml, handle, torch)
        row = {"kind": kind, "m": m, "bytes": nbytes, "flop": flop, "s_per_call": s, "bytes_per_s": nbytes / s,
               "flop_per_s": flop / s, "board_w": watts, "idle_w": idle_w, "dynamic_w": watts - idle_w}
        rows.append(row)
        print(f"{kind:5s} {m:>10} {s * 1e6:9.1f} us {nbytes / s / 1e12:6.2f} TB/s {flop / s / 1e12:7.1f} TFLOP/s "
              f"{watts:6.1f} W (+{watts - idle_w:.1f})", flush=True)

    n, k = 28672, 8192
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    for m in TOKENS:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        record("gemm", m, 2.0 * n * k + 2.0 * m * (n + k), 2.0 * m * n * k, lambda x=x, w=w: torch.matmul(x, w.t()))
    del w
    heads, kv_heads, dim = 32, 8, 128
    for b, ctx in ATTN:
        q = torch.randn(b, heads, 1, dim, device=dev, dtype=torch.bfloat16)
        kc = torch.randn(b, kv_heads, ctx, dim, device=dev, dtype=torch.bfloat16)
        vc = torch.randn(b, kv_heads, ctx, dim, device=dev, dtype=torch.bfloat16)
        record("attn", f"{b}x{ctx}", 2.0 * 2 * b * kv_heads * ctx * dim, 4.0 * b * heads * ctx * dim,
               lambda q=q, kc=kc, vc=vc: F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True))
        del q, kc, vc
    if args.out:
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()
