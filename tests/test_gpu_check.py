"""The CPU-testable parts of the GPU acceptance script (benchmarks/gpu_check.sh + gpu_check.py).

A lent GPU machine gives minutes, once: the script must at least parse, judge correctly and write its
results file, which is checked here without a GPU.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_check import (
    CHECKS,
    PIXEL_MAX_TOL,
    PIXEL_MEAN_TOL,
    CheckRow,
    compare_pixels,
    format_report,
    judge,
    main,
    read_rows,
)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

BENCH_OUTPUT = """[gpu] done in 212 s

# Benchmarks 2026-12-02 10:00

torch 2.11.0+cu130, 16 threads, x86_64, CUDA: NVIDIA H200

| section | figure | value | unit | note |
|---|---|---|---|---|
| gpu | synthetic, fp32 (TF32 convolutions) | 1,402.500 | img/s | peak GPU memory 40.1 GiB |
| gpu | synthetic, bf16-mixed + channels_last | 3,310.250 | img/s | peak GPU memory 22.3 GiB |
| gpu | ratio best synthetic / NVIDIA A100 mixed | 1.340 |  | other GPU |

written to benchmarks/results/nvidia-h200-2026-12-02.md
"""


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_wheels.sh"])
def test_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(BENCHMARKS / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_identical_pixels_pass():
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    verdict = compare_pixels(images, images.clone())
    assert verdict.ok and verdict.outcome == "ok"
    assert "mean |diff| 0.00, max 0" in verdict.figure


def test_small_differences_pass_and_large_ones_fail():
    reference = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    close = reference.clone()
    close[0, 0, 0, 0] = 100 + PIXEL_MAX_TOL  # one edge pixel at the limit, the mean far below it
    assert compare_pixels(close, reference).ok

    shifted = reference + int(PIXEL_MEAN_TOL) + 1  # every pixel off by more than the mean tolerance
    verdict = compare_pixels(shifted, reference)
    assert not verdict.ok and verdict.outcome.startswith("FAILED: pixels beyond tolerance")

    spike = reference.clone()
    spike[1, 2, 7, 7] = 100 + PIXEL_MAX_TOL + 1
    assert not compare_pixels(spike, reference).ok


def test_mismatched_batches_fail():
    images = torch.zeros((2, 3, 8, 8), dtype=torch.uint8)
    assert "shapes differ" in compare_pixels(images, images[:1]).reason
    assert "expected uint8" in compare_pixels(images.float(), images.float()).reason


def test_report_has_one_row_per_check_in_order_with_failures_and_gaps():
    rows = [
        CheckRow("b", "ok", "test acc 0.9852, 10 epochs, 31 s", "44"),
        CheckRow("d", "FAILED: pixels beyond tolerance | mean 7.10 > 2", "mean |diff| 7.10, max 90", "12"),
        CheckRow("a", "skipped: the 400 s budget was spent", "", "0"),
    ]
    env = {"gpu": "NVIDIA H200", "gpus": 1, "torch": "2.11.0+cu130", "cuda": "13.0", "python": "3.12.3"}
    text = format_report(rows, env, "2026-12-02 10:07")
    assert text.startswith("# GPU acceptance checks: NVIDIA H200\n")
    assert "torch 2.11.0+cu130" in text and "2026-12-02 10:07" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| check ")]
    assert len(table) == len(CHECKS)
    assert [line.split(" | ")[0] for line in table] == [f"| {label}" for label in CHECKS.values()]
    by_check = dict(zip(CHECKS, table, strict=True))
    assert "| ok | test acc 0.9852" in by_check["b"]
    assert "| FAILED: pixels beyond tolerance \\| mean 7.10 > 2 |" in by_check["d"]  # a | kept inside its cell
    assert "| not run: the script stopped before it |" in by_check["c"]
    assert "1 of 6 checks ok." in text


def test_report_command_writes_the_results_file_named_after_the_gpu(tmp_path):
    rows = tmp_path / "rows.tsv"
    rows.write_text("".join(f"{key}\tok\tfigure {key}\t{i}\n" for i, key in enumerate(CHECKS)))
    (tmp_path / "env.json").write_text(json.dumps({"gpu": "NVIDIA H200", "torch": "2.11.0"}))
    (tmp_path / "a.out").write_text(BENCH_OUTPUT)
    args = ["report", "--rows", str(rows), "--env", str(tmp_path / "env.json"), "--dir", str(tmp_path / "results")]
    assert main([*args, "--bench-output", str(tmp_path / "a.out")]) == 0  # all ok
    (written,) = (tmp_path / "results").glob("*.md")
    assert written.name.startswith("nvidia-h200-") and "6 of 6 checks ok." in written.read_text()
    assert "| gpu | synthetic, bf16-mixed + channels_last | 3,310.250 |" in written.read_text()

    with rows.open("a") as handle:
        handle.write('b\tFAILED: exit 1: ValueError: "quoted"\t\t3\n')  # a later row replaces the earlier one
    assert main(args) == 1
    assert read_rows(rows)[-1].outcome == 'FAILED: exit 1: ValueError: "quoted"'


def test_benchmark_verdict_names_the_best_setting_and_its_failures():
    verdict = judge("a", BENCH_OUTPUT, 0, 300)
    assert verdict.ok and verdict.figure == "best synthetic 3,310 img/s (bf16-mixed + channels_last)"
    failed_row = "| gpu | failed | OutOfMemoryError |  | CUDA out of memory |"
    verdict = judge("a", BENCH_OUTPUT.replace("| gpu | ratio", f"{failed_row}\n| gpu | ratio"), 1, 300)
    assert verdict.reason == "section failed: OutOfMemoryError: CUDA out of memory" and "3,310" in verdict.figure
    only_failed = "# Benchmarks 2026-12-02 10:00\n\n| section | figure | value | unit | note |\n|---|---|---|---|---|\n"
    assert judge("a", f"Traceback ...\n{only_failed}{failed_row}\n", 1, 300).reason == (
        "section failed: OutOfMemoryError: CUDA out of memory"
    )
    assert judge("a", "Traceback ...\nImportError: cannot import name 'Row'\n", 1, 300).reason == (
        "exit 1: ImportError: cannot import name 'Row'"
    )
    assert judge("a", "[gpu] still compiling", 124, 230).reason == "timed out after 230 s"


def test_resume_that_found_no_checkpoint_fails_though_it_ran_two_epochs(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs_run": 2, "resumed_from": "last"}))
    scratch = '.fit(ckpt_path="last") is set, but there is no last checkpoint available. No checkpoint will be loaded.'
    assert "trained from scratch" in judge("e2", scratch, 0, 90, tmp_path).reason
    restored = f"Restoring states from the checkpoint path at {tmp_path}/checkpoints/last.ckpt\n"
    assert judge("e2", restored, 0, 90, tmp_path).ok


def test_ddp_verdict_needs_the_nccl_backend(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs_run": 1, "test": {"test/acc": 0.91}}))
    assert judge("e1", "----\ndistributed_backend=nccl\nAll distributed processes registered.", 0, 90, tmp_path).ok
    assert "backend gloo" in judge("e1", "distributed_backend=gloo", 0, 90, tmp_path).reason


def test_sweep_verdict_needs_every_job_ok_on_a_gpu(tmp_path):
    for name, device in (("model=resnet18", 0), ("model=resnet34", 0)):
        (tmp_path / name).mkdir()
        status = {"status": "ok", "device": {"index": 0, "of": 1, "accelerator": "gpu", "device": device}}
        (tmp_path / name / "status.json").write_text(json.dumps(status))
    verdict = judge("c", "", 0, 180, tmp_path)
    assert verdict.ok and verdict.figure == "model=resnet18 on gpu:0, model=resnet34 on gpu:0"
    (tmp_path / "model=resnet34" / "status.json").write_text(json.dumps({"status": "failed", "error": "OOM"}))
    assert "model=resnet34: status failed OOM" in judge("c", "", 0, 180, tmp_path).reason


def test_digits_verdict_threshold(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs_run": 10, "test": {"test/acc": 0.9652}}))
    assert judge("b", "", 0, 150, tmp_path).reason == "test acc 0.9652 < 0.97"
    assert "no metrics.json" in judge("b", "", 0, 150, tmp_path / "missing").reason
