"""Sustained GEMM rate and energy per FLOP at 16 and 8 bits on an NVIDIA GPU (board power from NVML).

Run on a GPU machine: ``python benchmarks/gemm_precision_probe.py [--seconds 4] [--out FILE.csv]``.
Checks two numbers the model carries from 16-bit to 8-bit arithmetic: the achievable share
of the peak (``compute_eff_frac``, one value for every precision) and the energy per FLOP
(``dse.model.power.j_per_flop``; ``flop_energy_fixed_frac`` is fitted to this probe's output,
``validation/gemm_precision_h200.csv``: a rule linear in the operand width read FP8 13% low). Cases: the
weight GEMMs of Llama-3-8B (qkv, o, gate+up, down) and Llama-3-70B (gate+up, down) at
M = 512, 2048 and 8192 tokens, and an 8192^3 square, each as BF16 (``torch.matmul``) and FP8
E4M3 (``torch._scaled_mm``, per-tensor scales, BF16 output: the TensorRT-LLM/vLLM FP8 path) and
INT8 (``torch._int_mm``, int32 output: the W8A8 SmoothQuant GEMM without its dequantisation);
``--dtypes fp8-triton int8-triton`` runs both 8-bit formats through one Triton kernel
(``triton_gemm.py``) to separate the tensor-core path from the library.
Each case runs for about ``--seconds`` from a CUDA graph of back-to-back products (no launch
gaps); the idle board power (a context resident) is read first. Per case it prints seconds per
product, TFLOP/s, mean board power and ``pj_per_flop = (P - P_idle) / (FLOP/s)``: everything the
board spends beyond idle per FLOP (operand delivery from HBM/L2/SMEM included), the same
definition as the model's ``flop16_energy_pj_per_flop`` source. Needs torch with CUDA and
nvidia-ml-py.
"""

from __future__ import annotations

from gpu_power import open_gpu, probe_parser, replay_power, write_rows

SHAPES = {  # name: (N, K) of the weight, out = x (M, K) @ W^T (K, N)
    "8b-qkv": (6144, 4096), "8b-o": (4096, 4096), "8b-gate_up": (28672, 4096), "8b-down": (4096, 14336),
    "70b-gate_up": (57344, 8192), "70b-down": (8192, 28672),
}
TOKENS = (512, 2048, 8192)


def main() -> None:
    import pynvml as nvml
    import torch

    parser = probe_parser(__doc__, 4.0)
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp8", "int8"],
                        choices=["bf16", "fp8", "int8", "fp8-triton", "int8-triton"])
    args = parser.parse_args()
    handle, dev, idle_w = open_gpu(nvml, torch, max(args.seconds, 2.0))
    one = torch.ones((), device=dev, dtype=torch.float32)
    cases = [(name, m, n, k) for name, (n, k) in SHAPES.items() for m in TOKENS] + [("square", 8192, 8192, 8192)]
    rows = []
    for name, m, n, k in cases:
        x16 = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w16 = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        x8, w8 = x16.to(torch.float8_e4m3fn), w16.to(torch.float8_e4m3fn)
        xi = torch.randint(-128, 128, (m, k), device=dev, dtype=torch.int8)
        wi = torch.randint(-128, 128, (n, k), device=dev, dtype=torch.int8)
        fns = {"bf16": lambda x=x16, w=w16: torch.matmul(x, w.t()),
               "fp8": lambda x=x8, w=w8: torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16),
               "int8": lambda x=xi, w=wi: torch._int_mm(x, w.t())}
        if any(d.endswith("-triton") for d in args.dtypes):  # one Triton kernel for both 8-bit formats
            import triton_gemm

            out_i = torch.empty(m, n, device=dev, dtype=torch.int32)
            out_b = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
            fns["int8-triton"] = lambda x=xi, w=wi, o=out_i: triton_gemm.gemm(x, w, o)
            fns["fp8-triton"] = lambda x=x8, w=w8, o=out_b: triton_gemm.gemm(x, w, o)
        for dtype, fn in fns.items():
            if dtype not in args.dtypes:
                continue
            s, watts = replay_power(fn, args.seconds, nvml, handle, torch)
            flop_s = 2.0 * m * n * k / s
            row = {"case": name, "dtype": dtype, "m": m, "n": n, "k": k, "s_per_gemm": s, "tflop_per_s": flop_s / 1e12,
                   "board_w": watts, "idle_w": idle_w, "pj_per_flop": (watts - idle_w) / flop_s * 1e12}
            rows.append(row)
            print(f"{name:12s} M={m:5d} {dtype:11s} {s * 1e6:9.1f} us {flop_s / 1e12:7.1f} TFLOP/s "
                  f"{watts:6.1f} W {row['pj_per_flop']:.3f} pJ/FLOP", flush=True)
        del x16, w16, x8, w8, xi, wi
    if args.out:
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()
