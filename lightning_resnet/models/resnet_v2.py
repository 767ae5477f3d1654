"""Pre-activation ResNetV2 (He et al., "Identity Mappings in Deep Residual Networks", 2016), Keras' variant.

Written to match `keras.applications.ResNet50V2/101V2/152V2` layer for layer, so that Keras ImageNet
weights convert onto it (`python -m lightning_resnet.convert keras-resnetv2`). Where Keras differs from
torchvision's and timm's ResNets:

- each stage downsamples in its LAST block (3x3 conv stride 2, shortcut a 1x1 max-pool of stride 2);
  the FIRST block of every stage has a 1x1 projection shortcut of stride 1, applied to the
  pre-activated input; identity/max-pool shortcuts take the raw input;
- the stem is a 7x7/2 conv WITH bias and no BatchNorm/ReLU, then max-pooling over a ZERO-padded map
  (the conv output may be negative, so this differs from PyTorch's -inf padding);
- bias on the stem conv, the shortcut projection and each block's last 1x1 conv; none on the others;
- a final BatchNorm + ReLU (`post_bn`) before pooling, as the blocks end without one;
- BatchNorm epsilon 1.001e-5 and Keras momentum 0.99 (PyTorch momentum 0.01).

Keras' explicit ZeroPadding2D(1) + "valid" 3x3 conv equals PyTorch's `padding=1`, strided or not.
Module names follow torchvision (`conv1`, `layer1..4`, `fc`) so fine-tuning stages are named alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

KERAS_BN_EPS = 1.001e-5
KERAS_BN_MOMENTUM = 1 - 0.99  # Keras' moving average keeps 0.99 of the old value; PyTorch's momentum is the new part


def keras_batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


class PreActBottleneck(nn.Module):
    """BN-ReLU -> 1x1 -> BN-ReLU -> 3x3 (stride) -> BN-ReLU -> 1x1 (x4), plus the shortcut (Keras' block_v2)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, project: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.preact_bn = keras_batch_norm(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.project = project
        if project:
            self.shortcut: nn.Module = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True)
        elif stride > 1:
            self.shortcut = nn.MaxPool2d(1, stride=stride)
        else:
            self.shortcut = nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = keras_batch_norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = keras_batch_norm(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.relu(self.preact_bn(x))
        shortcut = self.shortcut(preact if self.project else x)
        out = self.relu(self.bn1(self.conv1(preact)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.conv3(out) + shortcut


class ResNetV2(nn.Module):
    """Keras' ResNetV2 with `blocks_per_stage` bottlenecks; `fc` is the ImageNet classifier (`predictions`)."""

    def __init__(self, blocks_per_stage: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=True)
        self.maxpool = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, stride=2))
        in_channels = 64
        # Keras' stack_fn: widths 64/128/256/512; the last stage does not downsample (stride1=1).
        stages = zip(blocks_per_stage, (64, 128, 256, 512), (2, 2, 2, 1), strict=True)
        for index, (blocks, width, stride) in enumerate(stages):
            stage = []
            for block in range(blocks):
                last = block == blocks - 1
                stage.append(PreActBottleneck(in_channels, width, stride=stride if last else 1, project=block == 0))
                in_channels = width * PreActBottleneck.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.post_bn = keras_batch_norm(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(self.relu(self.post_bn(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


RESNET_V2_LAYOUTS: dict[str, tuple[int, int, int, int]] = {
    "resnet50v2": (3, 4, 6, 3),
    "resnet101v2": (3, 4, 23, 3),
    "resnet152v2": (3, 8, 36, 3),
}

RESNET_V2S: dict[str, Callable[[], nn.Module]] = {
    name: partial(ResNetV2, layout) for name, layout in RESNET_V2_LAYOUTS.items()
}
