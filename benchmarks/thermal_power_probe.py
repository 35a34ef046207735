"""Board power of an NVIDIA GPU against its temperature: the same work, and idle, as the chip
heats and cools (NVML energy counter and temperature, one window every ``--window`` seconds).

Run on a GPU machine: ``python benchmarks/thermal_power_probe.py [--out FILE.csv]``. The model
prices static power as one number per preset (a board's idle power); the project's decode
measurements read more power than the model, by more as the chip runs hotter
(validation/README.md, decode power). Leakage grows with temperature, so this probe separates
temperature from work:

* ``idle``: nothing running (a CUDA context resident) before any load;
* ``stream``: one 470 MB BF16 GEMV (Llama-3-70B's gate+up slice times one token) replayed from a
  CUDA graph for ``--stream-s``: fixed work per call, so any rise of power at the same
  bandwidth is the chip's temperature;
* ``cool``: idle after the stream, as the chip cools: idle power against temperature;
* ``gemm``: an 8192^3 BF16 GEMM at the power cap for ``--gemm-s``: the chip at its hottest, its
  throughput under the cap as it heats;
* ``cool``: idle again from there.

Each window records the board power from the energy counter, the GPU (and, where NVML gives it,
HBM) temperature, the SM clock and the calls completed, hence bytes and FLOPs per second. Needs
torch with CUDA and nvidia-ml-py.
"""

from __future__ import annotations

import time

from gpu_power import open_gpu, probe_parser, write_rows


def main() -> None:
    import pynvml as nvml
    import torch

    parser = probe_parser(__doc__, 0.0)
    parser.add_argument("--window", type=float, default=0.5, help="seconds per sample window")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--stream-s", type=float, default=90.0)
    parser.add_argument("--cool-s", type=float, default=60.0)
    parser.add_argument("--gemm-s", type=float, default=60.0)
    args = parser.parse_args()
    handle, dev, idle_w = open_gpu(nvml, torch, 2.0)
    rows: list[dict] = []
    t_start = time.perf_counter()

    def temps() -> tuple[float, float]:
        gpu_c = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        try:
            field = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_MEMORY_TEMP])[0]
            mem_c = float(field.value.uiVal) if field.nvmlReturn == 0 else float("nan")
        except (nvml.NVMLError, AttributeError):
            mem_c = float("nan")
        return gpu_c, mem_c

    def window(phase: str, t0: float, e0: int, calls: int, nbytes: float, flop: float) -> None:
        dt = time.perf_counter() - t0
        watts = (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e0) * 1e-3 / dt
        gpu_c, mem_c = temps()
        clock = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
        rows.append({"phase": phase, "t_s": time.perf_counter() - t_start, "window_s": dt, "board_w": watts,
                     "idle_w": idle_w, "gpu_temp_c": gpu_c, "mem_temp_c": mem_c, "sm_clock_mhz": clock,
                     "calls_per_s": calls / dt, "bytes_per_s": calls * nbytes / dt, "flop_per_s": calls * flop / dt})

    def idle(phase: str, seconds: float) -> None:
        torch.cuda.synchronize()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0, e0 = time.perf_counter(), nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            time.sleep(args.window)
            window(phase, t0, e0, 0, 0.0, 0.0)
        print(f"{phase:6s} {rows[-1]['board_w']:6.1f} W at {rows[-1]['gpu_temp_c']:.0f} C", flush=True)

    def busy(phase: str, seconds: float, fn, nbytes: float, flop: float, per_graph: int) -> None:
        graph = torch.cuda.CUDAGraph()
        fn()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            for _ in range(per_graph):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0, e0, calls = time.perf_counter(), nvml.nvmlDeviceGetTotalEnergyConsumption(handle), 0
            while time.perf_counter() - t0 < args.window:
                graph.replay()
                torch.cuda.synchronize()
                calls += per_graph
            window(phase, t0, e0, calls, nbytes, flop)
        last = rows[-1]
        print(f"{phase:6s} {last['board_w']:6.1f} W at {last['gpu_temp_c']:.0f} C, "
              f"{last['bytes_per_s'] / 1e12:.2f} TB/s, {last['flop_per_s'] / 1e12:.0f} TFLOP/s", flush=True)

    idle("idle", args.idle_s)
    n, k = 28672, 8192
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    gemv_bytes = 2.0 * n * k + 2.0 * (n + k)
    busy("stream", args.stream_s, lambda x=x, w=w: torch.matmul(x, w.t()), gemv_bytes, 2.0 * n * k, 100)
    del w, x
    idle("cool", args.cool_s)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn_like(a)
    busy("gemm", args.gemm_s, lambda a=a, b=b: torch.mm(a, b), 3 * 2.0 * 8192 * 8192, 2.0 * 8192**3, 10)
    del a, b
    idle("cool2", args.cool_s)
    if args.out:
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()
