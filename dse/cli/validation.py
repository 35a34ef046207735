"""``dse validate|calibrate|measure`` and ``dse plot --survey``: the model against measurements."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from dse.cli.common import output_file, output_folder, positive_float, positive_int, say, table_text
from dse.spec.errors import DseError, SpecError

# Names and defaults the help shows; the domain modules import pandas/SciPy, so they are not imported
# to build a parser. tests/cli checks these against the domain modules' own constants.
VALIDATION_SETS = ("published", "survey", "h100", "h200", "tp", "tp-heldout", "multi", "serving")
CALIBRATION_DEFAULT_FIT = ("compute_eff_frac", "mem_bw_eff_frac", "kernel_overhead_s", "static_power_w",
                           "mem_energy_pj_per_bit", "flop16_energy_pj_per_flop")
MEASURE_DEFAULT_REPEATS = 5
SURVEY_BATCHES = (1, 8)

VALIDATE_EXAMPLES = """\
examples:
  dse validate                                  # the published set
  dse validate --set published h200 --out results/validation
  dse validate --set my-measurements.csv        # any CSV/Parquet of measurement rows
"""
CALIBRATE_EXAMPLES = """\
examples:
  dse calibrate --platform h100-sxm --measurements validation/measurements_h100.csv --rows 0-3 --out h100-fit.yaml
  dse calibrate --platform h200-sxm --measurements m.csv --fit compute_eff_frac mem_bw_eff_frac
"""
MEASURE_EXAMPLES = """\
examples (needs the 'measure' extra: PyTorch and NVML, on an NVIDIA GPU):
  dse measure --model llama-2-7b --batch 1 8 64 --out m.csv
  dse measure --model llama-3.2-1b --device cpu --out check.csv   # checks the code path only
  dse measure --model llama-3-8b --batch 1 8 --in-len 512 --tp 1 2 --out tp.csv   # tensor parallel, NCCL
"""


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="sets", nargs="+", default=["published"], metavar="SET|FILE",
                   help=f"shipped sets ({', '.join(VALIDATION_SETS)}) or CSV/Parquet files of measurement rows "
                        "(default: published)")
    p.add_argument("--out", default="results/validation", metavar="DIR",
                   help="output folder for validation.parquet and validation.png (default: results/validation)")


def add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", required=True, metavar="NAME|YAML", help="preset name or YAML path to calibrate "
                                                                         "(required)")
    p.add_argument("--measurements", required=True, metavar="FILE",
                   help="CSV/Parquet file of measurement rows (required)")
    p.add_argument("--rows", nargs="+", metavar="I|I-J",
                   help="fit only these rows (0-based, ranges inclusive); the others are predicted as a held-out "
                        "check (default: fit every row)")
    p.add_argument("--fit", nargs="+", default=list(CALIBRATION_DEFAULT_FIT), metavar="FIELD",
                   help=f"hardware fields to fit (default: {' '.join(CALIBRATION_DEFAULT_FIT)})")
    p.add_argument("--name", help="name of the calibrated preset (default: <platform>-calibrated)")
    p.add_argument("--out", default="calibrated.yaml", metavar="FILE",
                   help="calibrated preset YAML to write (default: calibrated.yaml)")


def add_measure_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", nargs="+", required=True, metavar="NAME",
                   help="model card names or YAML paths, dense cards only (required)")
    p.add_argument("--batch", nargs="+", type=positive_int, default=[1], metavar="N",
                   help="batch sizes, sequences (default: 1)")
    p.add_argument("--in-len", nargs="+", type=positive_int, default=[128], metavar="N",
                   help="prompt lengths, tokens (default: 128)")
    p.add_argument("--out-len", nargs="+", type=positive_int, default=[128], metavar="N",
                   help="generated tokens per sequence (default: 128)")
    p.add_argument("--out", required=True, metavar="FILE", help="measurement CSV to write (required)")
    p.add_argument("--repeats", type=positive_int, default=MEASURE_DEFAULT_REPEATS, metavar="N",
                   help=f"timed repeats per phase (default: {MEASURE_DEFAULT_REPEATS}; fewer for runs of several "
                        "seconds, more where needed to fill the energy window)")
    p.add_argument("--device", default="0", metavar="INDEX",
                   help="CUDA device index, or 'cpu' to check the code path (default: 0; with --tp: the first GPU)")
    p.add_argument("--tp", nargs="+", type=positive_int, default=None, metavar="N",
                   help="tensor-parallel degrees, in GPUs: a Megatron-style decoder over NCCL on N local GPUs "
                        "each, energy summed over them (default: none, one GPU without tensor parallelism)")
    p.add_argument("--allreduce-out", metavar="FILE",
                   help="with --tp: also sweep NCCL all-reduce sizes 1 KiB..256 MiB and write them here "
                        "(default: no sweep)")
    p.add_argument("--kv-bucket", type=positive_int, default=16, metavar="N",
                   help="decode attends over the cache rounded up to N positions (default: 16)")
    p.add_argument("--min-decode-s", type=positive_float, default=2.0, metavar="S",
                   help="repeat the decode loop for at least S seconds for the energy counter (default: 2 s)")
    p.add_argument("--heat-s", type=float, default=30.0, metavar="S",
                   help="warm the GPU up with matrix products for S seconds first (default: 30 s)")


def add_survey_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``dse plot --survey`` (``--out`` is ``dse plot``'s: there the output folder)."""
    group = p.add_argument_group("survey figure (--survey)")
    group.add_argument("--survey", action="store_true",
                       help="draw the survey figure (tokens/s vs power, lines of equal tokens/J) per batch and write "
                            "survey-bs<B>.png and survey-disagreements.csv")
    group.add_argument("--batch", type=positive_int, nargs="+", default=list(SURVEY_BATCHES), metavar="B",
                       help="batch sizes to draw (default: 1 8)")
    group.add_argument("--results", metavar="DIR",
                       help="results of `dse run studies/survey-bs<B>.yaml`: DIR/survey-bs<B>, DIR/bs<B> or DIR "
                            "itself (default: compute the predictions)")


# ---- handlers -------------------------------------------------------------------------------------

def run_validate(args: argparse.Namespace) -> int:
    """Print the comparison and summary, write Parquet and PNG into ``--out``."""
    import pandas as pd

    from dse.validation.validate import load_set, validate, write_report

    out = output_folder(args.out, "--out")
    rows = pd.concat([load_set(s) for s in args.sets], ignore_index=True)
    report = validate(rows)
    say(report.to_text().rstrip("\n"))
    for kind, path in write_report(report, out, sets=args.sets).items():
        say(f"wrote {kind}: {path}")
    return 0


def row_selection(items: Sequence[str], n: int) -> list[int]:
    """Row indices from ``["0", "3", "5-7"]`` (inclusive ranges; commas also separate)."""
    out: list[int] = []
    for item in items:
        for part in str(item).split(","):
            lo, sep, hi = part.strip().partition("-")
            try:
                first, last = int(lo), int(hi) if sep else int(lo)
            except ValueError:
                raise SpecError("--rows", part, "must be an index or a range like 5-7", part) from None
            if not 0 <= first <= last < n:
                raise SpecError("--rows", part, f"rows are 0..{n - 1}", part)
            out.extend(range(first, last + 1))
    return list(dict.fromkeys(out))


def run_calibrate(args: argparse.Namespace) -> int:
    """Fit, print parameters and errors, write the calibrated preset."""
    from dse.results.io import read_table
    from dse.validation.calibration import calibrate, compare
    from dse.validation.validate import measurement_rows

    out = output_file(args.out)
    rows = measurement_rows(read_table(args.measurements)).reset_index(drop=True)
    chosen = row_selection(args.rows, len(rows)) if args.rows else list(range(len(rows)))
    result = calibrate(args.platform, rows.iloc[chosen], fit=args.fit, name=args.name,
                       label=Path(args.measurements).name)
    say(f"calibrated {result.base.name} -> {result.platform.name} on {len(chosen)} rows")
    say(result.params.to_string(float_format=lambda x: f"{x:.4g}"))
    say(f"\nfit rows: residual RMS {result.rms_error_pct:.2f}%")
    say(table_text(result.residuals))
    held = rows.drop(index=chosen)
    if len(held):
        check = compare(result.platform, held)
        check = check.assign(abs_error_pct=check["error_pct"].abs())
        say(f"\nheld-out rows ({len(held)}): mean |error| % per metric")
        say(check.groupby("metric")["abs_error_pct"].agg(["count", "mean", "max"]).to_string(
            float_format=lambda x: f"{x:.4g}"))
    for warning in result.warnings:
        say(f"warning: {warning}")
    say(f"wrote {result.to_yaml(out)}")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    """Measure every case, print the table, write ``--out``."""
    from dse.validation.measure import measure, write_measurements

    out = output_file(args.out)
    if args.tp is not None:
        return _run_measure_tp(args, out)
    if args.allreduce_out:
        raise SpecError("--allreduce-out", "allreduce-out", "needs --tp", args.allreduce_out)
    device: int | str = args.device if str(args.device) == "cpu" else _device_index(args.device)
    df = measure(args.model, args.batch, args.in_len, args.out_len, repeats=args.repeats, device=device,
                 kv_bucket=args.kv_bucket, min_decode_s=args.min_decode_s, heat_s=args.heat_s)
    if df.empty:
        raise DseError("dse measure: no case could be measured (see the messages above)")
    path = write_measurements(df, out)
    say(table_text(df[["model", "batch", "in_len", "out_len", "ttft_s", "tpot_s", "decode_tokens_per_s",
                       "decode_power_w", "decode_tokens_per_j"]]))
    say(f"wrote {len(df)} rows to {path}")
    return 0


def _run_measure_tp(args: argparse.Namespace, out: Path) -> int:
    """``dse measure --tp``: every case at every tensor-parallel degree (dse.validation.measure_tp)."""
    from dse.validation.measure_tp import allreduce_sizes, measure_tp, write_csv

    if str(args.device) == "cpu":
        raise SpecError("--device", "device", "--tp needs CUDA GPUs (NCCL)", args.device)
    ar_out = output_file(args.allreduce_out, "--allreduce-out") if args.allreduce_out else None
    sizes = allreduce_sizes(1024, 256 << 20) if ar_out else ()
    df, ar = measure_tp(args.model, args.batch, args.in_len, args.out_len, tp_values=args.tp,
                        first_device=_device_index(args.device), allreduce_sizes_bytes=sizes, repeats=args.repeats,
                        kv_bucket=args.kv_bucket, min_decode_s=args.min_decode_s, heat_s=args.heat_s)
    if ar_out is not None and not ar.empty:
        write_csv(ar, ar_out)
        say(table_text(ar[["mode", "msg_bytes", "time_s", "busbw_bytes_per_s"]]))
    if df.empty:
        raise DseError("dse measure --tp: no case could be measured (see the messages above)")
    write_csv(df, out)
    say(table_text(df[["model", "tp", "batch", "in_len", "out_len", "ttft_s", "tpot_s", "decode_tokens_per_s",
                       "decode_power_w", "decode_tokens_per_j"]]))
    say(f"wrote {len(df)} rows to {out}")
    return 0


def _device_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SpecError("--device", "device", "must be a CUDA device index or 'cpu'", text) from None
    if value < 0:
        raise SpecError("--device", "device", "must be >= 0", value)
    return value


def run_survey(args: argparse.Namespace) -> int:
    """``dse plot --survey``: one figure per batch and the batch-1 disagreement table, into ``--out``."""
    from dse.results.io import atomic_write
    from dse.validation.survey import load_points, load_predictions, results_for
    from dse.validation.survey_compare import reason_counts, survey_disagreements
    from dse.validation.survey_plot import survey_figure

    out = output_folder(getattr(args, "out", None) or "results/survey", "--out")
    folders = {batch: results_for(args.results, batch) for batch in args.batch}  # bad folders fail first
    points = load_points()
    for batch, folder in folders.items():
        path = survey_figure(folder, batch, out / f"survey-bs{batch}.png", points=points)
        say(f"wrote {path}" + (f" (from {folder})" if folder else " (predictions computed)"))
    # the published points are batch 1: compare with batch-1 predictions (computed if not among the results)
    trials, _ = load_predictions(folders.get(1) if args.results else None, 1)
    table = survey_disagreements(points, trials)
    path = atomic_write(out / "survey-disagreements.csv", lambda tmp: table.to_csv(tmp, index=False))
    n = int(table["disagrees"].sum())
    say(f"wrote {path}: {len(table)} published points on a preset, {n} differ by more than 2x")
    for reason, count in reason_counts(table).items():
        if count:
            say(f"  {count:3d}  {reason}")
    return 0
