"""`python -m lightning_resnet.summarize multirun/<date>/<time>`: (re)write a sweep's summary at any time.

Also for a sweep still running or killed: unfinished jobs are listed as such.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lightning_resnet.sweeps.summary import write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_resnet.summarize", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. multirun/2026-01-31/12-00-00")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_summary(args.sweep_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
