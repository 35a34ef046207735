"""Board power of an NVIDIA GPU against DRAM bandwidth when only part of the chip works: is there
power that a busy GPU draws whatever bytes it moves (NVML energy counter)?

Run on a GPU machine: ``python benchmarks/busy_power_probe.py [--seconds 3] [--out FILE.csv]``.
The model prices a decode step as static (context-idle) power + bytes x energy per DRAM byte +
FLOPs x energy per FLOP, with no power for merely being busy; the project's decode measurements
read 5-29% more power than that (validation/README.md). This probe reads power at bandwidths from
a trickle to the peak with one streaming kernel:

* ``stream``: a Triton kernel sums a 1 GiB FP32 buffer with G programs (G = 1 ... 2,112 thread
  blocks, 132 SMs on an H200): the bandwidth grows with G until the memory saturates;
* ``sleep``: ``torch.cuda._sleep`` spins one thread block: the chip clocked up, no bytes moved.

A line through the stream points below saturation, ``power beyond idle = busy_w + e x bytes/s``,
separates the two: ``busy_w`` the power of a working chip that moves no byte, ``e`` the energy
per byte. Each case is replayed from a CUDA graph for about ``--seconds``. Needs torch with CUDA,
triton and nvidia-ml-py.
"""

from __future__ import annotations

from gpu_power import open_gpu, probe_parser, replay_power, write_rows

PROGRAMS = (1, 2, 4, 8, 16, 33, 66, 132, 264, 528, 1056, 2112)
BUFFER_BYTES = 1 << 30


def main() -> None:
    import numpy as np
    import pynvml as nvml
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def stream_sum(x, out, n, BLOCK: tl.constexpr):
        pid, programs = tl.program_id(0), tl.num_programs(0)
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(pid * BLOCK, n, programs * BLOCK):
            offs = start + tl.arange(0, BLOCK)
            acc += tl.load(x + offs, mask=offs < n, other=0.0)
        tl.store(out + pid * BLOCK + tl.arange(0, BLOCK), acc)

    parser = probe_parser(__doc__, 3.0)
    args = parser.parse_args()
    handle, dev, idle_w = open_gpu(nvml, torch, max(args.seconds, 2.0))
    rows = []

    def record(kind, programs, nbytes, fn):
        s, watts = replay_power(fn, args.seconds, nvml, handle, torch)
        clock = nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
        rows.append({"kind": kind, "programs": programs, "bytes": nbytes, "s_per_call": s, "bytes_per_s": nbytes / s,
                     "board_w": watts, "idle_w": idle_w, "dynamic_w": watts - idle_w, "sm_clock_mhz_after": clock})
        print(f"{kind:6s} {programs:5d} {s * 1e6:10.1f} us {nbytes / s / 1e12:6.3f} TB/s {watts:6.1f} W "
              f"(+{watts - idle_w:5.1f}) SM clock after {clock} MHz", flush=True)

    record("sleep", 1, 0.0, lambda: torch.cuda._sleep(1_000_000))
    n = BUFFER_BYTES // 4
    x = torch.rand(n, device=dev, dtype=torch.float32)
    block = 1024
    for programs in PROGRAMS:
        out = torch.empty(programs * block, device=dev, dtype=torch.float32)
        record("stream", programs, float(BUFFER_BYTES),
               lambda out=out, programs=programs: stream_sum[(programs,)](x, out, n, BLOCK=block))
    stream = [r for r in rows if r["kind"] == "stream"]
    peak = max(r["bytes_per_s"] for r in stream)
    linear = [r for r in stream if r["bytes_per_s"] < 0.6 * peak]
    if len(linear) >= 3:
        bw = np.array([r["bytes_per_s"] for r in linear])
        dyn = np.array([r["dynamic_w"] for r in linear])
        slope, busy_w = np.polyfit(bw, dyn, 1)
        print(f"fit over {len(linear)} points below 60% of the peak {peak / 1e12:.2f} TB/s: "
              f"busy {busy_w:.1f} W + {slope * 1e12 / 8:.2f} pJ/bit", flush=True)
    if args.out:
        write_rows(args.out, rows)


if __name__ == "__main__":
    main()
