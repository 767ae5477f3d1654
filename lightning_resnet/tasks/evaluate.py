"""The evaluate task: `python -m lightning_resnet.evaluate ckpt_path=... [data=...]`.

Tests any checkpoint on a dataset's test split with the same builders and report callback as the
train task, using the checkpoint's own preprocessing (image size, crop, normalisation), and writes the
report files and `metrics.json` into its run directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict

from lightning_resnet import CONFIG_DIR
from lightning_resnet.builders import build_datamodule, build_trainer
from lightning_resnet.callbacks.reports import ReportWriter, log_run_hparams
from lightning_resnet.checkpoints import read_checkpoint
from lightning_resnet.errors import ConfigError, exit_on_config_error
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.reporting.tensorboard import run_hparams

log = logging.getLogger(__name__)


def checkpoint_history(ckpt_path: str | Path) -> list[dict[str, Any]] | None:
    """Per-epoch metrics of the run that wrote the checkpoint: its `history.json`, else the checkpoint's."""
    run_history = Path(ckpt_path).resolve().parent.parent / "history.json"
    if run_history.is_file():
        return json.loads(run_history.read_text())
    states = read_checkpoint(ckpt_path).get("callbacks", {})
    return next((s["epochs"] for name, s in states.items() if name.startswith("MetricHistory")), None)


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    model = ResNetClassifier.from_checkpoint(cfg.ckpt_path)
    spec = model.preprocessing or {}
    with open_dict(cfg):  # the data as the model was trained to see it
        cfg.data.image_size = spec.get("image_size", cfg.data.image_size)
        cfg.data.crop_ratio = spec.get("crop_ratio")
        if "mean" in spec:
            cfg.data.normalize = {"mean": spec["mean"], "std": spec["std"]}
        if "intensity" in spec:
            cfg.data.intensity = spec["intensity"]
    datamodule = build_datamodule(cfg)
    trained_on = [str(name) for name in model.hparams.class_names or []]
    if trained_on and datamodule.class_names != trained_on:
        raise ConfigError(
            f"data: classes {datamodule.class_names} differ from the checkpoint's {trained_on} "
            f"(ckpt_path={cfg.ckpt_path})"
        )
    trainer = build_trainer(cfg)
    reports = next((c for c in trainer.callbacks if isinstance(c, ReportWriter)), None)
    if reports is not None:
        reports.history = checkpoint_history(cfg.ckpt_path)
    log_run_hparams(trainer, {"model": model.hparams.get("arch"), **run_hparams(cfg)})
    results = trainer.test(model, datamodule=datamodule)
    metrics = {
        "checkpoint": str(cfg.ckpt_path),
        "test": {k: float(v) for k, v in (results[0] if results else {}).items()},
        "report": reports.summary if reports else {},
    }
    if trainer.is_global_zero:  # DDP: rank 0 writes; the other ranks have the synced figures but no report
        output = Path(cfg.paths.output_dir) / "metrics.json"
        output.write_text(json.dumps(metrics, indent=2))
        log.info("metrics written to %s", output)
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
@exit_on_config_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
