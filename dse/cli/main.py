"""``dse``: the command line. Parses, dispatches to the command modules, turns errors into one line.

Command groups live in their own modules (:mod:`dse.cli.evaluate`, :mod:`dse.cli.studies`,
:mod:`dse.cli.validation`, :mod:`dse.cli.listing`); each has an ``add_<name>_arguments``
and a ``run_<name>`` per command. Nothing heavy (pandas, Optuna, SciPy, matplotlib) is
imported until a command runs, so ``dse --help`` and ``dse --version`` stay fast.

Bad input of any kind prints one line ``error: ...`` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dse._version import __version__
from dse.cli import evaluate, listing, report, studies, validation
from dse.cli.common import EXIT_BAD_INPUT, Parser
from dse.spec.errors import DseError, redact

EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One subcommand: its one-line help, its description, an example block and its two functions."""

    name: str
    help: str
    description: str
    examples: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: tuple[Command, ...] = (
    Command("eval", "evaluate the cartesian product of presets, models and knobs",
            "Evaluate every combination of the given platforms, models and knob values (one row each) and print "
            "the metrics, or write them as CSV, JSON or Parquet. The `fits` column says whether the design fits in "
            "memory.", evaluate.EVAL_EXAMPLES, evaluate.add_eval_arguments, evaluate.run_eval),
    Command("explain", "per-operator breakdown of designs",
            "FLOPs, main-memory traffic, time (and whether compute or memory bound) and energy of every operator of "
            "prefill and decode, one table per design (several knob values: every combination).",
            evaluate.EXPLAIN_EXAMPLES, evaluate.add_explain_arguments, evaluate.run_explain),
    Command("run", "run or resume a study (Optuna search, or exhaustive for a small space)",
            "Run a study spec to its budget: propose designs with the study's sampler, evaluate them, and write "
            "trials.parquet, front.parquet and front.png into the output folder. Running again resumes.",
            studies.RUN_EXAMPLES, studies.add_run_arguments, studies.run_run),
    Command("sweep", "evaluate every design of a study's finite space: the exact front",
            "Evaluate every design of the study's space (every float knob needs a step) in parallel chunks and "
            "write the exact Pareto front, plus a uniform sample of the designs, like `dse run`.",
            studies.SWEEP_EXAMPLES, studies.add_sweep_arguments, studies.run_sweep),
    Command("merge", "merge the outputs of sweep shards into the exact front",
            "Merge the result folders of `dse sweep --shard I/N` runs of one study into one result folder.",
            studies.MERGE_EXAMPLES, studies.add_merge_arguments, studies.run_merge),
    Command("front", "print a Pareto front table",
            "Print the front of a results folder, sorted by the first objective (best first) unless told otherwise.",
            studies.FRONT_EXAMPLES, studies.add_front_arguments, studies.run_front),
    Command("plot", "redraw a study's front plot, or draw the survey figure (--survey)",
            "Redraw front.png of a results folder (every evaluated design, the front as a line with outlined "
            "markers), optionally with other axes or colouring; or, with --survey, the survey's tokens/s vs power "
            "figure with llm-dse's predictions.",
            studies.PLOT_EXAMPLES, studies.add_plot_arguments, studies.run_plot),
    Command("report", "write a study's results as one self-contained HTML page",
            "Write an HTML report of a results folder (a finished or interrupted run, sweep or merge): the study, its "
            "space and counts, the Pareto front as plots and a table with units, the top designs per objective and "
            "which constraints bind. One file, nothing loaded from the network.",
            report.REPORT_EXAMPLES, report.add_report_arguments, report.run_report),
    Command("validate", "compare predictions with measurements (validation/ sets or your own)",
            "Predict every measurement row with its preset and card, print each comparison, the rows that could "
            "not be predicted (with the reason) and the error summary; write validation.parquet and "
            "validation.png.",
            validation.VALIDATE_EXAMPLES, validation.add_validate_arguments, validation.run_validate),
    Command("calibrate", "fit a preset's efficiencies and power terms to measurements",
            "Bounded least squares on log errors: fit the chosen hardware fields of a preset to measured rows, "
            "report residuals and held-out errors, and write the calibrated preset (sources say 'fitted to').",
            validation.CALIBRATE_EXAMPLES, validation.add_calibrate_arguments, validation.run_calibrate),
    Command("measure", "measure TTFT, time per token and energy on a local NVIDIA GPU",
            "Run a random-weight decoder of each model card with PyTorch (CUDA graphs) and read the GPU's energy "
            "counter: one measurement row per (model, batch, in_len, out_len), ready for `dse validate` and "
            "`dse calibrate`.",
            validation.MEASURE_EXAMPLES, validation.add_measure_arguments, validation.run_measure),
    Command("list", "list knobs, hardware fields, metrics, models, platforms, studies or samplers",
            "List what the model knows: design knobs, hardware and model-card fields (unit, default, range), "
            "metric columns, and the built-in models, platforms, studies and samplers.",
            listing.LIST_EXAMPLES, listing.add_list_arguments, listing.run_list),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``dse`` parser with every subcommand."""
    parser = Parser(prog="dse", description="Design-space exploration of LLM inference hardware: which hardware, "
                                            "with which software knobs, gives the most tokens/s and tokens/J.",
                    epilog="Run `dse COMMAND --help` for a command's flags and examples.")
    parser.add_argument("--version", action="version", version=f"llm-dse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description, epilog=cmd.examples)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dse`` with ``argv`` (default: the command line); returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command in ("eval", "run", "sweep", "merge"):
        from dse.runtime import tune_malloc

        tune_malloc()
    try:
        return int(args.func(args) or 0)
    except DseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as exc:  # a file that cannot be read or written after the checks passed (disk full, ...)
        where = f": {redact(str(exc.filename))}" if exc.filename else ""
        print(f"error: {exc.strerror or exc.__class__.__name__}{where}".replace("\n", " "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
