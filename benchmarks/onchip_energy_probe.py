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
import time


def _measure(fn, seconds: float, nvml, handle, torch, per_graph: int) -> tuple[float, float, int]:
    """(elapsed s, joules, calls) of calling ``fn`` repeatedly for about ``seconds``.

    The calls are captured ``per_graph`` at a time in a CUDA graph, so that kernel-launch gaps
    do not dilute the power of short (L2-resident) kernels."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            graph.replay()
        calls += 10 * per_graph
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    e1 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    return t1 - t0, (e1 - e0) * 1e-3, calls


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
    time.sleep(2.0)
    t0 = time.perf_counter()
    e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    time.sleep(args.seconds)
    idle_w = (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e0) * 1e-3 / (time.perf_counter() - t0)
    cases = {
        "sum_dram": (lambda: big.sum(dtype=torch.float32), big.numel() * 2, 2),
        "sum_l2": (lambda: small.sum(dtype=torch.float32), small.numel() * 2, 200),
        "gemv_dram": (lambda: torch.mv(w_big, v), w_big.numel() * 2, 2),
        "gemv_l2": (lambda: torch.mv(w_small, v_small), w_small.numel() * 2, 200),
    }
    out = {"device": props.name, "l2_bytes": getattr(props, "L2_cache_size", None), "idle_w": idle_w, "cases": {}}
    print(f"{props.name}: idle {idle_w:.1f} W")
    for name, (fn, nbytes, per_graph) in cases.items():
        secs, joules, calls = _measure(fn, args.seconds, nvml, handle, torch, per_graph)
        moved = nbytes * calls
        row = {"seconds": secs, "joules": joules, "bytes": moved, "tb_per_s": moved / secs / 1e12,
               "power_w": joules / secs, "pj_per_bit": (joules - idle_w * secs) / (8 * moved) * 1e12}
        out["cases"][name] = row
        print(f"{name:10s} {row['tb_per_s']:6.2f} TB/s  {row['power_w']:6.1f} W  {row['pj_per_bit']:6.2f} pJ/bit")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
