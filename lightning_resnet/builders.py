"""Build the run's objects from the composed config, shared by every task (train, evaluate, ...).

Every object comes from `hydra.utils.instantiate`; the only logic here is ordering (the model needs
the data module's class count) and turning instantiation failures into messages naming the key.
"""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import ModelCheckpoint, WeightAveraging

from lightning_resnet.callbacks.lr_finder import FIND as LR_FIND
from lightning_resnet.callbacks.lr_finder import LRFinder
from lightning_resnet.data.base import ClassificationDataModule
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.models.losses import balanced_class_weights
from lightning_resnet.models.pretrained import pretrained_preprocessing
from lightning_resnet.utils import retain_freed_memory

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


# What a config can give for a parameter annotated with these is a number (torch annotates rates `float | Tensor`).
NUMBER_TYPES = frozenset({int, float, torch.Tensor})


def check_numbers(cfg: DictConfig, **resolved: Mapping[str, Any]) -> None:
    """Fail at start-up, naming the key, when a value meant to be a number is not one.

    Hydra passes a typo such as `optimizer.lr=abc` on as text, which would fail inside torch once the
    data is built. Which values are numbers comes from each `_target_`'s own signature (an int/float
    annotation, else a numeric default), so no list of keys is kept. `resolved` gives, per node, values
    a builder replaces before building (`data=pretrained_data_defaults(cfg)` for `image_size: weights`).
    """
    for path, node in _target_nodes(cfg):
        for key, (default, hint) in _parameters(node._target_).items():
            if key not in node or key in resolved.get(path, {}):
                continue
            kind = _number_kind(default, hint)
            if kind is None:
                continue
            try:
                value = node[key]
            except OmegaConfBaseException:  # an interpolation that resolves only later (${hydra:...}): not ours
                continue
            if _is_kind(value, *kind):
                continue
            expected = ("an int" if kind[0] is int else "a number (float)") + (" or null" if kind[1] else "")
            raise ConfigError(f"{path}.{key}={value!r}: expected {expected}, got {type(value).__name__}")


def _target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """(dotted key, node) of every node with a `_target_`, nested ones included (callbacks, augment ops)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        children = ((str(key), child) for key, child in node.items_ex(resolve=False))
    elif isinstance(node, ListConfig):
        children = ((str(index), child) for index, child in enumerate(node))
    else:
        return
    for key, child in children:
        yield from _target_nodes(child, f"{path}.{key}" if path else key)


def _parameters(target: str) -> dict[str, tuple[Any, Any]]:
    """{name: (default, annotation or None)} of what `target` takes, a class's `**kwargs` followed into its
    bases' `__init__`; empty when the target does not import (building it reports that, naming the key)."""
    try:
        obj = get_object(target)
    except Exception:
        return {}
    functions = [vars(c)["__init__"] for c in obj.__mro__ if "__init__" in vars(c)] if isinstance(obj, type) else [obj]
    found: dict[str, tuple[Any, Any]] = {}
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):  # a builtin without a signature
            break
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # annotations that do not resolve at run time: the defaults still tell
            hints = {}
        for name, parameter in parameters.items():
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                found.setdefault(name, (parameter.default, hints.get(name)))
        if all(parameter.kind is not parameter.VAR_KEYWORD for parameter in parameters.values()):
            break
    return found


def _number_kind(default: Any, hint: Any) -> tuple[type, bool] | None:
    """(int or float, whether null is allowed) for a parameter that takes numbers only, else None.

    The annotation's types (or, without one, the default's type) must all be numbers: `float | None` is,
    `int | str`, `Literal[...]`, `bool` and `Sequence[float] | float` are not.
    """
    if hint is None:
        accepted = {type(default)}
    elif typing.get_origin(hint) in (typing.Union, types.UnionType):
        accepted = set(typing.get_args(hint))
    else:
        accepted = {hint}
    nullable = type(None) in accepted or default is None
    accepted.discard(type(None))
    if not accepted or not accepted <= NUMBER_TYPES or not accepted & {int, float}:
        return None
    return (int if accepted & {int, float} == {int} else float), nullable


def _is_kind(value: Any, kind: type, nullable: bool) -> bool:
    if value is None:
        return nullable
    return not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))


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
    from_weights = pretrained_data_defaults(cfg)
    # first: a typed-in number fails here, before anything is built
    check_numbers(cfg, data=from_weights, optimizer=lr_to_find(cfg))
    augment = build(cfg.get("augment"), "augment", _convert_="all") or {}
    datamodule = build(
        cfg.data,
        "data",
        _convert_="all",
        augment=augment.get("ops", []),
        batch_augment=augment.get("batch", []),
        **from_weights,
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


def lr_to_find(cfg: DictConfig) -> dict[str, float]:
    """`optimizer.lr=find` -> {"lr": the finder's min_lr}, a stand-in the `LRFinder` callback replaces with its
    suggestion before training; {} for a number. `find` without that callback is a `ConfigError`."""
    if OmegaConf.select(cfg, "optimizer.lr") != LR_FIND:
        return {}
    nodes = [node for node in (cfg.get("callbacks") or {}).values() if node and "_target_" in node]
    finder = next((node for node in nodes if _is_subclass(node._target_, LRFinder)), None)
    if finder is None:
        raise ConfigError("optimizer.lr=find needs the lr finder: add callbacks=[default,lr_finder]")
    return {"lr": float(finder.get("min_lr", 1e-6))}


def _is_subclass(target: str, cls: type) -> bool:
    try:
        obj = get_object(target)
    except Exception:  # building it reports that, naming the key
        return False
    return isinstance(obj, type) and issubclass(obj, cls)


def build_model(cfg: DictConfig, datamodule: ClassificationDataModule) -> ResNetClassifier:
    optimizer_cfg = cfg.get("optimizer")
    if lr := lr_to_find(cfg):
        optimizer_cfg = OmegaConf.merge(optimizer_cfg, lr)
    return build(
        cfg.model,
        "model",
        _convert_="all",  # plain lists/dicts in hparams, so checkpoints load with weights_only=True
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        loss=build_loss(cfg, datamodule),
        optimizer=build(optimizer_cfg, "optimizer"),
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
    """The trainer with the config's callbacks and loggers.

    Best checkpoints are weights only (`callbacks.model_checkpoint.save_weights_only`), but Lightning writes
    a `WeightAveraging` callback's averaged weights (`callbacks=[default,ema]`) into a checkpoint through a
    callback hook that weights-only saves skip: with one, checkpoints keep their full state, or the best
    file would hold the raw weights while its score came from the averaged ones.

    The process that runs the trainer keeps freed memory for the next step (`retain_freed_memory`).
    """
    retain_freed_memory()
    callbacks = build_callbacks(cfg)
    if any(isinstance(c, WeightAveraging) for c in callbacks):
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_weights_only:
                callback.save_weights_only = False
                log.info("weight averaging: %s saves full checkpoints (the averaged weights)", callback.filename)
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=build_loggers(cfg) or False, **kwargs)
