"""Serving stage figures: its cost per design (this tree side by side with a git revision of
the serving modules), the goodput search against a dense load curve, the stage's cost in
``dse.Evaluator``, and the published serving points (``dse validate --set serving``).

    python benchmarks/serving.py [--designs 100000] [--repeats 5] [--compare 60f003f] [--tune-malloc]
                                 [--skip-accuracy] [--skip-published]

``--compare REV`` loads every ``dse/model/serving*.py`` as it was at REV (default: the commit
before the cost work of 2026-11-29) into a package of its own and times both on the same inputs,
interleaved, best of ``--repeats`` (the VM's two cores are shared: medians move, best-of is the
figure); ``dse.Evaluator`` is timed with the stage of each (``dse.model.pipeline.serving_stage``
swapped in turn). ``--tune-malloc`` applies ``dse.runtime.tune_malloc`` first, as ``dse
sweep``/``dse run`` (and ``dse.Evaluator``, where it tunes on construction) do. Figures, not
tests; ``tests/model/test_serving.py`` holds the assertions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import dse  # noqa: E402
from dse.model import serving, serving_lengths  # noqa: E402
from dse.model.serving_coeffs import serving_coeffs  # noqa: E402
from dse.model.serving_lengths import length_moments, stack_moments  # noqa: E402
from dse.spec.presets import load_model, load_platform  # noqa: E402
from dse.spec.registry import HARDWARE_FIELD_NAMES, KNOB_DEFAULTS, WORKLOADS  # noqa: E402
from dse.spec.workloads import load_workloads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "60f003f"  # before the cost work of 2026-11-29 (e60fd9e: before the coarse grid + regula falsi)
SERVING_MODULES = ("serving", "serving_fluid", "serving_prepare", "serving_prefill", "serving_stoploss",
                   "serving_queue", "serving_iteration", "serving_lengths", "serving_mapping", "serving_coeffs",
                   "serving_stage")
DENSE = (tuple(np.r_[np.linspace(0.002, 0.998, 250), 1.0]), tuple(np.linspace(0.01, 0.99, 60)))


def module_at(rev: str):
    """``dse.model.serving`` as it was at git revision ``rev``, with the serving modules of that
    revision (:data:`SERVING_MODULES`, imports rewritten into a package of their own; the rest of
    ``dse`` is this tree's); ``.stage`` is its ``serving_stage`` module, ``.rev`` the revision.
    None if git cannot give it."""
    pkg = "serving_at_" + re.sub(r"\W", "_", rev)
    root = Path(tempfile.mkdtemp()) / pkg
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name in SERVING_MODULES:
        try:
            text = subprocess.run(["git", "show", f"{rev}:dse/model/{name}.py"], cwd=ROOT, capture_output=True,
                                  text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            if name == "serving":
                return None
            continue  # not there yet at that revision
        for other in SERVING_MODULES:
            text = re.sub(rf"\bdse\.model\.{other}\b", f"{pkg}.{other}", text)
        (root / f"{name}.py").write_text(text)
    sys.path.insert(0, str(root.parent))
    mod = importlib.import_module(f"{pkg}.serving")
    mod.rev = rev
    mod.stage = importlib.import_module(f"{pkg}.serving_stage") if (root / "serving_stage.py").exists() else None
    mod.lengths = importlib.import_module(f"{pkg}.serving_lengths")
    return mod


def inputs(n: int, seed: int = 0) -> dict:
    """One model on one platform with bandwidth, bits and token budget varying per design."""
    rng = np.random.default_rng(seed)
    m = dict(load_model("llama-3-8b").fields)
    hw = dict(load_platform("h100-sxm").fields)
    hw["mem_bw_bytes_per_s"] = hw["mem_bw_bytes_per_s"] * rng.uniform(0.5, 2.0, n)
    k = {key: np.full(n, v) for key, v in KNOB_DEFAULTS.items()}
    k["w_bits"], k["kv_bits"] = rng.choice([4.0, 8.0, 16.0], n), rng.choice([8.0, 16.0], n)
    wls = load_workloads()
    moms, codes = [length_moments(wl) for wl in wls.values()], rng.integers(0, len(wls), n)
    s = {"token_budget": rng.choice([512.0, 2048.0, 8192.0], n), "ttft_slo_s": 0.5, "tpot_slo_s": 0.05}
    return {"m": m, "k": k, "hw": hw, "w": length_moments(wls["splitwise-conv"]), "w_mixed": stack_moments(moms, codes),
            "moms": moms, "codes": codes, "s": s, "rate": rng.uniform(1.0, 20.0, n)}


def stacked(mod, moms: list[dict], codes) -> dict:
    """Per-design moments in the form ``mod`` (this tree's serving module or :func:`module_at`'s) reads."""
    return getattr(mod, "lengths", serving_lengths).stack_moments(moms, codes)


def best_ns(fn, n: int, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) / n * 1e9)
    return out


CHUNK = 16_384  # as dse.Evaluator


def chunked(c: dict, w: dict, s: dict, n: int) -> list[tuple]:
    """The inputs cut into :data:`CHUNK`-design pieces (per-design arrays: last axis of length n)."""
    def cut(d: dict, sl: slice) -> dict:
        return {key: (np.ascontiguousarray(v[..., sl]) if np.ndim(v) and np.shape(v)[-1] == n else v)
                for key, v in d.items()}
    return [(cut(c, slice(i, i + CHUNK)), cut(w, slice(i, i + CHUNK)), cut(s, slice(i, i + CHUNK)))
            for i in range(0, n, CHUNK)]


def cost(n: int, repeats: int, before) -> None:
    x = inputs(n)
    c = serving_coeffs(x["m"], x["k"], x["hw"])
    mods = {"now": serving, **({f"at {before.rev}": before} if before else {})}
    cases = {"goodput rate, one workload": {name: (x["w"], x["s"]) for name in mods},
             "offered rate, one workload": {name: (x["w"], {**x["s"], "arrival_rate_req_per_s": x["rate"]})
                                            for name in mods},
             "goodput rate, workload per design": {name: (stacked(mod, x["moms"], x["codes"]), x["s"])
                                                   for name, mod in mods.items()}}
    print(f"serving_metrics, {n} designs in chunks of {CHUNK}, one core, best of {repeats} (ns/design)")
    t_coeffs = min(best_ns(lambda: serving_coeffs(x["m"], x["k"], x["hw"]), n, repeats))
    print(f"  serving_coeffs (once per design)       {t_coeffs:7.0f}")
    for label, per_mod in cases.items():
        pieces = {name: chunked(c, *per_mod[name], n) for name in mods}
        times = {name: [] for name in mods}
        for _ in range(repeats):  # interleaved: both see the same load on the shared cores
            for name, mod in mods.items():
                times[name] += best_ns(lambda mod=mod, p=pieces[name]: [mod.serving_metrics(*x) for x in p], n, 1)
        line = "  ".join(f"{name} {min(t):7.0f}" for name, t in times.items())
        ratio = f"  ({min(times[list(mods)[1]]) / min(times['now']):.2f}x)" if len(mods) > 1 else ""
        print(f"  {label:38s} {line}{ratio}")


def accuracy(n: int, before) -> None:
    """Goodput and the operating point against the same model on a dense load grid."""
    rng = np.random.default_rng(5)
    plats = ["h100-sxm", "a100-sxm-80gb", "h200-sxm", "mi300x"]
    models = ["llama-3.2-1b", "llama-2-7b", "llama-3-8b", "mistral-7b", "llama-2-13b", "mixtral-8x7b"]
    mc, pc = rng.integers(0, len(models), n), rng.integers(0, len(plats), n)
    cards, presets = [load_model(x).fields for x in models], [load_platform(x).fields for x in plats]
    m = {f: np.array([cards[i].get(f, 0.0) for i in mc]) for f in cards[0]}
    hw = {f: np.array([presets[i][f] for i in pc], dtype=float) for f in HARDWARE_FIELD_NAMES}
    k = {key: np.full(n, v) for key, v in KNOB_DEFAULTS.items()}
    k["w_bits"] = np.where(mc == 5, rng.choice([4.0, 8.0], n), rng.choice([4.0, 8.0, 16.0], n))
    k["kv_bits"] = rng.choice([8.0, 16.0], n)
    s = {"token_budget": rng.choice([256.0, 512.0, 2048.0, 8192.0], n), "max_seqs": rng.choice([16.0, 64.0, 256.0], n),
         "ttft_slo_s": rng.choice([0.2, 0.5, 1.0, 3.0, 10.0], n), "tpot_slo_s": rng.choice([0.02, 0.05, 0.1, 0.2], n)}
    c = serving_coeffs(m, k, hw, s["token_budget"], s["max_seqs"])
    wls = [length_moments(wl) for wl in load_workloads().values() if wl.get("verified", True)]
    codes = rng.integers(0, len(wls), n)
    cap = serving.serving_metrics(c, stack_moments(wls, codes), s)["serving_capacity_req_per_s"]
    rates = {**s, "arrival_rate_req_per_s": cap * rng.uniform(0.05, 0.95, n)}
    print(f"\nagainst a dense load curve (311 points) of the same model, {n} random designs: |error| median / p90")
    mods = {"now": serving, **({f"at {before.rev}": before} if before else {})}
    for name, mod in mods.items():
        w = stacked(mod, wls, codes)
        got, got_rate = mod.serving_metrics(c, w, s), mod.serving_metrics(c, w, rates)
        grid = mod._GRID_BATCH_FRAC, mod._GRID_QUEUE_FRAC
        mod._GRID_BATCH_FRAC, mod._GRID_QUEUE_FRAC = DENSE
        try:
            ref, ref_rate = mod.serving_metrics(c, w, s), mod.serving_metrics(c, w, rates)
        finally:
            mod._GRID_BATCH_FRAC, mod._GRID_QUEUE_FRAC = grid
        met = ref["goodput_req_per_s"] > 0
        parts = [f"goodput {_stat(got['goodput_req_per_s'][met], ref['goodput_req_per_s'][met])}",
                 f"met/missed flips {np.mean(met != (got['goodput_req_per_s'] > 0)):.3f}"]
        parts += [f"{key} {_stat(got_rate[key], ref_rate[key])}" for key in ("serving_batch", "ttft_p90_s",
                                                                           "tpot_p90_s")]
        print(f"  {name:12s} " + "; ".join(parts) + " (the last three at offered rates)")


def _stat(got, ref) -> str:
    e = np.abs(got / ref - 1.0)
    e = e[np.isfinite(e)]
    return f"{np.median(e):.4f} / {np.quantile(e, 0.9):.3f}"


def wired(n: int, repeats: int, before) -> None:
    """ns/design of dse.Evaluator without and with the serving stage (this tree's, and REV's
    swapped into ``dse.model.pipeline``), interleaved, best of ``repeats``."""
    from dse.model import pipeline

    stages = {"now": pipeline.serving_stage,
              **({f"at {before.rev}": before.stage.serving_stage} if before is not None and before.stage else {})}
    for name in list(stages)[1:]:  # REV's stage calls the rest of dse as it is now, which may have moved on
        why = _stage_fails(pipeline, stages[name])
        if why:
            print(f"\n(dse.Evaluator rows without {name}'s stage: it cannot run in this tree ({why}); "
                  "--compare a later revision, e.g. the commit before a serving change, to time it)")
            del stages[name]
    rng = np.random.default_rng(2)
    base = {"batch": rng.integers(1, 129, n).astype(float), "in_len": rng.integers(64, 4097, n).astype(float),
            "out_len": rng.integers(16, 1025, n).astype(float), "w_bits": rng.choice([4.0, 8.0, 16.0], n),
            "kv_bits": rng.choice([8.0, 16.0], n), "token_budget": rng.choice([512.0, 2048.0, 8192.0], n),
            "max_seqs": rng.choice([64.0, 256.0, 1024.0], n)}
    print(f"\ndse.Evaluator, {n} designs, best of {repeats} (ns/design; M designs/s in brackets)")
    try:
        for model, system, extra in (("llama-3-8b", "h100-sxm", {}),
                                     ("llama-3-70b", "hgx-h100-8", {"tp": rng.choice([1.0, 2.0, 4.0, 8.0], n),
                                                                    "dp": rng.choice([1.0, 2.0], n)})):
            plain, served = dse.Evaluator(model, system), dse.Evaluator(model, system, serving=True)
            no_wl = {**base, **extra}
            cols = {"one workload": {**no_wl, "workload": np.full(n, float(WORKLOADS.index("sharegpt-vllm-paper")))},
                    "a workload per row": {**no_wl, "workload": rng.integers(0, len(WORKLOADS), n).astype(float)}}
            times = {("plain", ""): []} | {(name, label): [] for name in stages for label in cols}
            for _ in range(repeats):
                times["plain", ""] += best_ns(lambda ev=plain, d=no_wl: ev(d), n, 1)
                for name, stage in stages.items():
                    pipeline.serving_stage = stage
                    for label, d in cols.items():
                        times[name, label] += best_ns(lambda d=d, ev=served: ev(d), n, 1)
            t_plain = min(times["plain", ""])
            print(f"  {model} on {system}{' (tp, dp per row)' if extra else ''}: without serving {t_plain:6.0f} "
                  f"({1e3 / t_plain:.2f})")
            for label in cols:
                parts = [f"{name} {min(times[name, label]):6.0f} ({1e3 / min(times[name, label]):.2f}), stage "
                         f"{min(times[name, label]) - t_plain:6.0f}" for name in stages]
                print(f"    with serving, {label:18s} " + "; ".join(parts))
    finally:
        pipeline.serving_stage = stages["now"]


def _stage_fails(pipeline, stage) -> str | None:
    """None if ``dse.Evaluator`` runs with ``stage`` swapped into ``dse.model.pipeline`` on a few
    designs of each case :func:`wired` times, else the error (e.g. a function of ``dse.model.power``
    that REV's modules call and this tree no longer has)."""
    probe = {"batch": np.array([8.0, 64.0]), "in_len": np.array([512.0, 2048.0]), "out_len": np.array([128.0, 256.0]),
             "workload": np.full(2, float(WORKLOADS.index("sharegpt-vllm-paper")))}
    keep = pipeline.serving_stage
    try:
        pipeline.serving_stage = stage
        for model, system, extra in (("llama-3-8b", "h100-sxm", {}),
                                     ("llama-3-70b", "hgx-h100-8", {"tp": np.full(2, 2.0)})):
            dse.Evaluator(model, system, serving=True)({**probe, **extra})
    except Exception as err:  # noqa: BLE001 - any failure of the old code in this tree
        return f"{type(err).__name__}: {err}"
    finally:
        pipeline.serving_stage = keep
    return None


def published() -> None:
    from dse.validation.validate import load_set, validate

    rows = load_set("serving")
    comp = validate(rows).comparisons
    comp["stack"] = rows.loc[comp["row"], "stack"].str.slice(0, 22).to_numpy()
    comp["shape"] = rows.loc[comp["row"], "workload_published"].str.slice(0, 18).to_numpy()
    comp["error"] = comp["error_pct"] / 100.0
    print("\npublished serving points (dse validate --set serving): predicted / published - 1")
    for _, r in comp.iterrows():
        print(f"  {r['row']:2d} {r['stack']:22s} {r['platform']:11s} tp {r['tp']:.0f} {r['model']:11s} "
              f"{r['shape']:18s} {r['metric']:20s} published {r['measured']:9.4g} model {r['predicted']:9.4g} "
              f"{r['error']:+.3f}")
    for label, part in comp.groupby(["stack", "tp"]):
        e = part["error"].to_numpy()
        print(f"  {label[0]:22s} tp {label[1]:.0f}: {len(e):2d} points, median {np.median(e):+.3f}, "
              f"|error| median {np.median(np.abs(e)):.3f}, max {np.abs(e).max():.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--designs", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compare", default=BEFORE, help=f"git revision to time side by side (default {BEFORE}; "
                                                      "'none' to skip)")
    ap.add_argument("--tune-malloc", action="store_true", help="glibc malloc tuned first, as dse sweep/run do")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-published", action="store_true")
    args = ap.parse_args()
    if args.tune_malloc:
        try:
            from dse.runtime import tune_malloc
        except ImportError:  # where it lived before
            from dse.sweep.runtime import tune_malloc
        tune_malloc()
    before = None if args.compare == "none" else module_at(args.compare)
    cost(args.designs, args.repeats, before)
    if not args.skip_accuracy:
        accuracy(min(args.designs, 20_000), before)
    wired(args.designs, args.repeats, before)
    if not args.skip_published:
        published()
