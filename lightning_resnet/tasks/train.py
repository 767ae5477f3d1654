"""The train task: fit, then test the best checkpoint. Its command line (`python -m lightning_resnet`) is `train.py`.

Writes into the run directory: the composed config (`.hydra/`), `checkpoints/` (best + last),
TensorBoard events, `history.json` and `metrics.json`; returns the monitored metric for sweepers.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_resnet.builders import build_datamodule, build_model, build_trainer
from lightning_resnet.callbacks.finetune import FinetuneStrategy
from lightning_resnet.callbacks.history import MetricHistory
from lightning_resnet.callbacks.lr_finder import LRFinder
from lightning_resnet.callbacks.model_cost import ModelCostReport
from lightning_resnet.callbacks.reports import ReportWriter, log_run_hparams
from lightning_resnet.checkpoints import resume_checkpoint
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.reporting.history import best_value
from lightning_resnet.reporting.tensorboard import run_hparams
from lightning_resnet.run_folder import own_run_folder
from lightning_resnet.sweeps.jobs import pin_ddp_children

log = logging.getLogger(__name__)

METRIC_NAMES = ("acc", "f1", "precision", "recall", "loss")
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM  # what a shell reports for a process a SIGTERM ended: 143


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test as the config says; returns the content of `metrics.json`.

    Before anything is built, `ckpt_path` is checked (`resume_checkpoint`) and the run folder claimed
    (`own_run_folder`). A SIGTERM ends the process with status 143 once `LastCheckpoint` saved the state,
    so shells, SLURM and CI do not take a killed run for a finished one (Lightning exits 0).
    """
    started = time.time()
    output_dir = Path(cfg.paths.output_dir)
    resume_from = resume_checkpoint(cfg)
    with own_run_folder(cfg, output_dir, resuming=resume_from is not None):
        try:
            return fit_and_test(cfg, output_dir, resume_from, started)
        except SIGTERMException:
            log.error(
                "SIGTERM: stopped before the run finished (no metrics.json); continue it with "
                "`python -m lightning_resnet hydra.run.dir=%s ckpt_path=last [same overrides]` (a sweep: resume=true)",
                output_dir,
            )
            raise SystemExit(SIGTERM_EXIT_STATUS) from None


def fit_and_test(cfg: DictConfig, output_dir: Path, resume_from: str | None, started: float) -> dict[str, Any]:
    """The run itself, in a folder this process owns."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg)
    if isinstance(trainer.strategy, DDPStrategy):  # before fit, which starts the other ranks
        pin_ddp_children(output_dir)
    log_run_hparams(trainer, run_hparams(cfg))

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    score = monitored_score(cfg, trainer)
    checkpoint = best_checkpoint_callback(trainer)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    test_results: list[dict[str, float]] = []
    if cfg.get("test", True):
        test_results = trainer.test(model, datamodule=datamodule, ckpt_path=test_checkpoint(cfg, best_path))

    metrics = collect_metrics(cfg, trainer, score, test_results, best_path, time.time() - started)
    if trainer.is_global_zero:  # DDP: rank 0 writes; the metrics are already synced across ranks
        if cfg.get("kaggle_submission"):
            write_kaggle_submission(model, datamodule, output_dir / "kaggle_submission.csv")
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics written to %s\n%s", output_dir / "metrics.json", format_table(metrics))
        from lightning_resnet.reporting.html_report import write_report_page_or_log

        write_report_page_or_log(output_dir)  # report.html; a failure is logged, never fails the run
    return metrics


def write_kaggle_submission(model: ResNetClassifier, datamodule: Any, path: Path) -> None:
    """`id,label` for the unlabelled images of `data.predict_dir`, with the tested weights, through the
    prediction path of the predict task (and the data's `bad_images` policy)."""
    from lightning_resnet.inference.predictor import input_images, predict_images  # kaggle_submission=true only
    from lightning_resnet.inference.writers import write_kaggle_csv

    folder = getattr(datamodule, "predict_dir", None)
    if not folder:
        raise ConfigError("kaggle_submission=true needs data.predict_dir (a folder of unlabelled images)")
    root = Path(datamodule.root) / folder
    paths = input_images(root, recursive=False)
    predictions = predict_images(model.eval(), paths, root, datamodule.batch_size, bad_images=datamodule.bad_images)
    write_kaggle_csv(path, predictions, model.hparams.class_names, topk=1)
    log.info("Kaggle submission for %d images written to %s", len(predictions), path)


def test_checkpoint(cfg: DictConfig, best_path: str) -> str | None:
    """`test_checkpoint: best` (by `monitor`) or `last` (the final epoch's weights, in memory)."""
    choice = cfg.get("test_checkpoint", "best")
    if choice not in ("best", "last"):
        raise ConfigError(f"test_checkpoint={choice!r}; valid: best, last")
    if choice == "last":
        return None
    return best_path or None


def finetune_phases(trainer: pl.Trainer, epochs: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Best val figures of each fine-tuning phase (epochs with the same trainable parameter count)."""
    strategy = next((c for c in trainer.callbacks if isinstance(c, FinetuneStrategy)), None)
    phases: list[dict[str, Any]] = []
    for record in strategy.phases if strategy else []:
        if not phases or phases[-1]["params_trainable"] != record["trainable"]:
            phases.append({"first_epoch": record["epoch"], "params_trainable": record["trainable"], "epochs": []})
        phases[-1]["epochs"].append(record["epoch"])
    for phase in phases:
        phase_epochs = set(phase.pop("epochs"))
        rows = [row for row in epochs if row["epoch"] in phase_epochs]
        phase["epochs_run"] = len(rows)
        for key in ("val/acc", "val/loss", "train/acc"):
            phase[f"best_{key}"] = best_value(rows, key)
    return phases if len(phases) > 1 else []


def collect_metrics(
    cfg: DictConfig,
    trainer: pl.Trainer,
    score: float | None,
    test_results: list[dict[str, float]],
    best_path: str,
    wall_s: float,
) -> dict[str, Any]:
    """Final figures of a run: best-over-epochs train/val, last epoch, and test with the best checkpoint."""
    history = next((c for c in trainer.callbacks if isinstance(c, MetricHistory)), None)
    reports = next((c for c in trainer.callbacks if isinstance(c, ReportWriter)), None)
    epochs = history.epochs if history else []
    cost = next((c.cost for c in trainer.callbacks if isinstance(c, ModelCostReport) and c.cost), None)
    best = {
        f"{stage}/{name}": best_value(epochs, f"{stage}/{name}") for stage in ("train", "val") for name in METRIC_NAMES
    }
    return {
        "monitor": cfg.monitor,
        "mode": cfg.monitor_mode,
        "best_score": score,
        "best_checkpoint": best_path or None,
        "epochs_run": len(epochs),
        "best": {k: v for k, v in best.items() if v is not None},
        "last": {k: v for k, v in (epochs[-1] if epochs else {}).items() if k != "epoch"},
        "test": {k: float(v) for k, v in (test_results[0] if test_results else {}).items()},
        "phases": finetune_phases(trainer, epochs),
        "report": reports.summary if reports else {},
        "wall_time_s": round(wall_s, 2),
        "resumed_from": cfg.get("ckpt_path"),
        "model": cost.as_dict() if cost else None,
        "lr_find": next((c.summary for c in trainer.callbacks if isinstance(c, LRFinder) and c.summary), None),
    }


def monitored_score(cfg: DictConfig, trainer: pl.Trainer) -> float | None:
    """After fitting: the best `monitor` value the checkpoint callback saw; without a scored checkpoint
    (no checkpoint callback, `fast_dev_run`), the last value logged, so a sweeper still gets a number."""
    score = getattr(best_checkpoint_callback(trainer), "best_model_score", None)
    if score is None:
        score = trainer.callback_metrics.get(cfg.monitor)
    return float(score) if score is not None else None


def best_checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The callback keeping the best checkpoint: `trainer.checkpoint_callback` is whichever checkpoint
    callback comes first, which may be `LastCheckpoint`."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)


def format_table(metrics: dict[str, Any]) -> str:
    """A split x metric table of best train/val and test figures, for the end of the log."""
    names = METRIC_NAMES
    rows = [
        ("train (best epoch)", {n: metrics["best"].get(f"train/{n}") for n in names}),
        ("val (best epoch)", {n: metrics["best"].get(f"val/{n}") for n in names}),
        ("test (best ckpt)", {n: metrics["test"].get(f"test/{n}") for n in names}),
    ]
    header = f"{'split':<20}" + "".join(f"{n:>11}" for n in names)
    lines = [header, "-" * len(header)]
    for label, values in rows:
        cells = (f"{v:>11.4f}" if v is not None else f"{'-':>11}" for v in values.values())
        lines.append(f"{label:<20}" + "".join(cells))
    return "\n".join(lines)
