"""Backbones by name: a registry of builders returning a network whose `fc` is the classifier layer.

`build_backbone` strips `fc` (replaced by the classifier's own head) and loads weights from a
torchvision weights enum name or a local file, offline-aware: a download that cannot happen fails
at once with the file name and the folder to put it in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import nn

from lightning_resnet.errors import ConfigError, WeightsUnavailableError
from lightning_resnet.models.plain import PLAIN_RESNETS
from lightning_resnet.models.resnet_v2 import RESNET_V2S

TORCHVISION_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)


def _torchvision_resnet(name: str) -> nn.Module:
    return torchvision.models.get_model(name, weights=None)


# name -> builder of a randomly initialised network with an `fc` layer; other modules register here.
BACKBONES: dict[str, Callable[[], nn.Module]] = {
    **{name: partial(_torchvision_resnet, name) for name in TORCHVISION_RESNETS},
    **PLAIN_RESNETS,
    **RESNET_V2S,
}


def build_backbone(arch: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """Build `arch` with `weights` (None = from scratch); returns (network without fc, feature width)."""
    if arch not in BACKBONES:
        raise ConfigError(f"model.arch={arch!r} is not a known backbone; valid: {', '.join(sorted(BACKBONES))}")
    net = BACKBONES[arch]()
    if weights is not None:
        load_backbone_weights(net, arch, weights)
    num_features = net.fc.in_features
    net.fc = nn.Identity()
    return net, num_features


def weights_enum(arch: str, name: str) -> torchvision.models.WeightsEnum:
    """The torchvision weights enum member `name` (e.g. IMAGENET1K_V2, DEFAULT) for `arch`."""
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError) as err:  # a backbone that torchvision does not publish weights for
        raise ConfigError(f"model.weights={name!r}: {arch} has no torchvision weights; pass a local file") from err
    valid = [w.name for w in enum] + ["DEFAULT"]
    if name not in valid:
        raise ConfigError(
            f"model.weights={name!r} is not a weights name for {arch}; valid: {', '.join(valid)}, "
            "null (train from scratch), or a path to a local .pt/.pth state dict"
        )
    return enum[name] if name != "DEFAULT" else enum.DEFAULT


def looks_like_path(weights: str) -> bool:
    return os.sep in weights or "/" in weights or Path(weights).suffix in {".pt", ".pth", ".ckpt", ".bin"}


def load_backbone_weights(net: nn.Module, arch: str, weights: str) -> None:
    """Load ImageNet or local weights into `net`; the original `fc` is kept only if its shape fits."""
    state = _read_state_dict(weights) if looks_like_path(str(weights)) else fetch_torchvision_weights(arch, weights)
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in mismatched}  # a differently sized fc is expected
    missing, unexpected = net.load_state_dict(state, strict=False)
    problems = [k for k in mismatched + missing if not k.startswith("fc.")] + unexpected
    if problems:
        raise ConfigError(
            f"model.weights={weights!r} does not fit {arch}: {len(problems)} keys missing, unexpected "
            f"or of another shape, e.g. {problems[:5]}"
        )


def _read_state_dict(path: str) -> Mapping[str, torch.Tensor]:
    """A state dict from a plain `.pt/.pth` file or a Lightning checkpoint of this package."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.weights: no such file {file}")
    obj = torch.load(file, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise ConfigError(f"model.weights: {file} holds no state dict")
    prefix = "backbone."  # a ResNetClassifier checkpoint: keep the backbone, drop the head
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def fetch_torchvision_weights(arch: str, name: str) -> Mapping[str, torch.Tensor]:
    """torchvision's state dict from the hub cache, downloading it if possible, else a clear error."""
    enum = weights_enum(arch, name)
    file_name = enum.url.rsplit("/", 1)[-1]
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except OSError as err:  # URLError, socket timeouts, DNS failures are all OSErrors
        raise WeightsUnavailableError(
            f"model.weights={name!r} needs {file_name} for {arch}, which is not cached and could not be "
            f"downloaded ({err}). Download {enum.url} on a machine with internet and put it at "
            f"{cache_dir / file_name} (set TORCH_HOME to move that folder), or pass "
            f"model.weights=/path/to/{file_name}, or model.weights=null to train from scratch."
        ) from err
