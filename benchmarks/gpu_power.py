"""Shared by the GPU power probes (``onchip_energy_probe.py``, ``gemm_precision_probe.py``,
``decode_power_probe.py``, ``busy_power_probe.py``, ``thermal_power_probe.py``): the board's idle
power and the power of a callable replayed from a CUDA graph, both from NVML's energy counter.
Not a script."""

from __future__ import annotations

import argparse
import csv
import time


def probe_parser(doc: str, seconds: float) -> argparse.ArgumentParser:
    """A probe's command line: ``--seconds`` per case (default ``seconds``) and ``--out`` (a CSV file)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--out", default="")
    return parser


def open_gpu(nvml, torch, idle_seconds: float) -> tuple:
    """(NVML handle, CUDA device, idle watts) of GPU 0 with a CUDA context resident; prints the
    device, the torch version and the idle power."""
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    dev = torch.device("cuda")
    torch.zeros(1, device=dev)
    idle_w = idle_watts(nvml, handle, idle_seconds)
    print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, idle {idle_w:.1f} W", flush=True)
    return handle, dev, idle_w


def idle_watts(nvml, handle, seconds: float) -> float:
    """Mean board power over ``seconds`` with nothing running (a CUDA context resident), after a 2 s settle."""
    time.sleep(2.0)
    e0, t0 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()
    time.sleep(seconds)
    return (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e0) * 1e-3 / (time.perf_counter() - t0)


def replay_power(fn, seconds: float, nvml, handle, torch, per_graph: int | None = None) -> tuple[float, float]:
    """(seconds per call, mean board watts) of ``fn`` replayed for about ``seconds``.

    The calls are captured ``per_graph`` at a time in a CUDA graph (None: as many as take about
    20 ms, at most 200), so that launch gaps do not dilute the power of short kernels; three
    replays warm the clocks before the energy window."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    if per_graph is None:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        per_graph = max(1, min(200, int(0.02 / max(time.perf_counter() - t0, 1e-6))))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            fn()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    e0 = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < seconds:
        graph.replay()
        calls += per_graph
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return elapsed / calls, (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e0) * 1e-3 / elapsed


def write_rows(path: str, rows: list[dict]) -> None:
    """The probe's rows as a CSV file (the columns of the first row)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
