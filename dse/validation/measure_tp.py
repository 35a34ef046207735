"""Tensor-parallel measurement on N local GPUs (``dse measure --tp N``): driver, shard arithmetic, CLI.

The GPU side lives in :mod:`dse.validation.tp_decoder` (imported lazily, in the worker
processes only), so this module imports without PyTorch; its shard arithmetic is tested on
machines without a GPU.

Method (Megatron-LM tensor parallelism, Shoeybi et al. 2019, arXiv:1909.08053, section 3)
----------------------------------------------------------------------------------------
* One process per GPU (``torch.multiprocessing.spawn``), NCCL process group over the
  ``tp`` GPUs, rank ``r`` on CUDA device ``first_device + r``. ``tp = 1`` runs the same
  code in one process with no process group and no collective, so TP1 and TP2 rows
  compare like with like (TP1 equals :mod:`dse.validation.measure`'s decoder).
* Per layer: column-parallel fused QKV (each rank holds ``n_heads / tp`` query heads and
  ``n_kv_heads / tp`` K/V heads; when ``n_kv_heads < tp`` each K/V head is copied on
  ``tp / n_kv_heads`` ranks), local attention over the rank's own K/V cache, row-parallel
  output projection, one all-reduce of ``[tokens, d_model]``; column-parallel fused
  gate+up (``d_ff / tp`` columns each), row-parallel down projection, a second
  all-reduce. Rank 0 adds the residual inside its GEMM (``addmm``), the others run a
  plain GEMM, so the all-reduce's sum is ``x + sum_r partial_r`` (the kernel count per
  rank equals TP1's plus the two all-reduces).
  Norms run replicated on every rank (as in Megatron).
* Vocabulary-parallel LM head: rank ``r`` holds rows ``[r * ceil(V/tp), ...)``; greedy
  decoding takes each rank's local maximum and index and all-gathers the ``tp x batch``
  pairs (8 bytes each) to pick the global argmax. The token embedding is replicated
  (lookup reads only ``batch`` rows, so replication costs memory, not time), so the only
  collectives per decode step are ``2 * n_layers`` all-reduces and one small all-gather.
* Timing, CUDA graphs per decode step (the NCCL kernels are captured in the graph),
  kv-length buckets, prefill micro-batches and the energy window are as in
  :mod:`dse.validation.measure`; the number of timed runs is agreed across ranks. Energy
  is NVML's total-energy counter of each GPU in the group, summed: ``decode_power_w`` and
  ``idle_power_w`` are for all ``n_devices`` GPUs together (the per-device values are in
  ``device_decode_power_w``/``device_idle_power_w``, ``;``-joined).
* ``comm="none"`` (diagnostic) drops the collectives (outputs wrong, timing of the
  compute alone), so ``tpot(nccl) - tpot(none)`` is the exposed communication time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dse.spec.errors import DseError
from dse.validation.measure import COLUMNS, EXTRA_COLUMNS, Shapes, write_csv
from dse.validation.tp_shard import (  # noqa: F401 - re-exported: the public shard arithmetic
    SAFE_ENV,
    TpShard,
    allreduce_bandwidths,
    allreduce_sizes,
    decode_comm,
    estimate_rank_bytes,
    gpu_platform,
    rank_weight_bytes,
    shard,
)

#: Columns after :data:`dse.validation.measure.COLUMNS` + ``EXTRA_COLUMNS`` in a TP measurement file.
TP_COLUMNS: tuple[str, ...] = (
    "tp", "n_devices", "comm", "n_allreduce_per_step", "allreduce_msg_bytes", "rank_weight_bytes",
    "device_decode_power_w", "device_idle_power_w", "nccl_version", "gpus",
)
ALL_COLUMNS: tuple[str, ...] = COLUMNS + EXTRA_COLUMNS + TP_COLUMNS

#: Columns of the all-reduce sweep file.
ALLREDUCE_COLUMNS: tuple[str, ...] = (
    "n_ranks", "mode", "msg_bytes", "dtype", "time_s", "time_min_s", "time_max_s", "n_ops",
    "algbw_bytes_per_s", "busbw_bytes_per_s", "gpu_name", "nccl_version", "torch_version", "driver_version",
    "nccl_env", "source", "gpus",
)


def _log(msg: str) -> None:
    print(f"[dse measure --tp] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- driver


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _shapes_of(model: Any) -> Shapes:
    from dse.validation.measure import _load_card

    return Shapes.from_card(_load_card(model))


def run_group(cases: Iterable[tuple[Any, int, int, int]], tp: int, *, comm: str = "nccl", first_device: int = 0,
              allreduce_sizes_bytes: Sequence[int] = (), repeats: int = 5, kv_bucket: int = 16,
              max_prefill_tokens: int = 16384, min_decode_s: float = 2.0, min_prefill_s: float = 1.0,
              heat_s: float = 20.0, idle_s: float = 3.0, deadline_s: float | None = None, seed: int = 0,
              mem_margin_bytes: int = 3 << 30, nccl_timeout_s: float = 180.0, self_check: bool = True,
              partial_dir: str | Path | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Spawn ``tp`` worker processes and measure ``(model, batch, in_len, out_len)`` cases on them.

    Returns ``(rows, allreduce_rows)`` (lists of dicts; columns :data:`ALL_COLUMNS` and
    :data:`ALLREDUCE_COLUMNS`). ``allreduce_sizes_bytes`` (``tp > 1`` only) runs the NCCL
    all-reduce sweep first. ``deadline_s``: seconds from now after which no new case starts.
    Rows are appended to ``partial_dir/rows_tp{tp}.jsonl`` as they are measured, so a
    killed run keeps what it finished. A worker failure is logged; the rows done are returned.
    """
    if comm not in ("nccl", "none"):
        raise DseError(f"comm must be 'nccl' or 'none' (got {comm!r})")
    cases = [(m, int(b), int(i), int(o)) for m, b, i, o in cases]
    shapes = {}
    for m, *_ in cases:
        key = str(m)
        if key not in shapes:
            shapes[key] = _shapes_of(m)
            shard(shapes[key], tp)  # raise early on an uneven split
    for k, v in SAFE_ENV.items():
        os.environ[k] = v
    own_dir = partial_dir is None
    out_dir = Path(tempfile.mkdtemp(prefix="dse_tp_")) if own_dir else Path(partial_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = out_dir / f"rows_tp{tp}_{comm}.jsonl"
    ar_path = out_dir / f"allreduce_tp{tp}.jsonl"
    n_before = len(_read_jsonl(rows_path))
    cfg = {"cases": [(str(m), b, i, o) for m, b, i, o in cases], "shapes": shapes, "comm": comm,
           "first_device": first_device, "allreduce_sizes": list(allreduce_sizes_bytes), "repeats": repeats,
           "kv_bucket": kv_bucket, "max_prefill_tokens": max_prefill_tokens, "min_decode_s": min_decode_s,
           "min_prefill_s": min_prefill_s, "heat_s": heat_s, "idle_s": idle_s,
           "deadline": None if deadline_s is None else time.time() + deadline_s, "seed": seed,
           "mem_margin_bytes": mem_margin_bytes, "nccl_timeout_s": nccl_timeout_s, "self_check": self_check,
           "port": _free_port(), "rows_path": str(rows_path), "allreduce_path": str(ar_path),
           "date": _dt.date.today().isoformat()}
    import torch.multiprocessing as mp  # lazy: the driver needs torch only here

    from dse.validation import tp_decoder

    try:
        mp.spawn(tp_decoder.worker_main, args=(tp, cfg), nprocs=tp, join=True)
    except Exception as exc:  # noqa: BLE001 - a failed worker: keep the rows already written
        _log(f"tp={tp}: a worker failed: {exc}")
    rows = _read_jsonl(rows_path)[n_before:]
    ar = _read_jsonl(ar_path)
    return rows, ar


def measure_tp_cases(cases: Iterable[tuple[Any, int, int, int]], tp_values: Sequence[int] = (1, 2),
                     **kwargs: Any) -> tuple[Any, Any]:
    """Measure every case at every ``tp`` in ``tp_values`` (one spawn per tp); returns
    ``(rows, allreduce)`` as pandas DataFrames. Keyword arguments: those of :func:`run_group`."""
    import pandas as pd

    cases = list(cases)
    rows: list[dict[str, Any]] = []
    ar: list[dict[str, Any]] = []
    for tp in tp_values:
        r, a = run_group(cases, int(tp), **kwargs)
        rows += r
        ar += a
        kwargs = {**kwargs, "allreduce_sizes_bytes": ()}  # one sweep is enough
    return (pd.DataFrame(rows, columns=list(ALL_COLUMNS)), pd.DataFrame(ar, columns=list(ALLREDUCE_COLUMNS)))


def measure_tp(models: Sequence[Any], batches: Sequence[int], in_lens: Sequence[int], out_lens: Sequence[int],
               tp_values: Sequence[int] = (1, 2), **kwargs: Any) -> tuple[Any, Any]:
    """Cartesian product models x batches x in_lens x out_lens at each tp; see :func:`measure_tp_cases`."""
    cases = [(m, b, i, o) for m in models for b in batches for i in in_lens for o in out_lens]
    return measure_tp_cases(cases, tp_values, **kwargs)



# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the TP measurement (``python -m dse.validation.measure_tp``; ``dse measure --tp``)."""
    parser.add_argument("--model", nargs="+", required=True, metavar="NAME", help="dense model cards")
    parser.add_argument("--tp", nargs="+", type=int, default=[1, 2], metavar="N",
                        help="tensor-parallel degrees to run, each on GPUs first-device .. first-device+N-1")
    parser.add_argument("--batch", nargs="+", type=int, default=[1], metavar="N")
    parser.add_argument("--in-len", nargs="+", type=int, default=[512], metavar="N")
    parser.add_argument("--out-len", nargs="+", type=int, default=[128], metavar="N")
    parser.add_argument("--out", required=True, metavar="FILE", help="measurement CSV to write")
    parser.add_argument("--allreduce-out", metavar="FILE", help="also sweep NCCL all-reduce sizes; CSV to write")
    parser.add_argument("--allreduce-min-bytes", type=int, default=1024, metavar="B")
    parser.add_argument("--allreduce-max-bytes", type=int, default=256 << 20, metavar="B")
    parser.add_argument("--comm", choices=("nccl", "none"), default="nccl",
                        help="'none' drops the collectives (diagnostic: compute time alone)")
    parser.add_argument("--first-device", type=int, default=0, metavar="INDEX")
    parser.add_argument("--repeats", type=int, default=5, metavar="N")
    parser.add_argument("--kv-bucket", type=int, default=16, metavar="N")
    parser.add_argument("--max-prefill-tokens", type=int, default=16384, metavar="N",
                        help="prefill runs as micro-batches of at most N tokens (default 16384)")
    parser.add_argument("--mem-margin-gb", type=float, default=3.0, metavar="GB",
                        help="GPU memory kept free beyond the estimate (default 3)")
    parser.add_argument("--min-decode-s", type=float, default=2.0, metavar="S")
    parser.add_argument("--min-prefill-s", type=float, default=1.0, metavar="S")
    parser.add_argument("--heat-s", type=float, default=20.0, metavar="S")
    parser.add_argument("--deadline-s", type=float, default=None, metavar="S",
                        help="start no new case after S seconds (per tp group)")
    parser.add_argument("--partial-dir", default=None, metavar="DIR", help="where rows are appended as measured")
    parser.add_argument("--nccl-timeout-s", type=float, default=180.0, metavar="S",
                        help="NCCL collective timeout (a hung rank aborts after S seconds)")
    parser.add_argument("--no-self-check", action="store_true", help="skip the TP-vs-TP1 numerics check")


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments; writes ``args.out`` (and ``args.allreduce_out``)."""
    sizes = (allreduce_sizes(args.allreduce_min_bytes, args.allreduce_max_bytes) if args.allreduce_out else ())
    df, ar = measure_tp(args.model, args.batch, args.in_len, args.out_len, tp_values=args.tp, comm=args.comm,
                        first_device=args.first_device, allreduce_sizes_bytes=sizes, repeats=args.repeats,
                        kv_bucket=args.kv_bucket, max_prefill_tokens=args.max_prefill_tokens,
                        mem_margin_bytes=int(args.mem_margin_gb * 1e9), min_decode_s=args.min_decode_s,
                        min_prefill_s=args.min_prefill_s,
                        heat_s=args.heat_s, deadline_s=args.deadline_s, partial_dir=args.partial_dir,
                        nccl_timeout_s=args.nccl_timeout_s, self_check=not args.no_self_check)
    if args.allreduce_out and not ar.empty:
        write_csv(ar, args.allreduce_out)
        print(ar[["mode", "msg_bytes", "time_s", "busbw_bytes_per_s"]].to_string(index=False))
    if df.empty:
        raise DseError("dse measure --tp: no case could be measured (see the messages above)")
    write_csv(df, args.out)
    show = df[["model", "tp", "batch", "in_len", "out_len", "ttft_s", "tpot_s", "decode_tokens_per_s",
               "decode_power_w", "decode_tokens_per_j"]]
    print(show.to_string(index=False))
    print(f"wrote {len(df)} rows to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dse.validation.measure_tp", description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except DseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
