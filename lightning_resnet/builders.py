"""Build the run's objects from the composed config, shared by every task (train, evaluate, ...).

Every object comes from `hydra.utils.instantiate`; the only logic here is ordering (the model needs
the data module's class count) and turning instantiation failures into messages naming the key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_resnet.data.base import ClassificationDataModule
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.models.losses import balanced_class_weights
from lightning_resnet.models.pretrained import pretrained_preprocessing

log = logging.getLogger(__name__)


HYDRA_DIR = Path(hydra.__file__).resolve().parent


def build(node: DictConfig | None, key: str, **kwargs: Any) -> Any:
    """`instantiate(node)`; what fails inside the object's own code is raised as it is (a `ConfigError`
    naming its key, a missing-weights error, a bug), while Hydra's own failures (a target it cannot find,
    arguments the target does not take) become a `ConfigError` naming `key`."""
    if not node:  # null or empty (e.g. scheduler=none): nothing to build
        return None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if cause is not None and not _raised_by_hydra(cause):
            raise cause from cause.__cause__  # keeps its own chain, drops Hydra's wrapper
        raise ConfigError(f"{key}: {err}") from err


def _raised_by_hydra(error: BaseException) -> bool:
    """True when the innermost frame of `error` is Hydra's (e.g. binding the arguments of the call)."""
    tb = error.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(HYDRA_DIR)


def pretrained_data_defaults(cfg: DictConfig) -> dict[str, Any]:
    """`data.normalize` / `data.image_size` left at `weights` -> the pretrained weights' own values.

    `image_size: weights` also takes the weights' centre crop (`crop_ratio`, e.g. resize 256 then crop
    224) unless `data.crop_ratio` is set.
    """
    wanted = [key for key in ("normalize", "image_size") if cfg.data.get(key) == "weights"]
    if not wanted:
        return {}
    expected = pretrained_preprocessing(cfg.model.arch, cfg.model.get("weights"))
    values = {}
    if "normalize" in wanted:
        values["normalize"] = {"mean": expected["mean"], "std": expected["std"]}
    if "image_size" in wanted:
        values["image_size"] = expected["image_size"]
        if cfg.data.get("crop_ratio") is None and expected["crop_ratio"] is not None:
            values["crop_ratio"] = expected["crop_ratio"]
    log.info("data: %s from model.weights=%s", values, cfg.model.get("weights"))
    return values


def build_datamodule(cfg: DictConfig) -> ClassificationDataModule:
    """The data module with its augmentation, set up for fitting (the model needs its classes).

    `augment.ops` transform training images; `augment.batch` (MixUp/CutMix) mixes training batches.
    """
    augment = build(cfg.get("augment"), "augment", _convert_="all") or {}
    datamodule = build(
        cfg.data,
        "data",
        _convert_="all",
        augment=augment.get("ops", []),
        batch_augment=augment.get("batch", []),
        **pretrained_data_defaults(cfg),
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_loss(cfg: DictConfig, datamodule: ClassificationDataModule) -> Any:
    loss_cfg = cfg.get("loss")
    if loss_cfg is not None and loss_cfg.get("class_weights") == "balanced":
        loss_cfg = OmegaConf.merge(loss_cfg, {"class_weights": balanced_class_weights(datamodule.class_counts())})
        log.info("loss.class_weights=balanced -> %s", [round(w, 4) for w in loss_cfg.class_weights])
    return build(loss_cfg, "loss")


def build_model(cfg: DictConfig, datamodule: ClassificationDataModule) -> ResNetClassifier:
    return build(
        cfg.model,
        "model",
        _convert_="all",  # plain lists/dicts in hparams, so checkpoints load with weights_only=True
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        loss=build_loss(cfg, datamodule),
        optimizer=build(cfg.get("optimizer"), "optimizer"),
        scheduler=build(cfg.get("scheduler"), "scheduler"),
    )


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """Every entry of `cfg.callbacks` with a `_target_` (null entries are switched-off callbacks), and `finetune`."""
    nodes = cfg.get("callbacks") or {}
    callbacks = [build(node, f"callbacks.{name}") for name, node in nodes.items() if node and "_target_" in node]
    finetune = build(cfg.get("finetune"), "finetune")
    return [*callbacks, finetune] if finetune is not None else callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    nodes = cfg.get("logger") or {}
    return [build(node, f"logger.{name}") for name, node in nodes.items() if node and "_target_" in node]


def build_trainer(cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    return build(cfg.trainer, "trainer", callbacks=build_callbacks(cfg), logger=build_loggers(cfg) or False, **kwargs)
