"""What the inference tasks (predict, explain) share: input files, the checkpoint's eval transform,
and a batched forward pass with optional flip test-time augmentation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_resnet.data.images import BadImageError, is_image_file, load_rgb
from lightning_resnet.data.transforms import build_transform
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.classifier import ResNetClassifier

log = logging.getLogger(__name__)


def list_images(input_path: str | Path) -> list[Path]:
    """`input` as a list of image files: the file itself, or a folder's images (recursive, sorted)."""
    path = Path(input_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"input={path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    images = [p for p in files if is_image_file(p)]
    if len(images) < len(files):
        log.info("input=%s: %d non-image files ignored (by extension)", path, len(files) - len(images))
    if not images:
        raise ConfigError(f"input={path}: no image files (looked for the usual extensions, recursively)")
    return images


def eval_transform(model: ResNetClassifier) -> Callable:
    """The eval transform the checkpoint was trained with: resize, float, normalise."""
    spec = model.eval_transform
    if not spec:
        raise ConfigError("ckpt_path: the checkpoint has no eval transform (written by an older version?)")
    return build_transform(spec["mean"], spec["std"], resize=spec["image_size"])


@dataclass
class ImageFiles(Dataset):
    """Image files through a transform; an unreadable file yields `ok=False` and its reason is kept."""

    paths: list[Path]
    transform: Callable
    image_size: int
    errors: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        try:
            return self.transform(load_rgb(self.paths[index])), index, True
        except BadImageError as err:
            self.errors[index] = err.reason
            return torch.zeros(3, self.image_size, self.image_size), index, False


def image_loader(model: ResNetClassifier, paths: list[Path], batch_size: int = 64) -> DataLoader:
    dataset = ImageFiles(paths, eval_transform(model), model.eval_transform["image_size"])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def resolve_device(name: str) -> torch.device:
    """`auto` = CUDA when available, else CPU; otherwise any torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r}: {err}; valid: auto, cpu, cuda, cuda:N, mps") from None


@torch.no_grad()
def class_probabilities(model: ResNetClassifier, images: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
    """Softmax over classes; with `flip_tta`, averaged with the horizontally flipped images'."""
    probs = model(images).softmax(dim=1)
    if flip_tta:
        probs = (probs + model(images.flip(dims=[3])).softmax(dim=1)) / 2
    return probs
