"""Plain nets: the residual twins' blocks without the shortcut, nothing else changed."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lightning_resnet.models.plain import PLAIN_RESNETS

TWINS = {f"plain{depth}": f"resnet{depth}" for depth in (18, 34, 50, 101, 152)}


@pytest.mark.parametrize("plain", sorted(TWINS))
def test_same_parameters_as_the_twin_minus_the_projection_convs(plain):
    with torch.device("meta"):
        net, twin = PLAIN_RESNETS[plain](), torchvision.models.get_model(TWINS[plain])
    shapes = {n: p.shape for n, p in net.named_parameters()}
    twin_shapes = {n: p.shape for n, p in twin.named_parameters() if ".downsample." not in n}
    assert shapes == twin_shapes
    projections = sum(p.numel() for n, p in twin.named_parameters() if ".downsample." in n)
    assert projections > 0
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in twin.parameters()) - projections


def _blocks(net: nn.Module) -> list[nn.Module]:
    return [block for stage in (net.layer1, net.layer2, net.layer3, net.layer4) for block in stage]


@pytest.mark.parametrize("plain", ["plain34", "plain50"])
def test_no_block_passes_its_input_through(plain):
    """With each block's last BatchNorm zeroed, F(x) = 0: a residual block then outputs relu(x + shortcut),
    a plain block zeros. Forward hooks check every block of both nets on the same input."""
    torch.manual_seed(0)
    net, twin = PLAIN_RESNETS[plain]().eval(), torchvision.models.get_model(TWINS[plain]).eval()
    outputs: dict[str, list[torch.Tensor]] = {"plain": [], "residual": []}
    for key, model in (("plain", net), ("residual", twin)):
        for block in _blocks(model):
            last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
            nn.init.zeros_(last_bn.weight)
            nn.init.zeros_(last_bn.bias)
            block.register_forward_hook(lambda module, args, out, key=key: outputs[key].append(out))
    with torch.no_grad():
        net(torch.rand(1, 3, 64, 64))
        twin(torch.rand(1, 3, 64, 64))
    assert len(outputs["plain"]) == len(_blocks(net)) > 0
    assert all(out.abs().max() == 0 for out in outputs["plain"])
    assert all(out.abs().max() > 0 for out in outputs["residual"])
