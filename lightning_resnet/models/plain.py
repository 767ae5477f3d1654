"""Plain (non-residual) twins of torchvision's ResNets, for residual-vs-plain studies (He et al. 2016, §4.1).

A plain net is the same stem, stages, blocks, convolutions and BatchNorms as its ResNet twin; only the
identity/projection shortcut is gone, so each block computes `relu(F(x))` instead of `relu(F(x) + x)`
and the projection convs (`downsample`) do not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


class PlainBasicBlock(BasicBlock):
    """torchvision's BasicBlock without the shortcut."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class PlainBottleneck(Bottleneck):
    """torchvision's Bottleneck (stride on the 3x3 conv, "ResNet v1.5") without the shortcut."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)))


# name -> (block, blocks per stage), as torchvision's resnet18 ... resnet152.
PLAIN_LAYOUTS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "plain18": (PlainBasicBlock, [2, 2, 2, 2]),
    "plain34": (PlainBasicBlock, [3, 4, 6, 3]),
    "plain50": (PlainBottleneck, [3, 4, 6, 3]),
    "plain101": (PlainBottleneck, [3, 4, 23, 3]),
    "plain152": (PlainBottleneck, [3, 8, 36, 3]),
}


def plain_resnet(name: str, num_classes: int = 1000) -> ResNet:
    """A randomly initialised plain net (torchvision's `ResNet` class, so layer names match the twin)."""
    block, layers = PLAIN_LAYOUTS[name]
    return ResNet(block, layers, num_classes=num_classes)


PLAIN_RESNETS: dict[str, Callable[[], nn.Module]] = {name: partial(plain_resnet, name) for name in PLAIN_LAYOUTS}
