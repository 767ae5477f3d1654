"""Verdicts and the results file of the GPU acceptance checks, run by `benchmarks/gpu_check.sh`.

The shell script runs each check's command under its own timeout; this module judges what the command
left behind (metrics.json, status.json, printed tables), so every pass/fail rule lives in one testable
place and the script stays a list of commands. A lent GPU machine is rare and short-lived: one run must
say, check by check, what passed, what failed and why.

Checks (ids as the script records them):

- a: `python -m benchmarks --sections gpu`, its table included in the results file;
- b: the default digits run on one GPU in bf16-mixed, test accuracy >= 0.97;
- c: a 2-job `launcher=gpus` sweep, every job `ok` on a GPU named in its `status.json`;
- d: `data.cache_decode=cuda` pixels against the PIL path (`pixels` below);
- e1/e2: `trainer=ddp trainer.devices=1` (the NCCL process group), then a resume from `last.ckpt`.

Pixel tolerance of d, on the 0-255 scale over ~32 photo-like JPEGs at 64 px: mean |diff| <= 2.0 and
max |diff| <= 40. nvJPEG's IDCT and chroma upsampling and an antialiased tensor resize on the GPU are
not bit-identical to libjpeg-turbo plus PIL's resize, so a few levels of difference on average, and a
few tens at sharp edges, are expected; a wrong channel order, colour conversion or geometry moves the
mean by tens.

`python -m benchmarks.gpu_check judge <check> <output> <rc> <timeout> [folder]` and `... pixels` print
one verdict line, `<outcome>\\t<figure>`, and exit 0 when the check passed; `env` and `report` write the
results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where pixels are compared: the other verdicts start in milliseconds
    import torch

PIXEL_MEAN_TOL = 2.0
PIXEL_MAX_TOL = 40
DIGITS_MIN_ACC = 0.97
SWEEP_JOBS = 2
RESUMED_EPOCHS = 2

CHECKS = {
    "a": "a. `python -m benchmarks --sections gpu` (ResNet-50, 224 px)",
    "b": "b. digits, trainer=gpu, bf16-mixed (test acc >= 0.97)",
    "c": "c. launcher=gpus sweep, 2 jobs on one GPU",
    "d": "d. data.cache_decode=cuda pixels vs PIL",
    "e1": "e1. trainer=ddp trainer.devices=1 (NCCL), 1 epoch",
    "e2": "e2. resume from last.ckpt (ckpt_path=last), 2 epochs",
}


@dataclass(frozen=True)
class Verdict:
    """A check's result: `figure` is what it measured, `reason` why it failed."""

    ok: bool
    figure: str = ""
    reason: str = ""

    @property
    def outcome(self) -> str:
        return "ok" if self.ok else f"FAILED: {self.reason}"

    def line(self) -> str:
        return f"{self.outcome}\t{self.figure}"


@dataclass(frozen=True)
class CheckRow:
    """One line of the results table, as the script records it (outcome: ok / FAILED: ... / skipped: ...)."""

    check: str
    outcome: str
    figure: str = ""
    seconds: str = ""


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# d. nvJPEG pixels ---------------------------------------------------------------------------------------


def compare_pixels(
    decoded: torch.Tensor, reference: torch.Tensor, mean_tol: float = PIXEL_MEAN_TOL, max_tol: int = PIXEL_MAX_TOL
) -> Verdict:
    """Mean and max absolute difference of two uint8 image batches, judged against the tolerance."""
    if decoded.shape != reference.shape:
        return Verdict(False, reason=f"shapes differ: {tuple(decoded.shape)} vs {tuple(reference.shape)}")
    if str(decoded.dtype) != "torch.uint8" or str(reference.dtype) != "torch.uint8":
        return Verdict(False, reason=f"dtypes {decoded.dtype}, {reference.dtype}; expected uint8")
    if decoded.numel() == 0:
        return Verdict(False, reason="no pixels to compare")
    diff = (decoded.cpu().short() - reference.cpu().short()).abs()
    mean, peak = diff.float().mean().item(), int(diff.max().item())
    figure = f"mean |diff| {mean:.2f}, max {peak} (tolerance {mean_tol:g} / {max_tol})"
    if mean <= mean_tol and peak <= max_tol:
        return Verdict(True, figure)
    return Verdict(False, figure, f"pixels beyond tolerance: mean {mean:.2f} > {mean_tol:g} or max {peak} > {max_tol}")


def nvjpeg_error(path: Path, device: str) -> str | None:
    """Why torchvision cannot decode `path` on `device`, or None: `decode_resized_jpegs` silently falls
    back to PIL when nvJPEG fails, which would compare PIL with itself and pass."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    try:
        image = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB, device=device)
    except RuntimeError as err:
        return f"decode_jpeg on {device}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return None if image.device.type == device.split(":")[0] else f"decoded on {image.device}, not {device}"


def pixel_check(device: str = "cuda", count: int = 32, size: int = 64) -> Verdict:
    """`count` JPEGs decoded by `decode_resized_jpegs` on `device` and by the PIL path, compared."""
    import torch

    from benchmarks.common import logged_messages
    from benchmarks.pipeline import write_jpegs
    from lightning_resnet.data.pixels import decode_resized, decode_resized_jpegs

    # the batch decode's own fallback to PIL is logged at debug level only
    with logged_messages(decode_resized_jpegs.__module__) as fallbacks, tempfile.TemporaryDirectory() as tmp:
        paths = sorted(write_jpegs(Path(tmp), count).rglob("*.jpg"))
        error = nvjpeg_error(paths[0], device)
        if error:
            return Verdict(False, reason=error)
        decoded = decode_resized_jpegs(paths, size, device=device)
        reference = torch.stack([decode_resized(path, size) for path in paths])
    failed = [m for m in fallbacks if "failed" in m]
    if failed:
        return Verdict(False, reason=f"decode_resized_jpegs fell back to PIL: {failed[0][:150]}")
    verdict = compare_pixels(decoded, reference)
    return Verdict(verdict.ok, f"{count} JPEGs at {size} px on {device}: {verdict.figure}", verdict.reason)


# b, c, e. training runs -----------------------------------------------------------------------------------


def digits_verdict(run_dir: Path, min_acc: float = DIGITS_MIN_ACC) -> Verdict:
    """The run's metrics.json: test accuracy of the best checkpoint at least `min_acc`."""
    metrics = read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        return Verdict(False, reason=f"no metrics.json in {run_dir}")
    acc = metrics.get("test", {}).get("test/acc")
    if acc is None:
        return Verdict(False, reason="metrics.json has no test/acc")
    figure = f"test acc {acc:.4f}, {metrics.get('epochs_run')} epochs, {metrics.get('wall_time_s', 0):.0f} s"
    return Verdict(acc >= min_acc, figure, "" if acc >= min_acc else f"test acc {acc:.4f} < {min_acc}")


def sweep_verdict(sweep_dir: Path, jobs: int = SWEEP_JOBS, accelerator: str = "gpu") -> Verdict:
    """Every job folder's status.json: `ok`, on a device slot naming `accelerator` and a device index."""
    statuses = {p.parent.name: read_json(p) for p in sorted(sweep_dir.glob("*/status.json"))}
    problems = [] if len(statuses) == jobs else [f"{len(statuses)} job folders with status.json, expected {jobs}"]
    placed = []
    for name, status in statuses.items():
        status = status if isinstance(status, dict) else {}
        device = status.get("device") or {}
        if status.get("status") != "ok":
            problems.append(f"{name}: status {status.get('status')} {status.get('error', '')}".strip())
        if device.get("accelerator") != accelerator:
            problems.append(f"{name}: accelerator {device.get('accelerator')}, expected {accelerator}")
        elif accelerator == "gpu" and not isinstance(device.get("device"), int):
            problems.append(f"{name}: no device index in {device}")
        placed.append(f"{name} on {device.get('accelerator')}:{device.get('device')}")
    return Verdict(not problems, ", ".join(placed), "; ".join(problems))


def backend_in(text: str) -> str | None:
    """The process-group backend Lightning announced (`distributed_backend=nccl`), if any."""
    found = re.findall(r"distributed_backend=(\w+)", text)
    return found[-1] if found else None


def ddp_verdict(run_dir: Path, output: str, backend: str = "nccl") -> Verdict:
    """A finished run (metrics.json) whose process group Lightning announced with `backend`."""
    metrics = read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        return Verdict(False, reason=f"no metrics.json in {run_dir}")
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(run_dir.glob("*.log")))
    seen = backend_in(output) or backend_in(logs)
    acc = metrics.get("test", {}).get("test/acc")
    figure = f"backend {seen}, {metrics.get('epochs_run')} epoch(s), test acc {acc if acc is None else round(acc, 4)}"
    if seen != backend:
        return Verdict(False, figure, f"process group backend {seen}, expected {backend}")
    return Verdict(True, figure)


def resume_verdict(run_dir: Path, output: str, epochs: int = RESUMED_EPOCHS) -> Verdict:
    """The rerun restored `last.ckpt` (Lightning says so; with no last checkpoint it would warn and train
    from scratch, also ending at `epochs`) and its metrics.json counts the restored epoch (`epochs_run`)."""
    metrics = read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        return Verdict(False, reason=f"no metrics.json in {run_dir}")
    figure = f"epochs_run {metrics.get('epochs_run')}, resumed_from {metrics.get('resumed_from')}"
    if "there is no last checkpoint available" in output:
        return Verdict(False, figure, "ckpt_path=last found no last checkpoint: trained from scratch")
    if not re.search(r"Restoring states from the checkpoint path at \S*last\.ckpt", output):
        return Verdict(False, figure, "no 'Restoring states from the checkpoint path at .../last.ckpt' in the output")
    if metrics.get("epochs_run") != epochs:
        return Verdict(False, figure, f"epochs_run {metrics.get('epochs_run')}, expected {epochs}")
    return Verdict(True, f"restored last.ckpt, {figure}")


# a. the benchmark table -----------------------------------------------------------------------------------


def bench_table(output: str) -> str:
    """The markdown `python -m benchmarks` printed last (its header lines and table), or ''."""
    start = output.rfind("# Benchmarks")
    if start < 0:
        return ""
    heading, *rest = output[start:].splitlines()
    about = [line for line in rest if line.startswith("torch ")]
    table = [line for line in rest if line.startswith("|")]
    return "\n\n".join([heading, *about[:1], "\n".join(table)]) if table else heading


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


NO_TABLE = "no benchmark table in the output"


def bench_verdict(output: str) -> Verdict:
    """At least one synthetic img/s figure and no failed section; the figure names the best setting."""
    rows = [_cells(line) for line in bench_table(output).splitlines() if line.startswith("| gpu ")]
    rates = {}
    for row in rows:
        if len(row) >= 4 and row[1].startswith("synthetic") and row[3] == "img/s":
            try:
                rates[row[1].removeprefix("synthetic, ")] = float(row[2].replace(",", ""))
            except ValueError:
                continue
    best = max(rates, key=rates.__getitem__) if rates else None
    figure = f"best synthetic {rates[best]:,.0f} img/s ({best})" if best else ""
    failed = next((row for row in rows if len(row) > 4 and row[1] == "failed"), None)
    if failed:  # the section raised: `python -m benchmarks` keeps the error's type and first line
        return Verdict(False, figure, f"section failed: {failed[2]}: {failed[4]}".rstrip(": "))
    if not rows:
        return Verdict(False, reason=NO_TABLE)
    if not rates:
        skipped = next((row[4] for row in rows if len(row) > 4 and row[2] == "skipped"), "")
        return Verdict(False, reason=f"no synthetic img/s figure{f' ({skipped})' if skipped else ''}")
    return Verdict(True, figure)


# failures, environment, results file --------------------------------------------------------------------


def failure_reason(output: str, rc: int, limit_s: int) -> str:
    """A short why for a command that exited `rc`: the timeout, or the error line of its output."""
    if rc in (124, 137):
        return f"timed out after {limit_s} s"
    lines = [line.strip() for line in output.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    error = next((line for line in reversed(lines) if re.match(r"^[\w.]*(Error|Exception)\b", line)), None)
    error = error or next((line for line in reversed(lines) if re.search(r"error|exception", line, re.I)), None)
    detail = (error or (lines[-1] if lines else "no output"))[:200]
    return f"exit {rc}: {detail}"


VERDICT_LINE = re.compile(r"^(ok|FAILED: [^\t]*)\t(.*)$", re.M)


def judge(check: str, output: str, rc: int, limit_s: int, folder: Path | None = None) -> Verdict:
    """The verdict on check `check` from its command's output and exit status (and the folder it wrote).

    A timeout or a crash fails with its reason; d printed its own verdict line; a's table is judged even
    when the benchmark exited 1, since that only means a section failed, which the table names.
    """
    if rc in (124, 137):
        return Verdict(False, reason=failure_reason(output, rc, limit_s))
    if check == "a":
        verdict = bench_verdict(output)
        if rc != 0 and (verdict.ok or verdict.reason == NO_TABLE):
            return Verdict(False, verdict.figure, failure_reason(output, rc, limit_s))
        return verdict
    if check == "d":
        lines = VERDICT_LINE.findall(output)
        if rc in (0, 1) and lines:
            outcome, figure = lines[-1]
            return Verdict(outcome == "ok", figure, outcome.removeprefix("FAILED: "))
        return Verdict(False, reason=failure_reason(output, rc, limit_s))
    if rc != 0:
        return Verdict(False, reason=failure_reason(output, rc, limit_s))
    if folder is None:
        return Verdict(False, reason=f"check {check}: no folder to judge")
    if check == "b":
        return digits_verdict(folder)
    if check == "c":
        return sweep_verdict(folder)
    if check == "e1":
        return ddp_verdict(folder, output)
    if check == "e2":
        return resume_verdict(folder, output)
    return Verdict(False, reason=f"unknown check {check!r}")


def environment() -> dict[str, Any]:
    """GPU, library versions and the modules the checks import that this Python lacks."""
    import importlib

    import torch

    info: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "missing": [],
    }
    for module in ("torchvision", "pytorch_lightning", "hydra", "omegaconf", "hydra_plugins.hydra_joblib_launcher"):
        try:
            info[module] = getattr(importlib.import_module(module), "__version__", "?")
        except ImportError as err:
            info["missing"].append(f"{module} ({err})")
    return info


def slug(name: str) -> str:
    """A file-name form of a GPU name, as `benchmarks.common.machine_name` spells it (`nvidia-h200`)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "no-cuda"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def read_rows(path: Path) -> list[CheckRow]:
    """The script's rows file: id, outcome, figure, seconds, tab-separated (no quoting: errors hold quotes)."""
    if not path.is_file():
        return []
    fields = [line.split("\t") for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return [CheckRow(*[*row, "", "", ""][:4]) for row in fields]


def format_report(rows: list[CheckRow], env: dict[str, Any], when: str, bench: str = "", note: str = "") -> str:
    """The results file: GPU, torch, date, then one table row per check in CHECKS order (a check the
    script never reached says so), then the benchmark's own table."""
    recorded = {row.check: row for row in rows}
    versions = ", ".join(f"{k} {env[k]}" for k in ("torchvision", "pytorch_lightning", "hydra") if env.get(k))
    lines = [
        f"# GPU acceptance checks: {env.get('gpu') or 'no CUDA device'}",
        "",
        f"- GPU: {env.get('gpu') or 'none visible'} ({env.get('gpus', 0)} visible)",
        f"- torch {env.get('torch', '?')} (CUDA {env.get('cuda')}), Python {env.get('python', '?')}"
        + (f", {versions}" if versions else ""),
        f"- date: {when}",
    ]
    if env.get("missing"):
        lines.append(f"- missing modules: {', '.join(env['missing'])}")
    if note:
        lines.append(f"- {note}")
    lines += ["", "| check | outcome | figure | seconds |", "|---|---|---|---|"]
    extra = [key for key in recorded if key not in CHECKS]
    for key in [*CHECKS, *extra]:
        row = recorded.get(key, CheckRow(key, "not run: the script stopped before it"))
        lines.append(f"| {_cell(CHECKS.get(key, key))} | {_cell(row.outcome)} | {_cell(row.figure)} | {row.seconds} |")
    passed = sum(recorded[key].outcome == "ok" for key in CHECKS if key in recorded)
    lines += ["", f"{passed} of {len(CHECKS)} checks ok."]
    if bench:
        heading = "## `python -m benchmarks --sections gpu`"
        lines += ["", heading, "", bench.replace("# Benchmarks", "### Benchmarks", 1)]
    return "\n".join(lines) + "\n"


def all_ok(rows: list[CheckRow]) -> bool:
    recorded = {row.check: row.outcome for row in rows}
    return all(recorded.get(key) == "ok" for key in CHECKS)


def write_report(rows_file: Path, env_file: Path, directory: Path, bench_output: Path | None, note: str = "") -> Path:
    """`<directory>/<gpu slug>-<date>.md` from the rows so far; the same name `python -m benchmarks`
    gives its own file on that machine, whose table this one includes."""
    env = read_json(env_file) or {}
    bench = bench_table(bench_output.read_text(errors="replace")) if bench_output and bench_output.is_file() else ""
    now = dt.datetime.now()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{slug(env.get('gpu', ''))}-{now.date().isoformat()}.md"
    path.write_text(format_report(read_rows(rows_file), env, now.strftime("%Y-%m-%d %H:%M"), bench, note))
    return path


def _emit(verdict: Verdict) -> int:
    print(verdict.line())
    return 0 if verdict.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pixels = sub.add_parser("pixels", help="d: nvJPEG + GPU resize vs the PIL path; prints the verdict line")
    pixels.add_argument("--device", default="cuda")
    pixels.add_argument("--count", type=int, default=32)
    pixels.add_argument("--size", type=int, default=64)
    verdict = sub.add_parser("judge", help="print a check's verdict line; exit 0 when it passed")
    verdict.add_argument("check", choices=list(CHECKS))
    verdict.add_argument("output", type=Path, help="the command's captured output")
    verdict.add_argument("rc", type=int, help="its exit status")
    verdict.add_argument("limit_s", type=int, help="its timeout")
    verdict.add_argument("folder", type=Path, nargs="?", help="the run or sweep folder it wrote")
    env = sub.add_parser("env", help="write the environment JSON; exit 0 with CUDA, 3 without")
    env.add_argument("out", type=Path)
    report = sub.add_parser("report", help="write the results file; print its path; exit 0 when all checks are ok")
    report.add_argument("--rows", type=Path, required=True)
    report.add_argument("--env", type=Path, required=True)
    report.add_argument("--dir", type=Path, required=True)
    report.add_argument("--bench-output", type=Path)
    report.add_argument("--note", default="")
    args = parser.parse_args(argv)

    if args.command == "pixels":
        return _emit(pixel_check(args.device, args.count, args.size))
    if args.command == "judge":
        output = args.output.read_text(errors="replace") if args.output.is_file() else ""
        return _emit(judge(args.check, output, args.rc, args.limit_s, args.folder))
    if args.command == "env":
        info = environment()
        args.out.write_text(json.dumps(info, indent=2))
        print(json.dumps(info))
        return 0 if info["gpu"] else 3
    path = write_report(args.rows, args.env, args.dir, args.bench_output, args.note)
    print(path)
    return 0 if all_ok(read_rows(args.rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
