"""Learning-rate schedules as Lightning `lr_scheduler_config` dicts.

A scheduler config is a `_partial_` of one of these functions; the classifier calls it with the
optimizer and the run's length (`max_epochs`, `steps_per_epoch`), so `T_max` can default to the run.
"""

from __future__ import annotations

from typing import Any, Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from lightning_resnet.errors import ConfigError


def cosine(
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int = 1,
    T_max: float | None = None,  # torch's name
    warmup_epochs: float = 0.0,
    warmup_start_factor: float = 0.01,
    eta_min: float = 0.0,
    interval: Literal["epoch", "step"] = "epoch",
) -> dict[str, Any]:
    """Cosine annealing over `T_max` epochs (default: the whole run after warmup), after a linear warmup.

    `T_max` and `warmup_epochs` are in epochs whatever the interval; with interval=step they are
    converted to optimizer steps, so the curve is the same, only smoother.
    """
    if interval not in ("epoch", "step"):
        raise ConfigError(f"scheduler.interval must be 'epoch' or 'step', got {interval!r}")
    if warmup_epochs < 0 or (T_max is not None and T_max <= 0):
        raise ConfigError(f"scheduler: need warmup_epochs >= 0 and T_max > 0, got {warmup_epochs}, {T_max}")
    unit = steps_per_epoch if interval == "step" else 1
    warmup = round(warmup_epochs * unit)
    t_max = round((T_max if T_max is not None else max_epochs - warmup_epochs) * unit)
    cosine_part = CosineAnnealingLR(optimizer, T_max=max(1, t_max), eta_min=eta_min)
    if warmup == 0:
        scheduler = cosine_part
    else:
        ramp = LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=warmup)
        scheduler = SequentialLR(optimizer, [ramp, cosine_part], milestones=[warmup])
    return {"scheduler": scheduler, "interval": interval, "frequency": 1}
