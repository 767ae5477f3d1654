"""TensorBoard as the dashboard: curve layout, hyper-parameters with final figures, projector data.

Where each figure goes (`dashboard_tag`): the epoch metrics of a split go to a run of their own, `train/`,
`val/`, `test/` under the run's `tensorboard/` folder, with the same tag in each, so one chart holds the
train and val curves (and the test figure as a point) of a metric. TensorBoard's default tab (Time
Series) sorts tag groups by name and opens only the first two, at one row of two charts on a 1280x800
screen: `curves/acc` and `curves/loss` come first and are the first screen; then `lr-<optimizer>` (the
learning-rate monitor), `macro/f1|precision|recall`, `model/*` (parameters, GMACs), the report images
(`report/*`, `samples/*`) and `summary/*` (best epoch's accuracy, silhouette). Each figure is logged once,
under one name; the CSV logger, `history.json` and `metrics.json` keep the metric names (`val/acc`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from google.protobuf import struct_pb2
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from lightning_resnet.compat import event_file_writer

# Metric names (`<split>/<name>`) that get a run per split; the group (tag prefix) of each name.
SPLITS = ("train", "val", "test")
METRIC_GROUPS = {"acc": "curves", "loss": "curves", "f1": "macro", "precision": "macro", "recall": "macro"}
OTHER_GROUP = "summary"  # `val/best_acc`, `test/silhouette`: one figure per run, after the curves

# Train, val and test of one metric on one chart (TensorBoard's "Custom Scalars" tab): every run's tag.
CURVES_LAYOUT = {
    "train vs val": {
        "loss": ["Multiline", ["^curves/loss$"]],
        "accuracy": ["Multiline", ["^curves/acc$"]],
        "macro F1": ["Multiline", ["^macro/f1$"]],
    }
}
PROJECTOR_TAG = "test_features"


def dashboard_tag(key: str) -> tuple[str, str]:
    """(run, tag) of a logged metric in TensorBoard: `val/acc` -> (`val`, `curves/acc`), `test/f1` ->
    (`test`, `macro/f1`), `val/best_acc` -> (`val`, `summary/best_acc`); anything else stays in the
    main run ("") under its own name (`lr-Adam/head`, `model/gmacs`)."""
    split, sep, name = key.partition("/")
    if not sep or split not in SPLITS or not name:
        return "", key
    return split, f"{METRIC_GROUPS.get(name, OTHER_GROUP)}/{name}"


class DashboardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger, with each split's metrics in a run of their own (`dashboard_tag`)
    and without the `epoch` scalar.

    Lightning adds `epoch` to every metric logged with `self.log` (with no way to turn it off); in
    TensorBoard that is a staircase chart of step against epoch, ahead of the curves. The CSV logger keeps
    it (its `epoch` column is useful there).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._split_writers: dict[str, SummaryWriter] = {}

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        main = {}
        for key, value in metrics.items():
            if key == "epoch":
                continue
            run, tag = dashboard_tag(key)
            if not run:
                main[key] = value
                continue
            number = value.item() if isinstance(value, torch.Tensor) else value
            self._split_writer(run).add_scalar(tag, number, step)
        if main:
            super().log_metrics(main, step)

    def _split_writer(self, run: str) -> SummaryWriter:
        if run not in self._split_writers:
            self._split_writers[run] = SummaryWriter(log_dir=os.path.join(self.log_dir, run))
        return self._split_writers[run]

    @rank_zero_only
    def save(self) -> None:
        super().save()
        for writer in self._split_writers.values():
            writer.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        writers, self._split_writers = self._split_writers, {}
        for writer in writers.values():  # a later stage (test after fit) opens new ones
            writer.close()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_split_writers"] = {}  # open files do not travel to spawned processes
        return state


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def log_curves_layout(logger: TensorBoardLogger) -> None:
    logger.experiment.add_custom_scalars(CURVES_LAYOUT)


def log_hparams_with_results(logger: TensorBoardLogger, hparams: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
    """The run's HParams row: `hparams` (see `run_hparams`) with the final figures of `metric_tags`.

    The metrics are declared, not logged: the HParams plugin shows each one's last value from the scalar
    it points at (`val/acc`: tag `curves/acc` of the `val` run, see `dashboard_tag`), under the metric's
    name, so no figure is logged twice under two names. Written to the event file directly: Lightning's
    `log_hyperparams(params, metrics)` would log the metrics once more as scalars and stringify the values.
    """
    booleans = {k: v for k, v in hparams.items() if isinstance(v, bool)}
    others = {k: v for k, v in hparams.items() if k not in booleans}
    experiment, start, end = hparams_summary(others, {tag: 0.0 for tag in metric_tags})
    _edit_content(experiment, lambda content: _declare(content, booleans, metric_tags))
    _edit_content(start, lambda content: _add_bool_values(content, booleans))  # torch writes bools as 1.0/0.0
    writer = event_file_writer(logger.experiment)
    for summary in (experiment, start, end):
        writer.add_summary(summary)


def _edit_content(summary: Any, edit: Any) -> None:
    """Apply `edit` to the HParams plugin data of one of torch's hparams summaries."""
    plugin_data = summary.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(plugin_data.content)
    edit(content)
    plugin_data.content = content.SerializeToString()


def _declare(content: Any, booleans: Mapping[str, bool], metric_tags: Sequence[str]) -> None:
    """The experiment's columns: boolean hparams as booleans (a true/false filter in the HParams tab), and
    each metric read from where `DashboardLogger` logs it, shown under its metric name."""
    for name in booleans:
        domain = struct_pb2.ListValue(values=[struct_pb2.Value(bool_value=b) for b in (False, True)])
        content.experiment.hparam_infos.add(name=name, type=api_pb2.DATA_TYPE_BOOL, domain_discrete=domain)
    del content.experiment.metric_infos[:]
    for key in metric_tags:
        run, tag = dashboard_tag(key)
        content.experiment.metric_infos.add(name=api_pb2.MetricName(group=run, tag=tag), display_name=key)


def _add_bool_values(content: Any, booleans: Mapping[str, bool]) -> None:
    for name, value in booleans.items():
        content.session_start_info.hparams[name].bool_value = value


def log_projector(
    logger: TensorBoardLogger,
    features: torch.Tensor,
    targets: Sequence[int],
    predicted: Sequence[int],
    class_names: Sequence[str],
    thumbnails: torch.Tensor,
    step: int,
) -> None:
    """Features with true/predicted class names and image sprites, for TensorBoard's Projector tab."""
    metadata: list[Any] = [[class_names[t], class_names[p]] for t, p in zip(targets, predicted, strict=True)]
    logger.experiment.add_embedding(
        features,
        metadata=metadata,
        metadata_header=["label", "predicted"],
        label_img=thumbnails.float() / 255.0,
        global_step=step,
        tag=PROJECTOR_TAG,
    )


# The HParams table: the choices a user makes, under short names, each once (`run_hparams`).
# Keys a sweep may override that a curated column already shows (no second column for the same value).
_OVERRIDE_COLUMNS = {
    "model": "model",
    "model.arch": "model",
    "model.weights": "weights",
    "optimizer": "optimizer",
    "optimizer.lr": "lr",
    "optimizer.weight_decay": "weight_decay",
    "optimizer.momentum": "momentum",
    "scheduler": "scheduler",
    "loss": "loss",
    "loss.gamma": "gamma",
    "loss.label_smoothing": "label_smoothing",
    "data": "data",
    "data.root": "data",
    "data.batch_size": "batch_size",
    "data.image_size": "image_size",
    "trainer.max_epochs": "epochs",
    "finetune": "finetune",
    "augment": "augment",
    "seed": "seed",
}
# Overrides that are no choice of the model or its training: where things go, how the run is launched.
_NOT_HPARAMS = ("hydra", "paths", "callbacks", "logger", "launcher", "hparams_search", "debug", "experiment")
_NOT_HPARAM_KEYS = {"ckpt_path", "resume", "overwrite", "test", "test_checkpoint", "kaggle_submission", "claim_device"}


def run_hparams(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The run's row of the HParams table: model, weights, optimizer (class), lr, weight decay, momentum,
    scheduler, loss (+ gamma / label smoothing), batch size, epochs, image size, finetune, augment, seed,
    data, plus every other key the job's command line (a sweep's `hydra.overrides.task`) set.

    Values keep their type (bools stay bools); unset (null) values are left out, as are `_target_`s,
    paths and callback settings. Keys only present in the config are shown (evaluate has no optimizer).
    """
    choices = _hydra_choices(cfg)
    row: dict[str, Any] = {
        "model": OmegaConf.select(cfg, "model.arch"),
        "weights": OmegaConf.select(cfg, "model.weights"),
        "optimizer": _class_name(OmegaConf.select(cfg, "optimizer._target_")),
        "lr": OmegaConf.select(cfg, "optimizer.lr"),
        "weight_decay": OmegaConf.select(cfg, "optimizer.weight_decay"),
        "momentum": OmegaConf.select(cfg, "optimizer.momentum"),
        "scheduler": _scheduler_name(cfg),
        "loss": _class_name(OmegaConf.select(cfg, "loss._target_")),
        "gamma": OmegaConf.select(cfg, "loss.gamma"),
        "label_smoothing": OmegaConf.select(cfg, "loss.label_smoothing"),
        "batch_size": OmegaConf.select(cfg, "data.batch_size"),
        "epochs": OmegaConf.select(cfg, "trainer.max_epochs"),
        "image_size": OmegaConf.select(cfg, "data.image_size"),
        "finetune": choices.get("finetune") or _finetune_name(cfg),
        "augment": choices.get("augment") or _augment_name(cfg),
        "seed": OmegaConf.select(cfg, "seed"),
        "data": _data_name(cfg, choices.get("data")),
    }
    for key, value in _task_overrides(cfg):
        column = _OVERRIDE_COLUMNS.get(key, key)
        if column in row or key.split(".")[0] in _NOT_HPARAMS or key in _NOT_HPARAM_KEYS:
            continue
        if key.endswith(("_dir", "_path", "root")) or "/" in value:
            continue  # a path
        selected = OmegaConf.select(cfg, key, default=value)
        row[column] = selected if isinstance(selected, (bool, int, float, str)) else value
    return {k: _scalar(v) for k, v in row.items() if v is not None}


def _scalar(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _class_name(target: str | None) -> str | None:
    return target.rsplit(".", 1)[-1] if target else None


def _scheduler_name(cfg: DictConfig) -> str | None:
    if "scheduler" not in cfg:
        return None
    return _class_name(OmegaConf.select(cfg, "scheduler._target_")) or "none"  # scheduler=none: an empty node


def _finetune_name(cfg: DictConfig) -> str | None:
    node = cfg.get("finetune")
    if not node:
        return None
    if node.get("freeze_before") is None:
        return "full"
    unfreeze = node.get("unfreeze_at_epoch")
    return f"freeze_before={node.freeze_before}" + (f",unfreeze_at={unfreeze}" if unfreeze is not None else "")


def _augment_name(cfg: DictConfig) -> str | None:
    node = cfg.get("augment")
    if node is None:
        return None
    ops = [*(node.get("ops") or []), *(node.get("batch") or [])]
    return "+".join(_class_name(op.get("_target_")) or "?" for op in ops) or "none"


def _data_name(cfg: DictConfig, choice: str | None) -> str | None:
    """The data's root folder name (`data=folder data.root=...` runs differ by it), else its config name."""
    root = OmegaConf.select(cfg, "data.root", default=None, throw_on_missing=False)
    if isinstance(root, str) and root:
        return Path(root).name
    if choice:
        return choice
    target = _class_name(OmegaConf.select(cfg, "data._target_"))
    return target.removesuffix("DataModule").lower() if target else None


def _hydra_node(cfg: DictConfig) -> DictConfig | None:
    """The job's Hydra config: `cfg.hydra` (compose with return_hydra_config), else HydraConfig when it is
    this run's (a global, which a process that ran other jobs before may still hold)."""
    if "hydra" in cfg:
        return cfg.hydra
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_missing=False)
    try:
        same_run = output_dir is not None and Path(hydra_cfg.runtime.output_dir) == Path(output_dir)
    except Exception:  # an interpolation that does not resolve
        same_run = False
    return hydra_cfg if same_run else None


def _hydra_choices(cfg: DictConfig) -> dict[str, str]:
    node = _hydra_node(cfg)
    choices = OmegaConf.select(node, "runtime.choices", default=None) if node is not None else None
    return {str(k): str(v) for k, v in (choices or {}).items() if v is not None}


def _task_overrides(cfg: DictConfig) -> list[tuple[str, str]]:
    """`hydra.overrides.task` as (key, value): `+key=v`, `++key=v` and `key=v` alike; `~key` deletions left out."""
    node = _hydra_node(cfg)
    overrides = OmegaConf.select(node, "overrides.task", default=None) if node is not None else None
    pairs = []
    for item in overrides or []:
        key, sep, value = str(item).partition("=")
        if sep and not key.startswith("~"):
            pairs.append((key.lstrip("+"), value))
    return pairs
