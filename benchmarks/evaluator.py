"""Evaluator throughput: full-model design points per second on one core, and peak memory.

Runs the vectorised ``dse.Evaluator`` on N random designs (default 10^6; every knob and two
hardware fields vary per row) next to a per-point loop over the scalar reference
(``dse.model.reference.evaluate_one``) on a sample, in the same run, and prints the ratio.
Two figures side by side: single-device designs on ``--platform``, and parallel designs on
``--system`` (default hgx-h100-8) with tp, pp, ep, dp, micro_batches, comm_overlap_frac and
collective_algo varying per row as well.

A second table gives the cost of the compiled kernels (:mod:`dse.model.jit`): a fresh process's
first evaluation (import included) with an empty kernel cache (every kernel compiled) and with the
cache on disk, in subprocesses with ``NUMBA_CACHE_DIR`` set to a temporary folder.

A third table times each model stage alone on one cache-sized chunk (``dse.api.CHUNK``
designs, best of ``--repeats``), ns/design: silicon provisioning, the performance and power
stages (workload, mapping, perf, power), cost, quality, and the serving stage on the same
designs with a request-length workload (``--serving-workload``; the stage runs only when a
design has one).

    python benchmarks/evaluator.py [--points 1000000] [--model llama-2-7b] [--platform h100-sxm]
                                   [--system hgx-h100-8] [--parallel-model llama-3-70b]
                                   [--serving-workload sharegpt-vllm-paper]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: numpy here uses no threads anyway

import numpy as np  # noqa: E402

import dse  # noqa: E402
from dse.api import CHUNK  # noqa: E402
from dse.model import cost, quality, silicon  # noqa: E402
from dse.model.pipeline import performance  # noqa: E402
from dse.model.reference import evaluate_one  # noqa: E402
from dse.model.serving_stage import serving_stage  # noqa: E402
from dse.spec.registry import KNOB_DEFAULTS, WORKLOADS  # noqa: E402


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


def random_parallel_designs(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """:func:`random_designs` plus every parallelism knob varying per row (up to 64 devices, so
    some groups span nodes)."""
    rng = np.random.default_rng(seed)
    return {
        **random_designs(n, seed),
        "tp": rng.choice([1.0, 2.0, 4.0, 8.0], n),
        "pp": rng.choice([1.0, 2.0, 4.0], n),
        "ep": rng.choice([1.0, 2.0], n),
        "dp": rng.choice([1.0, 2.0], n),
        "micro_batches": rng.choice([1.0, 2.0, 4.0], n),
        "comm_overlap_frac": rng.uniform(0.0, 1.0, n),
        "collective_algo": rng.choice([0.0, 1.0, 2.0, 3.0], n),
    }


def figure(model: str, platform: str, designs: dict[str, np.ndarray], repeats: int, reference_points: int,
           ) -> dict[str, float]:
    """Best/median seconds per call (malloc tuned, as every ``dse.Evaluator`` runs), peak traced MiB,
    scalar s/point."""
    ev = dse.Evaluator(model, platform)
    n = len(next(iter(designs.values())))

    def timed() -> tuple[float, float]:
        ev(designs)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ev(designs)
            times.append(time.perf_counter() - t0)
        return min(times), float(np.median(times))

    best, median = timed()
    tracemalloc.start()
    ev(designs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    card, plat = dse.load_model(model).fields, dse.load_platform(platform).fields
    k_ref = min(reference_points, n)
    t0 = time.perf_counter()
    for i in range(k_ref):
        hw = dict(plat, mem_bw_bytes_per_s=designs["mem_bw_bytes_per_s"][i],
                  flop16_peak_flop_per_s=designs["flop16_peak_flop_per_s"][i])
        knobs = {k: float(designs[k][i]) if k in designs else v for k, v in KNOB_DEFAULTS.items()}
        evaluate_one(card, knobs, hw)
    return {"n": n, "best": best,
            "median": median, "peak_mib": peak / 2**20, "ref_s": (time.perf_counter() - t0) / k_ref, "k_ref": k_ref}


def stage_costs(model: str, platform: str, designs: dict[str, np.ndarray], repeats: int, workload: str,
                ) -> dict[str, float]:
    """ns/design of each stage alone on the first ``CHUNK`` designs (inputs as the evaluator builds them)."""
    ev = dse.Evaluator(model, platform)
    chunk = {c: v[:CHUNK] for c, v in designs.items()}
    n = len(next(iter(chunk.values())))
    m = ev._fields(ev._card_table, ev.model_names, None, "model")
    hw = ev._fields(ev._hw_table, ev.platform_names, None, "platform")
    hw.update((c, v) for c, v in chunk.items() if c in hw)
    k = {name: chunk.get(name, v) for name, v in KNOB_DEFAULTS.items()}
    k["workload"] = float(WORKLOADS.index(workload))
    data = ev._data
    sil = silicon.provision(hw, data["tech"])
    perf = performance(m, k, hw)
    system_usd = cost.cost_metrics(sil["hw"], data["tech"], k, perf["n_devices"], perf["decode_power_w"],
                                   perf["decode_tokens_per_s"], sil["area"], sil["params"])["system_cost_usd"]
    stages = {
        "silicon": lambda: silicon.provision(hw, data["tech"]),
        "performance + power": lambda: performance(m, k, hw),
        "cost": lambda: cost.cost_metrics(sil["hw"], data["tech"], k, perf["n_devices"], perf["decode_power_w"],
                                          perf["decode_tokens_per_s"], sil["area"], sil["params"]),
        "quality": lambda: quality.ppl_delta(data["quality"], m["quality_family"], k["quant_method"], k["w_bits"],
                                             k["a_bits"], k["kv_bits"], k["w_sparsity_frac"], k["nm_sparse"],
                                             k["w_group_size"], k["kv_method"], k["sparse_method"]),
        f"serving ({workload})": lambda: serving_stage(m, k, hw, data["tech"], data["workloads"], system_usd),
    }
    out = {}
    for name, fn in stages.items():
        fn()
        best = min(_timed_once(fn) for _ in range(repeats))
        out[name] = best / n * 1e9
    return out


_FIRST_CALL = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, {bench!r})
import dse
from evaluator import random_designs, random_parallel_designs
dse.Evaluator({model!r}, {platform!r})(random_designs(1000))
t1 = time.perf_counter()
dse.Evaluator({pmodel!r}, {system!r})(random_parallel_designs(1000))
t2 = time.perf_counter()
dse.Evaluator({model!r}, {platform!r}, serving=True)({{**random_designs(1000), "workload": 1.0}})
print(t1 - t0, t2 - t1, time.perf_counter() - t2)
"""


def first_calls(model: str, platform: str, parallel_model: str, system: str) -> dict[str, list[float]]:
    """Seconds of a fresh process's first single-device, parallel and serving evaluations (import
    included in the first), with an empty kernel cache and then with the cache it left on disk."""
    code = _FIRST_CALL.format(bench=os.path.dirname(os.path.abspath(__file__)), model=model, platform=platform,
                              pmodel=parallel_model, system=system)
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("empty cache (compiles)", "cache on disk"):
            run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out[label] = [float(x) for x in run.stdout.split()]
    return out


def _timed_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(title: str, f: dict[str, float], repeats: int) -> None:
    n = f["n"]
    vec_pts = n / f["best"]
    print(f"-- {title}")
    print(f"vectorised (malloc tuned, as every Evaluator runs): best {f['best']:.3f} s, median {f['median']:.3f} s -> "
          f"{vec_pts / 1e6:.2f} M points/s (median {n / f['median'] / 1e6:.2f} M/s)")
    print(f"peak traced memory during one call: {f['peak_mib']:.1f} MiB")
    print(f"scalar reference loop: {f['ref_s'] * 1e3:.3f} ms/point over {f['k_ref']} points -> "
          f"{1 / f['ref_s']:,.0f} points/s; speed-up vectorised / scalar {vec_pts * f['ref_s']:,.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=float, default=1e6)
    parser.add_argument("--reference-points", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="llama-2-7b")
    parser.add_argument("--platform", default="h100-sxm")
    parser.add_argument("--system", default="hgx-h100-8", help="system preset of the parallel figure")
    parser.add_argument("--parallel-model", default="llama-3-70b", help="model of the parallel figure")
    parser.add_argument("--serving-workload", default="sharegpt-vllm-paper", choices=WORKLOADS[1:],
                        help="request-length workload of the serving stage's row")
    args = parser.parse_args()
    n = int(args.points)
    single = figure(args.model, args.platform, random_designs(n), args.repeats, args.reference_points)
    parallel = figure(args.parallel_model, args.system, random_parallel_designs(n), args.repeats,
                      args.reference_points)
    print(f"points={n:,} cpu_count={os.cpu_count()}")
    report(f"single device: model={args.model} platform={args.platform}", single, args.repeats)
    report(f"parallel knobs varying: model={args.parallel_model} system={args.system} "
           "(tp, pp, ep, dp, micro_batches, comm_overlap_frac, collective_algo per row)", parallel, args.repeats)
    inputs_mib = sum(v.nbytes for v in random_parallel_designs(1).values()) * n / 2**20
    print(f"(inputs not counted in the peaks: up to {inputs_mib:.0f} MiB)")
    print(f"side by side: single {n / single['best'] / 1e6:.2f} M designs/s/core, "
          f"parallel {n / parallel['best'] / 1e6:.2f} M designs/s/core")
    print("-- compiled kernels: a fresh process's first evaluation of 1,000 designs, s "
          "(single includes importing dse)")
    print(f"{'kernel cache':<32}{'single':>10}{'parallel':>10}{'serving':>10}")
    for label, secs in first_calls(args.model, args.platform, args.parallel_model, args.system).items():
        print(f"{label:<32}" + "".join(f"{x:>10.2f}" for x in secs))
    costs = {"single": stage_costs(args.model, args.platform, random_designs(n), args.repeats, args.serving_workload),
             "parallel": stage_costs(args.parallel_model, args.system, random_parallel_designs(n), args.repeats,
                                     args.serving_workload)}
    print(f"-- each stage alone, ns/design on one chunk of {CHUNK:,} designs (best of {args.repeats})")
    print(f"{'stage':<32}{'single':>10}{'parallel':>10}")
    for name in costs["single"]:
        print(f"{name:<32}{costs['single'][name]:>10.0f}{costs['parallel'][name]:>10.0f}")


if __name__ == "__main__":
    main()
