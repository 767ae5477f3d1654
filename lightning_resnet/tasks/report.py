"""`python -m lightning_resnet.report <run or sweep folder>`: (re)write its `report.html` at any time.

A sweep folder gets its summary (`summary.csv/md/png`) rewritten first, so the page and the summary agree,
also for a sweep still running or killed (unfinished jobs are listed as such); a run folder gets its page.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lightning_resnet.reporting.html_report import write_report_page
from lightning_resnet.sweeps.summary import job_dirs, write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_resnet.report", description=__doc__)
    parser.add_argument(
        "folder", type=Path, help="a run folder (outputs/<date>/<time>) or a sweep folder (multirun/...)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if job_dirs(args.folder):
            write_summary(args.folder)
        path = write_report_page(args.folder)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path.resolve().as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())
