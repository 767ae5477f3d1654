"""`make bench` = `python -m benchmarks [--sections ...] [--quick]`: one table of figures and ratios.

Sections compare their two sides close in time, so ratios hold on a noisy machine: `whole_run` and
`startup` as whole processes run in turn (A B A B ...), as a user feels them; `overhead` interleaved step
by step in one process (what a training step costs, not what a process or an epoch costs). The table is
printed and written to `benchmarks/results/<machine>-<date>.md`.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback

import torch

from benchmarks.common import Row, format_table, write_results

SECTIONS = ("whole_run", "overhead", "optimizer", "pipeline", "decode", "scale", "startup", "gpu")
QUICK = {  # --quick: each section's settings for a smoke run
    "whole_run": {"pairs": 1, "epochs": 2, "warmup": 0},
    "overhead": {"steps": 8, "warmup": 2, "repeats": 1},
    "optimizer": {"steps": 3, "warmup": 1},
    "pipeline": {"images": 64, "batch": 16, "model_steps": 1, "min_seconds": 0.2},
    "startup": {"repeats": 1},
    "gpu": {"steps": 6, "warmup": 2, "compile": False},
    "decode": {"images": 32, "repeats": 1},
    "scale": {"sizes": (200, 1000), "pairs": 1},  # the full section: 1k, 10k, 40k (`python -m benchmarks.scale`)
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
    rows, failed = [], []
    for section in chosen:
        started = time.time()
        try:  # a broken section costs its own rows, not the figures the others took minutes to measure
            module = importlib.import_module(f"benchmarks.{section}")
            rows += module.run(**(QUICK.get(section, {}) if args.quick else {}))
        except Exception as err:
            traceback.print_exc()
            failed.append(section)
            rows.append(Row(section, "failed", type(err).__name__, "", str(err).splitlines()[0] if str(err) else ""))
        print(f"[{section}] done in {time.time() - started:.0f} s", flush=True)
    header = (
        f"# Benchmarks {time.strftime('%Y-%m-%d %H:%M')}\n\n"
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}"
    )
    table = format_table(rows)
    print(f"\n{header}\n\n{table}")
    if not args.quick:
        print(f"\nwritten to {write_results(rows, header)}")
    if failed:
        sys.exit(f"sections failed: {', '.join(failed)} (tracebacks above)")


if __name__ == "__main__":
    main()
