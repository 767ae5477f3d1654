"""`FinetuneStrategy`: which backbone stages train, from which epoch, at which learning rate.

Built on Lightning's `BaseFinetuning` (its resume bookkeeping of added param groups), with two
departures that matter for pretrained ResNets:

- Frozen BatchNorm layers stay in eval mode, so their running statistics keep the pretrained values.
  `BaseFinetuning.freeze_module` instead turns `track_running_stats` off, which makes a "frozen" BN
  normalise with each batch's statistics, in training and in evaluation alike.
- A param group added when the backbone is unfrozen joins the LR schedule: each scheduler learns its
  base LR, and it starts at the schedule's current point (its base LR x the head's current LR / the
  head's base LR). Otherwise a scheduler built before it leaves it at a constant LR.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from lightning_resnet.compat import nested_schedulers, set_last_lrs
from lightning_resnet.errors import ConfigError

log = logging.getLogger(__name__)

HEAD = "head"  # `freeze_before: head` freezes the whole backbone


class FinetuneStrategy(BaseFinetuning):
    """Freeze backbone stages before `freeze_before`, optionally unfreeze them at `unfreeze_at_epoch`.

    Args:
        freeze_before: null (train everything), `head` (freeze the whole backbone), or the name of a
            backbone stage (`layer4`): the stages before it are frozen, it and the later ones train.
        unfreeze_at_epoch: epoch at which the frozen stages start training; null = never.
        unfreeze_lr: base LR of every param group from `unfreeze_at_epoch` on (e.g. 1e-4 after a head
            phase at 0.01); null = keep the head's, the backbone at head x `backbone_lr_scale`.
        backbone_lr_scale: discriminative fine-tuning: backbone base LR = head base LR x this.
        frozen_bn_eval: keep frozen BatchNorm layers in eval mode (running statistics untouched);
            false = they keep normalising with batch statistics and updating them, only their
            affine parameters frozen.
    """

    def __init__(
        self,
        freeze_before: str | None = None,
        unfreeze_at_epoch: int | None = None,
        unfreeze_lr: float | None = None,
        backbone_lr_scale: float = 1.0,
        frozen_bn_eval: bool = True,
    ) -> None:
        super().__init__()
        if unfreeze_at_epoch is not None and (unfreeze_at_epoch < 0 or freeze_before is None):
            raise ConfigError(f"finetune.unfreeze_at_epoch={unfreeze_at_epoch} needs >= 0 and finetune.freeze_before")
        if backbone_lr_scale <= 0 or (unfreeze_lr is not None and unfreeze_lr <= 0):
            got = f"backbone_lr_scale={backbone_lr_scale}, unfreeze_lr={unfreeze_lr}"
            raise ConfigError(f"finetune: need backbone_lr_scale > 0 and unfreeze_lr > 0 or null, got {got}")
        self.freeze_before = freeze_before
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.unfreeze_lr = unfreeze_lr
        self.backbone_lr_scale = backbone_lr_scale
        self.frozen_bn_eval = frozen_bn_eval
        self.frozen: list[nn.Module] = []
        self.phases: list[dict[str, Any]] = []  # epoch, trainable/total parameters, LR per group

    # -- which modules ------------------------------------------------------------------------------
    def frozen_stages(self, pl_module: pl.LightningModule) -> list[nn.Module]:
        """The backbone's top-level children before `freeze_before` (all of them for `head`)."""
        if self.freeze_before is None:
            return []
        children = list(pl_module.backbone.named_children())
        if self.freeze_before == HEAD:
            return [module for _, module in children]
        names = [name for name, module in children if any(True for _ in module.parameters())]
        if self.freeze_before not in names:
            raise ConfigError(
                f"finetune.freeze_before={self.freeze_before!r} is not a stage of {pl_module.hparams.get('arch')}; "
                f"valid: {', '.join(names)}, {HEAD} (the whole backbone), or null (nothing frozen)"
            )
        stop = [name for name, _ in children].index(self.freeze_before)
        return [module for _, module in children[:stop]]

    def _batch_norms(self) -> Iterator[nn.modules.batchnorm._BatchNorm]:
        for module in self.flatten_modules(self.frozen):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                yield module

    # -- BaseFinetuning hooks -----------------------------------------------------------------------
    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.frozen = self.frozen_stages(pl_module)
        for module in self.frozen:
            module.requires_grad_(False)
        self._set_frozen_bn_mode()

    def _set_frozen_bn_mode(self) -> None:
        if self.frozen_bn_eval:
            for bn in self._batch_norms():
                bn.eval()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)  # resume: re-adds the param groups added at unfreeze time
        optimizer = trainer.optimizers[0]
        if self.backbone_lr_scale != 1.0 and _group(optimizer, "backbone") is not None:
            set_base_lr(trainer, "backbone", _base_lr(_group(optimizer, "head")) * self.backbone_lr_scale)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function
        self._set_frozen_bn_mode()  # whatever called .train() on the whole model since
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in pl_module.parameters())
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(trainer.optimizers[0].param_groups)}
        changed = bool(self.phases) and self.phases[-1]["trainable"] != trainable
        if not self.phases or changed:
            log.info("epoch %d: %s of %s parameters trainable; LR %s", trainer.current_epoch, trainable, total, lrs)
        self.phases.append({"epoch": trainer.current_epoch, "trainable": trainable, "total": total, "lr": lrs})
        if changed:  # an unfreeze: the next point of `ModelCostReport`'s `model/params_trainable` (step 0)
            for logger in trainer.loggers:
                logger.log_metrics({"model/params_trainable": trainable}, step=trainer.global_step)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch or not self.frozen:
            return  # (epoch > unfreeze_at_epoch: a resumed run, whose param groups are restored)
        for module in self.frozen:
            module.requires_grad_(True)
        for bn in self._batch_norms():
            bn.train()
        frozen, self.frozen = self.frozen, []
        trainer = pl_module.trainer
        head = _group(optimizer, "head")
        head_lr = self.unfreeze_lr if self.unfreeze_lr is not None else _base_lr(head)
        backbone_lr = head_lr * self.backbone_lr_scale
        params = self.filter_on_optimizer(optimizer, [p for m in frozen for p in m.parameters()])
        backbone = _group(optimizer, "backbone")
        if backbone is None:
            optimizer.add_param_group({"name": "backbone", "params": params, "lr": backbone_lr})
        else:  # `partial` with a later unfreeze: the trained stages already form the group
            backbone["params"].extend(params)
        set_base_lr(trainer, "backbone", backbone_lr)
        set_base_lr(trainer, "head", head_lr)


def _group(optimizer: Optimizer, name: str) -> dict[str, Any] | None:
    return next((g for g in optimizer.param_groups if g.get("name") == name), None)


def _base_lr(group: dict[str, Any]) -> float:
    """The LR a group's schedule scales (`initial_lr`, set by schedulers), its LR without a scheduler."""
    return group.get("initial_lr", group["lr"])


def set_base_lr(trainer: pl.Trainer, name: str, base_lr: float) -> None:
    """Give param group `name` the base LR `base_lr`, at the schedule's current point, in every scheduler.

    The current point is read from the head group (current LR / base LR), which is always scheduled.
    """
    optimizer = trainer.optimizers[0]
    groups = optimizer.param_groups
    head = _group(optimizer, "head")
    progress = head["lr"] / _base_lr(head) if head is not None else 1.0
    index = next(i for i, g in enumerate(groups) if g.get("name") == name)
    groups[index]["initial_lr"] = base_lr
    groups[index]["lr"] = base_lr * progress
    for scheduler in nested_schedulers([config.scheduler for config in trainer.lr_scheduler_configs]):
        base_lrs = getattr(scheduler, "base_lrs", None)
        if base_lrs is None:
            continue
        while len(base_lrs) < len(groups):  # a group added after the scheduler was built
            base_lrs.append(base_lr)
        base_lrs[index] = base_lr
        set_last_lrs(scheduler, [g["lr"] for g in groups])
