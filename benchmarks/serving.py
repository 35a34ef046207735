"""Serving stage figures: cost per design, and the published serving points (TP1 rows).

    python benchmarks/serving.py [--designs 100000]

Prints ns/design of the coefficient builder and of ``serving_metrics`` (goodput search on and
with an offered rate), then model vs published output tokens/s for the single-device rows of
``validation/serving_published.csv`` (rows needing tensor parallelism are listed, not run).
Figures, not tests.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from dse.model import serving
from dse.model.serving_coeffs import serving_coeffs
from dse.model.serving_lengths import length_moments
from dse.spec.presets import load_model, load_platform
from dse.spec.registry import KNOB_DEFAULTS
from dse.spec.workloads import load_workloads

ROOT = Path(__file__).resolve().parents[1]


def cost(n: int) -> None:
    rng = np.random.default_rng(0)
    m = dict(load_model("llama-3-8b").fields)
    hw = dict(load_platform("h100-sxm").fields)
    hw["mem_bw_bytes_per_s"] = hw["mem_bw_bytes_per_s"] * rng.uniform(0.5, 2.0, n)
    k = {key: np.full(n, v) for key, v in KNOB_DEFAULTS.items()}
    k["w_bits"], k["kv_bits"] = rng.choice([4.0, 8.0, 16.0], n), rng.choice([8.0, 16.0], n)
    w = length_moments(load_workloads()["splitwise-conv"])
    s = {"token_budget": rng.choice([512.0, 2048.0, 8192.0], n), "ttft_slo_s": 0.5, "tpot_slo_s": 0.05}

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) / n * 1e9

    c = serving_coeffs(m, k, hw)
    print(f"{n} designs, one core, best of 3")
    print(f"  serving_coeffs                    {best(lambda: serving_coeffs(m, k, hw)):8.0f} ns/design")
    print(f"  serving_metrics (goodput rate)    {best(lambda: serving.serving_metrics(c, w, s)):8.0f} ns/design")
    s_rate = {**s, "arrival_rate_req_per_s": rng.uniform(1.0, 20.0, n)}
    print(f"  serving_metrics (offered rate)    {best(lambda: serving.serving_metrics(c, w, s_rate)):8.0f} ns/design")


def published() -> None:
    rows = list(csv.DictReader(open(ROOT / "validation" / "serving_published.csv")))
    print("\npublished serving points (single device; capacity = output tokens/s at an infinite rate)")
    errs = []
    for r in rows:
        if r["tp"] != "1" or not r["output_tokens_per_s"] or not r["in_len"]:
            print(f"  skipped (tp {r['tp']}, {r['stack']}): {r['model_published']} {r['workload']}")
            continue
        k = {**KNOB_DEFAULTS, **{key: float(r[key]) for key in ("w_bits", "a_bits", "kv_bits")}}
        c = serving_coeffs(dict(load_model(r["model"]).fields), k, dict(load_platform(r["platform"]).fields),
                           token_budget=8192.0, max_seqs=2048.0)
        c["kv_capacity_bytes"] = c["kv_capacity_bytes"] * float(r["kv_mem_frac"])
        p, o = float(r["in_len"]), float(r["out_len"])
        w = length_moments({"in": {"kind": "fixed", "value": p}, "out": {"kind": "fixed", "value": o}})
        out = serving.serving_metrics(c, w, {"token_budget": 8192.0, "max_seqs": 2048.0, "kv_watermark_frac": 0.0})
        model = float(out["serving_capacity_req_per_s"]) * o
        pub = float(r["output_tokens_per_s"])
        errs.append(model / pub - 1.0)
        print(f"  {r['model_published']:26s} {r['platform']:9s} {r['workload']:16s} published {pub:8.0f}  model "
              f"{model:8.0f}  {model / pub - 1.0:+.2f}  (kv_max_seqs {float(out['kv_max_seqs']):.0f})")
    e = np.array(errs)
    print(f"  {len(e)} points: median error {np.median(e):+.3f}, |error| median {np.median(abs(e)):.3f}, "
          f"max {abs(e).max():.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", type=int, default=100_000)
    args = ap.parse_args()
    cost(args.designs)
    published()
