"""`MetricHistory`: the epoch-level metrics of a run, kept in memory and in `history.json`.

It feeds `metrics.json` (best train/val accuracy over epochs, as the studies tabulate them),
learning curves and sweep summaries, without parsing logger files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

STAGES = ("train/", "val/")


class MetricHistory(pl.Callback):
    """Records `train/*` and `val/*` epoch metrics; writes `<dirpath>/history.json` each epoch."""

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.epochs: list[dict[str, float]] = []
        self._restored: list[dict[str, float]] | None = None
        self._epoch_lrs: dict[str, float] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Checkpoint state is applied only when fitting resumes: `trainer.test(ckpt_path="best")`
        # restores callbacks too, and must not roll the history back to the best epoch.
        if self._restored is not None:
            self.epochs, self._restored = self._restored, None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The LR this epoch trains with: epoch schedulers have already stepped by on_train_epoch_end.
        groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
        self._epoch_lrs = {f"lr/{g.get('name', i)}": float(g["lr"]) for i, g in enumerate(groups)}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._record(trainer, {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after validation in Lightning 2.x, so the row opened by validation is completed here.
        self._record(trainer, {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
        if self.dirpath and trainer.is_global_zero:
            path = Path(self.dirpath) / "history.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.epochs, indent=1))

    def _record(self, trainer: pl.Trainer, metrics: dict[str, Any]) -> None:
        epoch = trainer.current_epoch
        if not self.epochs or self.epochs[-1]["epoch"] != epoch:
            self.epochs.append({"epoch": epoch})
        row = self.epochs[-1]
        row.update({k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()})
        row.update(self._epoch_lrs)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = list(state_dict.get("epochs", []))
