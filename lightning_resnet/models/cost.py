"""What a model costs: parameters (trainable / total) and multiply-accumulates of one forward pass.

MACs come from `torch.utils.flop_counter.FlopCounterMode` on a meta-device copy (no memory, no
compute). It counts FLOPs = 2 x MACs of convolutions and matrix products; papers' and torchvision's
"FLOPs"/"GFLOPS" of ResNets (1.8 G for resnet18 at 224 px) are multiply-adds, so the report gives MACs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelCost:
    params_total: int
    params_trainable: int
    macs: int
    image_size: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gmacs": round(self.gmacs, 4)}

    def summary(self) -> str:
        return (
            f"{self.params_trainable:,} of {self.params_total:,} parameters trainable; "
            f"{self.gmacs:.3f} GMACs per {self.image_size}x{self.image_size} image"
        )


def count_macs(model: nn.Module, image_size: int, channels: int = 3) -> int:
    """Multiply-accumulates of one eval-mode forward of a (1, channels, image_size, image_size) input."""
    meta_copy = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_copy(torch.empty(1, channels, image_size, image_size, device="meta"))
    return counter.get_total_flops() // 2


def model_cost(model: nn.Module, image_size: int, channels: int = 3) -> ModelCost:
    return ModelCost(
        params_total=sum(p.numel() for p in model.parameters()),
        params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=count_macs(model, image_size, channels),
        image_size=image_size,
    )
