"""Energy per bit read from DRAM vs from L2 on an NVIDIA GPU (board power from NVML's energy counter).

Run on a GPU machine: ``python benchmarks/onchip_energy_probe.py [--seconds 8]``. Prints one
line per case and a JSON summary. Cases:

* ``idle``: a CUDA context resident, nothing running (the model's ``static_power_w`` floor);
* ``sum_dram`` / ``sum_l2``: ``torch.sum`` over a bf16 tensor far larger than L2 / one that
  fits in L2 (read-only streaming: one add per element);
* ``gemv_dram`` / ``gemv_l2``: ``torch.mv`` of a bf16 matrix (the LLM decode pattern) far
  larger than L2 / fitting in L2.

For each: seconds, bytes read, achieved bandwidth, mean board power and
``pj_per_bit = (E - P_idle * t) / (8 * bytes)``: the dynamic energy per bit read, which is
everything the board spends beyond idle (DRAM device, PHY/controller, crossbar, L2, L1,
registers, instruction issue, the arithmetic). The difference between a DRAM case and its
L2 case is the energy of the L2-miss path (HBM device + PHY/controller + L2-to-memory transport);
the L2 case itself bounds the on-chip L2-to-SM path from above (it includes the adds).
"""

from __future__ import annotations

import argparse
import json

from gpu_power import idle_watts, replay_power


def main() -> None:
    import pynvml as nvml
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    props = torch.cuda.get_device_properties(0)
    dev = torch.device("cuda")
    big = torch.randn(2 * 1024**3, device=dev, dtype=torch.bfloat16)  # 4 GiB
    small = torch.randn(12 * 1024**2, device=dev, dtype=torch.bfloat16)  # 24 MiB, fits a 50-60 MB L2
    w_big = torch.randn(28672 * 4, 8192, device=dev, dtype=torch.bfloat16)  # 1.9 GB
    w_small = torch.randn(2048, 6144, device=dev, dtype=torch.bfloat16)  # 25 MB
    v = torch.randn(8192, device=dev, dtype=torch.bfloat16)
    v_small = torch.randn(6144, device=dev, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    idle_w = idle_watts(nvml, handle, args.seconds)
    cases = {
        "sum_dram": (lambda: big.sum(dtype=torch.float32), big.numel() * 2, 2),
        "sum_l2": (lambda: small.sum(dtype=torch.float32), small.numel() * 2, 200),
        "gemv_dram": (lambda: torch.mv(w_big, v), w_big.numel() * 2, 2),
        "gemv_l2": (lambda: torch.mv(w_small, v_small), w_small.numel() * 2, 200),
    }
    out = {"device": props.name, "l2_bytes": getattr(props, "L2_cache_size", None), "idle_w": idle_w, "cases": {}}
    print(f"{props.name}: idle {idle_w:.1f} W")
    for name, (fn, nbytes, per_graph) in cases.items():
        s_per_call, watts = replay_power(fn, args.seconds, nvml, handle, torch, per_graph)
        bytes_per_s = nbytes / s_per_call
        row = {"s_per_call": s_per_call, "bytes": nbytes, "tb_per_s": bytes_per_s / 1e12,
               "power_w": watts, "pj_per_bit": (watts - idle_w) / (8 * bytes_per_s) * 1e12}
        out["cases"][name] = row
        print(f"{name:10s} {row['tb_per_s']:6.2f} TB/s  {row['power_w']:6.1f} W  {row['pj_per_bit']:6.2f} pJ/bit")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
