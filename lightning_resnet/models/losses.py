"""Classification losses. Class weights are non-persistent buffers so checkpoints stay loss-agnostic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_resnet.errors import ConfigError


def balanced_class_weights(class_counts: Sequence[int]) -> list[float]:
    """scikit-learn's 'balanced' weights, n_samples / (n_classes * count_c), from its own `compute_class_weight`.

    It takes labels, so the counts are expanded into one label per training sample (a few MB at most).
    An empty class would get an infinite weight, hence the error naming it.
    """
    empty = [i for i, c in enumerate(class_counts) if c <= 0]
    if empty:
        raise ConfigError(f"loss.class_weights=balanced: classes {empty} have no training samples")
    classes = np.arange(len(class_counts))
    labels = np.repeat(classes, class_counts)
    from sklearn.utils.class_weight import compute_class_weight  # only for `loss.class_weights=balanced`

    return compute_class_weight("balanced", classes=classes, y=labels).tolist()


def _weight_buffer(module: nn.Module, name: str, values: Sequence[float] | float | None, key: str) -> None:
    tensor = None if values is None else torch.as_tensor(values, dtype=torch.float32)
    if tensor is not None and (tensor < 0).any():
        raise ConfigError(f"{key} must be non-negative, got {list(values)}")
    module.register_buffer(name, tensor, persistent=False)


def _check_num_classes(weight: torch.Tensor | None, num_classes: int, key: str) -> None:
    if weight is not None and weight.ndim == 1 and weight.numel() != num_classes:
        raise ConfigError(f"{key} has {weight.numel()} entries but the model has {num_classes} classes")


class CrossEntropyLoss(nn.Module):
    """Cross-entropy with label smoothing and optional per-class weights; accepts soft targets (MixUp)."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing}")
        if isinstance(class_weights, str):
            raise ConfigError(
                f"loss.class_weights={class_weights!r} must be resolved to numbers before building the loss; "
                "valid: null, balanced (resolved from the training labels) or a list of floats"
            )
        self.label_smoothing = label_smoothing
        _weight_buffer(self, "weight", class_weights, "loss.class_weights")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_num_classes(self.weight, logits.shape[1], "loss.class_weights")
        return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.label_smoothing)


class FocalLoss(nn.Module):
    """Multi-class softmax focal loss (Lin et al. 2017): mean of -alpha_t (1 - p_t)^gamma log p_t.

    `alpha` is None (no weighting), a scalar applied to every class, or one weight per class.
    With gamma=0 and alpha=None this is exactly cross-entropy. torchvision's `sigmoid_focal_loss`
    is the one-vs-rest binary form and gives different values, hence this module.
    Soft targets (MixUp/CutMix) use the expectation over the target distribution.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {gamma}")
        if alpha is not None and not isinstance(alpha, int | float) and len(alpha) == 0:
            raise ConfigError("loss.alpha must be null, a number or a non-empty list of per-class weights")
        self.gamma = float(gamma)
        _weight_buffer(self, "alpha", alpha, "loss.alpha")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_num_classes(self.alpha, logits.shape[1], "loss.alpha")
        log_p = F.log_softmax(logits.float(), dim=1)
        soft = target if target.ndim == 2 else F.one_hot(target, logits.shape[1]).to(log_p.dtype)
        focal = (1.0 - log_p.exp()).pow(self.gamma) * -log_p  # per class: (1-p)^gamma * -log p
        if self.alpha is not None:
            focal = focal * self.alpha  # scalar or per-class weight, broadcast over the class axis
        return (soft * focal).sum(dim=1).mean()
