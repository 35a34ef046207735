"""Front-end costs, side by side in one run: one-design ``dse.evaluate`` latency, 10^6-design
``dse.evaluate`` against the raw ``dse.Evaluator`` (one platform, and per-row platform names),
and the wall time of ``dse --help`` / ``dse --version`` in a fresh interpreter.

    python benchmarks/api.py [--points 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import dse  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from evaluator import random_designs  # noqa: E402

PLATFORMS = ("h100-sxm", "a100-sxm-80gb", "h200-sxm", "mi300x")


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cli_wall_s(args: list[str], repeats: int) -> float:
    cmd = [sys.executable, "-m", "dse", *args]
    return best_of(lambda: subprocess.run(cmd, check=True, capture_output=True), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=1e6)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = int(args.points)
    one = {"batch": 8.0, "in_len": 512.0, "w_bits": 4.0}
    calls = 200
    one_s = best_of(lambda: [dse.evaluate(one, model="llama-2-7b", platform="h100-sxm") for _ in range(calls)],
                    args.repeats) / calls
    designs = random_designs(n)
    ev = dse.Evaluator("llama-2-7b", "h100-sxm")
    raw_s = best_of(lambda: ev(designs), args.repeats)
    api_s = best_of(lambda: dse.evaluate(designs, model="llama-2-7b", platform="h100-sxm"), args.repeats)
    codes = np.random.default_rng(1).integers(0, len(PLATFORMS), n)
    multi = dse.Evaluator("llama-2-7b", list(PLATFORMS))
    raw_multi_s = best_of(lambda: multi({**designs, "platform": codes}), args.repeats)
    names = np.asarray(PLATFORMS)[codes]
    api_multi_s = best_of(lambda: dse.evaluate({**designs, "platform": names}, model="llama-2-7b"), args.repeats)
    help_s = cli_wall_s(["--help"], args.repeats)
    version_s = cli_wall_s(["--version"], args.repeats)
    print(f"points={n:,} repeats={args.repeats} (best of), cpu_count={os.cpu_count()}")
    print(f"dse.evaluate, one design: {one_s * 1e3:.3f} ms")
    print(f"one platform:      raw Evaluator {n / raw_s / 1e6:.2f} M/s, dse.evaluate {n / api_s / 1e6:.2f} M/s "
          f"-> {raw_s / api_s:.0%} of raw")
    print(f"per-row platforms: raw Evaluator (codes) {n / raw_multi_s / 1e6:.2f} M/s, dse.evaluate (names) "
          f"{n / api_multi_s / 1e6:.2f} M/s -> {raw_multi_s / api_multi_s:.0%} of raw")
    print(f"dse --help: {help_s:.3f} s wall, dse --version: {version_s:.3f} s wall (fresh interpreter, best of "
          f"{args.repeats})")


if __name__ == "__main__":
    main()
