"""`ResNetClassifier`: a backbone from the registry, a dropout + linear head, metrics and optimisation.

Loss, optimizer and scheduler arrive already built (a module and two `functools.partial`s from
Hydra) and are not saved as hyper-parameters: a checkpoint rebuilds the network from plain values
alone, so it loads with `weights_only=True` and never executes code named in the file.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lightning_resnet import __version__
from lightning_resnet.checkpoints import CHECKPOINT_KEY, read_checkpoint
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.backbones import build_backbone
from lightning_resnet.models.losses import CrossEntropyLoss

SPEED_SWITCHES = ("channels_last", "compile", "compile_backend")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class _MeanOverEveryClass:
    """compute(): the mean of the per-class scores (the metric is built with `average="none"`)."""

    def compute(self) -> torch.Tensor:
        return super().compute().mean()  # type: ignore[misc]


class MacroF1(_MeanOverEveryClass, MulticlassF1Score):
    pass


class MacroPrecision(_MeanOverEveryClass, MulticlassPrecision):
    pass


class MacroRecall(_MeanOverEveryClass, MulticlassRecall):
    pass


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Epoch-level metrics under the stable names `<stage>/acc|f1|precision|recall` (DDP-synced).

    acc is micro (the share of images right); f1, precision and recall are macro averages over every
    class of the dataset, a class the split has no image of and the model never predicts scoring 0:
    exactly the report's "macro avg" (scikit-learn's `classification_report` with `labels=` every class,
    `zero_division=0`), so `test/f1` and the report agree. torchmetrics' own `average="macro"` leaves such
    a class out of the mean (it has no option to keep it), so a test split that lost a class and is
    otherwise right read 1.0 there against 0.667 in the report. Counting it is the conservative choice:
    one denominator for every split, fold and run, and a figure no missing class can inflate (the split
    warns about the class; see `data.splits`). Hence `average="none"` and the plain mean.
    """
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MacroF1(num_classes, average="none"),
            "precision": MacroPrecision(num_classes, average="none"),
            "recall": MacroRecall(num_classes, average="none"),
        },
        prefix=prefix,
    )


class ResNetClassifier(pl.LightningModule):
    """Any registered backbone + `Dropout -> Linear(num_classes)` head.

    Args:
        arch: backbone name (see `BACKBONES`), e.g. resnet18, resnext50_32x4d.
        num_classes: output classes; the train task takes it from the data module.
        weights: None (from scratch), a torchvision weights name (IMAGENET1K_V2, DEFAULT) or a local file.
        head_dropout: dropout before the final linear layer.
        class_names: saved in checkpoints so prediction needs no data config.
        loss: the training loss module (default: cross-entropy).
        optimizer: `partial(torch.optim.X, lr=...)` taking the parameter groups.
        scheduler: partial returning a scheduler or a Lightning scheduler dict (see `models.schedulers`).
        channels_last: NHWC memory format for the weights and the inputs (faster convolutions with
            bf16/fp16 on tensor cores).
        compile: torch.compile the backbone when the Trainer sets the model up: false, true (mode
            `default`) or a mode name (see `COMPILE_MODES`). State-dict keys stay those of the plain model.
        compile_backend: torch.compile's backend (`inductor`; `aot_eager`/`eager` compile nothing to
            machine code, for checking the wiring on machines without a C++ compiler).

    The three speed switches are not saved as hyper-parameters: they change how the network runs,
    not what it is, so a checkpoint trained compiled or channels-last loads anywhere as a plain model.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        num_classes: int = 10,
        weights: str | None = None,
        head_dropout: float = 0.0,
        class_names: Sequence[str] | None = None,
        loss: nn.Module | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        channels_last: bool = False,
        compile: bool | str = False,
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        if compile not in (True, False) and compile not in COMPILE_MODES:
            raise ConfigError(f"model.compile={compile!r}; valid: false, true, {', '.join(COMPILE_MODES)}")
        self.save_hyperparameters(ignore=["loss", "optimizer", "scheduler", *SPEED_SWITCHES])
        self.channels_last = channels_last
        self.compile_mode: str | None = None if compile is False else "default" if compile is True else compile
        self.compile_backend = compile_backend
        self.backbone, self.num_features = build_backbone(arch, weights)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(self.num_features, num_classes))
        self.loss_fn = loss if loss is not None else CrossEntropyLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        # Batch-size-weighted mean loss per stage; nan_strategy="disable" lets a NaN show (and skips a
        # per-batch `isnan().any()`, which would sync the GPU).
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")
        self._metrics_logged: set[str] = set()  # stages whose Metric objects Lightning holds this epoch
        self._first_nonfinite_step: torch.Tensor | None = None  # on the device; -1 while the loss is finite
        # How an image file becomes an input at evaluation (`data.transforms.eval_transform`): filled from
        # the data module, saved in checkpoints, so prediction needs no data config.
        self.preprocessing: dict[str, Any] | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> ResNetClassifier:
        """Load for inference: `weights_only=True`, and no pretrained download (the checkpoint has them)."""
        checkpoint = read_checkpoint(path, map_location)
        hparams = {**checkpoint["hyper_parameters"], "weights": None}
        try:
            model = cls(**hparams)
            model.load_state_dict(checkpoint["state_dict"])
        except (TypeError, RuntimeError) as err:  # another model's hyper-parameters or weights
            raise ConfigError(f"ckpt_path={path} does not fit {cls.__name__}: {str(err).splitlines()[0]}") from None
        model.preprocessing = checkpoint[CHECKPOINT_KEY].get("preprocessing")
        return model.eval()

    # -- speed switches ----------------------------------------------------------------------------
    @property
    def compiled_backbone(self) -> nn.Module | None:
        """The torch.compile wrapper of `backbone` once `configure_model` ran with `compile` on, else None."""
        return self.__dict__.get("_compiled_backbone")

    def configure_model(self) -> None:
        """Apply `channels_last` and `compile` (the Trainer calls this before every fit/validate/test/predict)."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_mode is not None and self.compiled_backbone is None:
            compiled = torch.compile(self.backbone, mode=self.compile_mode, backend=self.compile_backend)
            # Kept out of the module registry (a plain __dict__ entry): state_dict keys, parameter
            # counts, optimizers and deep copies see only the plain `backbone`, which the wrapper shares.
            self.__dict__["_compiled_backbone"] = compiled

    # -- forward -----------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (globally pooled) features, used by embedding plots and linear probes."""
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        compiled = self.compiled_backbone
        return (compiled if compiled is not None else self.backbone)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    # -- steps -------------------------------------------------------------------------------------
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = self.loss_fn(logits, y)
        target = y.argmax(dim=1) if y.ndim == 2 else y  # soft labels from MixUp/CutMix
        metrics, mean_loss = getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_loss")
        metrics.update(logits.detach(), target)
        # One value per image gives the batch-size-weighted mean (MeanMetric drops `weight` when
        # nan_strategy="disable", torchmetrics 1.9).
        mean_loss.update(loss.detach().expand(len(x)))
        if stage not in self._metrics_logged:
            # Metric objects are handed to Lightning once per epoch: it computes (synced across
            # devices) and resets them at the epoch's end, and they see every batch through `update`
            # above. Calling `self.log` at every step instead costs 1-2 ms of Lightning bookkeeping per
            # call (it moves each result to the device), 2-3 % of a small model's step on a CPU and
            # more on a GPU (benchmarks/overhead.py).
            self._metrics_logged.add(stage)
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True)
            for name, metric in metrics.items():
                self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name.endswith("/acc"))
        return {"loss": loss, "logits": logits.detach(), "target": target}

    def on_train_epoch_start(self) -> None:
        self._metrics_logged.discard("train")

    def on_validation_epoch_start(self) -> None:
        self._metrics_logged.discard("val")

    def on_test_epoch_start(self) -> None:
        self._metrics_logged.discard("test")

    def on_train_start(self) -> None:
        self._first_nonfinite_step = torch.full((), -1, dtype=torch.long, device=self.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")["loss"]
        # A NaN/inf loss is recorded on the device: `if not torch.isfinite(loss)` here would wait for
        # the GPU at every step. It is read every `log_every_n_steps`, at the epoch's end and before
        # any checkpoint is written, so the run stops before it saves broken weights.
        first = self._first_nonfinite_step
        if first is not None:
            first.copy_(torch.where((first < 0) & ~torch.isfinite(loss.detach()), self.global_step, first))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % self.trainer.log_every_n_steps == 0:
            self.raise_if_loss_was_nonfinite()

    def on_train_epoch_end(self) -> None:
        self.raise_if_loss_was_nonfinite()

    def raise_if_loss_was_nonfinite(self) -> None:
        step = -1 if self._first_nonfinite_step is None else int(self._first_nonfinite_step)
        if step >= 0:
            raise FloatingPointError(
                f"train/loss became NaN or infinite at step {step} (epoch {self.current_epoch}): "
                "lower optimizer.lr, enable trainer.gradient_clip_val, or check the data"
            )

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "test")

    # -- optimisation ------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Named parameter groups, backbone first; fine-tuning strategies set per-group LRs on these."""
        return [
            {"name": "backbone", "params": [p for p in self.backbone.parameters() if p.requires_grad]},
            {"name": "head", "params": list(self.head.parameters())},
        ]

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("ResNetClassifier needs an optimizer to train (the `optimizer` config group)")
        groups = [g for g in self.param_groups() if g["params"]]
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        context = {"max_epochs": self.trainer.max_epochs, "steps_per_epoch": self._steps_per_epoch()}
        accepted = inspect.signature(self.scheduler_factory).parameters
        scheduler = self.scheduler_factory(optimizer, **{k: v for k, v in context.items() if k in accepted})
        config = scheduler if isinstance(scheduler, dict) else {"scheduler": scheduler, "interval": "epoch"}
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _steps_per_epoch(self) -> int:
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            return 1
        return max(1, math.ceil(self.trainer.estimated_stepping_batches / max_epochs))

    # -- checkpoints -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "preprocessing"):
            self.preprocessing = datamodule.preprocessing()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_loss_was_nonfinite()
        checkpoint[CHECKPOINT_KEY] = {
            "version": __version__,
            "class_names": list(self.hparams.class_names or []),
            "preprocessing": self.preprocessing,
        }
