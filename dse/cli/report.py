"""``dse report``: a study's results as one self-contained HTML page (:mod:`dse.results.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dse.cli.common import output_file, positive_int, say

TOP_DEFAULT = 10  # the results layer's default (dse.results.report.TOP_DEFAULT), not imported: no pandas here

REPORT_EXAMPLES = """\
examples:
  dse report results/quickstart                     # writes results/quickstart/report.html
  dse report studies/quickstart.yaml -o qs.html --top 5   # the spec's output folder
"""


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="DIR|STUDY",
                   help="results folder of `dse run`/`sweep`/`merge` (or a file in it), or a study YAML path or "
                        "built-in name whose output folder holds results")
    p.add_argument("-o", "--out", metavar="FILE", help="HTML file to write (default: report.html in the folder)")
    p.add_argument("--top", type=positive_int, default=TOP_DEFAULT, metavar="N",
                   help=f"designs per objective in the top-designs tables (default: {TOP_DEFAULT})")


def run_report(args: argparse.Namespace) -> int:
    from dse.results.report import load_report, render_report, write_report

    out = output_file(args.out, "--out") if args.out else None  # a bad path fails before any work
    data = load_report(args.path)
    if out is None:
        out = output_file(str(Path(data.folder) / "report.html"), "--out")
    path = write_report(render_report(data, top=args.top), out)
    say(f"wrote {path}")
    return 0
