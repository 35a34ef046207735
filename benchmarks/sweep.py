"""Exhaustive-sweep throughput and memory on a large space (prints figures; not a test).

    python benchmarks/sweep.py                  # 1e7 designs, n_jobs 1 and 2
    python benchmarks/sweep.py --points 1e8

Measures, for each ``n_jobs``: designs/s, max RSS of the parent and of the largest worker
(getrusage), the front size, then the parent's tracemalloc peak in a second, traced run
(tracing slows in-process evaluation, so it is kept out of the timed run); then the
per-core rates of the parts (space decoding, the bare evaluator, the per-chunk front).
``--tune-malloc`` stops glibc from returning freed memory to the OS after every chunk
(mmap and trim thresholds), in the parent and in the workers it spawns.
"""

from __future__ import annotations

import argparse
import functools
import math
import resource
import time
import tracemalloc

import numpy as np
from joblib.externals.loky import get_reusable_executor

import dse
from dse.loading import load_space, space_evaluator
from dse.results.pareto import pareto_mask
from dse.runtime import tune_malloc
from dse.sweep.engine import sweep

OBJECTIVES = [("decode_tokens_per_s", True), ("decode_tokens_per_j", True)]
CONSTRAINTS = [("tpot_s", 0.1)]
# Software and hardware knobs of a typical study; the two hardware axes get as many values
# as it takes to reach the requested size (124,416 designs per (bandwidth, compute) pair).
FIXED_KNOBS = {
    "batch": {"choices": [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256]},
    "in_len": {"choices": [128, 256, 512, 1024, 2048, 4096, 8192, 16384]},
    "out_len": {"choices": [64, 128, 256, 512, 1024, 2048]},
    "w_bits": {"choices": [4, 8, 16]},
    "a_bits": {"choices": [8, 16]},
    "kv_bits": {"choices": [4, 8, 16]},
    "mem_capacity_gb": {"choices": [24, 48, 80, 141]},
    "compute_eff_frac": {"choices": [0.5, 0.7, 0.9]},
}
DERIVED = {  # Hopper-like precision ratios and a TDP that grows with compute (as spaces/reference.yaml)
    "flop8_peak_flop_per_s": "2 * flop16_peak_flop_per_s",
    "flop32_peak_flop_per_s": "0.5 * flop16_peak_flop_per_s",
    "tdp_w": "100 + 0.6e-12 * flop16_peak_flop_per_s",
    "static_power_w": "0.15 * tdp_w",
}


def build_space(points: float, platform: str, model: str):
    """A space of at least ``points`` designs: FIXED_KNOBS x bandwidth x 16-bit compute."""
    base = math.prod(len(k["choices"]) for k in FIXED_KNOBS.values())
    n_axis = math.ceil(math.sqrt(points / base))
    knobs = {
        **FIXED_KNOBS,
        "mem_bw_bytes_per_s": {"choices": np.geomspace(0.3e12, 8e12, n_axis).tolist()},
        "flop16_peak_flop_per_s": {"choices": np.geomspace(50e12, 2000e12, n_axis).tolist()},
    }
    return load_space({"name": "bench", "platform": platform, "model": model, "knobs": knobs, "derived": DERIVED})


def max_rss_bytes(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # Linux reports KiB


def run_sweep(space, n_jobs: int, chunk_size: int, trace: bool) -> None:
    def once():
        factory = functools.partial(space_evaluator, space)
        return sweep(space, factory, OBJECTIVES, CONSTRAINTS, chunk_size=chunk_size, n_jobs=n_jobs)

    result = once()
    get_reusable_executor().shutdown(wait=True)  # reap workers so RUSAGE_CHILDREN counts them
    print(f"n_jobs={n_jobs}: {result.n_evaluated:,} designs in {result.elapsed_s:.1f} s = "
          f"{result.points_per_s / 1e6:.2f} M designs/s; {result.n_feasible:,} feasible, "
          f"front {len(result.front)}, sample {len(result.sample)}")
    print(f"    max RSS: parent {max_rss_bytes(resource.RUSAGE_SELF) / 2**20:.0f} MiB, largest worker "
          f"{max_rss_bytes(resource.RUSAGE_CHILDREN) / 2**20:.0f} MiB (high-water marks of the process so far)")
    if trace:
        tracemalloc.start()
        traced = once()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        get_reusable_executor().shutdown(wait=True)
        print(f"    traced run: parent tracemalloc peak {peak / 2**20:.0f} MiB "
              f"({traced.points_per_s / 1e6:.2f} M designs/s under tracing)")


def rate(fn, n: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` items/s of ``fn()`` processing ``n`` items."""
    fn()
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def component_rates(space, chunk_size: int) -> None:
    """Per-core designs/s of each step of a chunk, on chunk-sized batches."""
    index = np.arange(space.size // 3, space.size // 3 + chunk_size, dtype=np.int64)
    columns = space.columns_at(index)
    evaluator = space_evaluator(space)
    metrics = evaluator(columns)
    feasible = (metrics["g_memory_bytes"] <= 0) & (metrics["tpot_s"] <= CONSTRAINTS[0][1])
    values = np.column_stack([metrics[m][feasible] for m, _ in OBJECTIVES])
    print(f"per core, chunks of {chunk_size:,} designs ({feasible.mean():.0%} feasible):")
    steps = {
        "space.columns_at": lambda: space.columns_at(index),
        "Evaluator (check=True)": lambda: evaluator(columns),
        "Evaluator (check=False)": lambda: evaluator(columns, check=False),
        "pareto_mask (feasible rows)": lambda: pareto_mask(values, [True, True]),
    }
    for name, step in steps.items():
        print(f"    {name:28s} {rate(step, chunk_size) / 1e6:6.2f} M designs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=1e7, help="minimum number of designs (default 1e7)")
    parser.add_argument("--platform", default="h100-sxm", help="platform preset name or YAML path")
    parser.add_argument("--model", default="llama-2-7b")
    parser.add_argument("--chunk-size", type=int, default=1 << 18)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="n_jobs values to run (default 1 2)")
    parser.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True,
                        help="also run each sweep under tracemalloc (default on)")
    parser.add_argument("--tune-malloc", action="store_true", help="raise glibc mmap/trim thresholds first")
    args = parser.parse_args()
    if args.tune_malloc:
        tune_malloc()
    space = build_space(args.points, args.platform, args.model)
    print(f"llm-dse {dse.__version__}: {space.size:,} designs ({len(space.knobs)} knobs), model {args.model}, "
          f"platform {args.platform}, chunk {args.chunk_size:,}, malloc {'tuned' if args.tune_malloc else 'default'}")
    for n_jobs in args.jobs:
        run_sweep(space, n_jobs, args.chunk_size, args.trace)
    component_rates(space, args.chunk_size)


if __name__ == "__main__":
    main()
