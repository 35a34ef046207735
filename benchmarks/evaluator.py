"""Evaluator throughput: full-model design points per second on one core, and peak memory.

Runs the vectorised ``dse.Evaluator`` on N random designs (default 10^6; every knob and two
hardware fields vary per row) next to a per-point loop over the scalar reference
(``dse.model.reference.evaluate_one``) on a sample, in the same run, and prints the ratio.

    python benchmarks/evaluator.py [--points 1000000] [--model llama-2-7b] [--platform h100-sxm]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: numpy here uses no threads anyway

import numpy as np  # noqa: E402

import dse  # noqa: E402
from dse.model.reference import evaluate_one  # noqa: E402
from dse.spec.registry import KNOB_DEFAULTS  # noqa: E402
from dse.sweep.runtime import tune_malloc  # noqa: E402


def random_designs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "batch": rng.integers(1, 129, n).astype(float),
        "in_len": rng.integers(64, 4097, n).astype(float),
        "out_len": rng.integers(16, 1025, n).astype(float),
        "w_bits": rng.choice([4.0, 8.0, 16.0], n),
        "a_bits": rng.choice([8.0, 16.0], n),
        "kv_bits": rng.choice([4.0, 8.0, 16.0], n),
        "nm_sparse": rng.choice([0.0, 1.0], n),
        "mem_bw_bytes_per_s": rng.uniform(0.5e12, 5e12, n),
        "flop16_peak_flop_per_s": rng.uniform(100e12, 2000e12, n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=1e6)
    parser.add_argument("--reference-points", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="llama-2-7b")
    parser.add_argument("--platform", default="h100-sxm")
    args = parser.parse_args()
    n = int(args.points)
    ev = dse.Evaluator(args.model, args.platform)
    designs = random_designs(n)

    def timed() -> tuple[float, float]:
        ev(designs)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ev(designs)
            times.append(time.perf_counter() - t0)
        return min(times), float(np.median(times))

    default_best, default_median = timed()
    tune_malloc()  # what `dse` commands and sweeps do at start-up (dse.sweep.runtime)
    best, median = timed()
    tracemalloc.start()
    ev(designs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    card, plat = dse.load_model(args.model).fields, dse.load_platform(args.platform).fields
    k_ref = min(args.reference_points, n)
    t0 = time.perf_counter()
    for i in range(k_ref):
        hw = dict(plat, mem_bw_bytes_per_s=designs["mem_bw_bytes_per_s"][i],
                  flop16_peak_flop_per_s=designs["flop16_peak_flop_per_s"][i])
        knobs = {k: float(designs[k][i]) if k in designs else v for k, v in KNOB_DEFAULTS.items()}
        evaluate_one(card, knobs, hw)
    ref_s = (time.perf_counter() - t0) / k_ref
    vec_pts = n / best
    print(f"model={args.model} platform={args.platform} points={n:,} cpu_count={os.cpu_count()}")
    print(f"vectorised, glibc malloc defaults: best {default_best:.3f} s, median {default_median:.3f} s over "
          f"{args.repeats} runs -> {n / default_best / 1e6:.2f} M points/s (median {n / default_median / 1e6:.2f} M/s)")
    print(f"vectorised, malloc tuned (as the CLI runs): best {best:.3f} s, median {median:.3f} s -> "
          f"{vec_pts / 1e6:.2f} M points/s (median {n / median / 1e6:.2f} M/s)")
    inputs_mib = sum(v.nbytes for v in designs.values()) / 2**20
    print(f"peak traced memory during one call: {peak / 2**20:.1f} MiB (inputs {inputs_mib:.1f} MiB not counted)")
    print(f"scalar reference loop: {ref_s * 1e3:.3f} ms/point over {k_ref} points -> {1 / ref_s:,.0f} points/s")
    print(f"speed-up vectorised / scalar reference: {vec_pts * ref_s:,.0f}x")


if __name__ == "__main__":
    main()
