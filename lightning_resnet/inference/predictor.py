"""The one prediction path: image files -> the checkpoint's preprocessing -> class probabilities.

The predict task, the explain task and the Kaggle file at the end of a training run all come here:
the same image listing as the data modules (`data.images.list_images`), the same bad-image check
(`find_bad_images`, with `bad_images: error | skip`), the same dataset (`ImageFileDataset`) and the
transform the checkpoint's `preprocessing` describes (`data.transforms.eval_transform`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lightning_resnet.data.datasets import ImageFileDataset
from lightning_resnet.data.images import (
    BAD_IMAGE_POLICIES,
    BadImagesError,
    draft_side,
    find_bad_images,
    format_problems,
    list_images,
)
from lightning_resnet.data.transforms import eval_transform
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.utils import available_cpus

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    file: str  # relative to the input folder, or the file's name
    probs: torch.Tensor | None  # None: the file could not be read
    error: str = ""


def input_images(input_path: str | Path, recursive: bool = True) -> list[Path]:
    """`input` as image files: the file itself, or a folder's images (sorted; hidden files skipped)."""
    path = Path(input_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"input={path}: no such file or folder")
    images, others = list_images(path, recursive)
    if others:
        log.info("input=%s: %d files that are not images ignored, e.g. %s", path, len(others), others[:3])
    if not images:
        raise ConfigError(f"input={path}: no image files (looked for the usual extensions)")
    return images


def image_dataset(model: ResNetClassifier, paths: Sequence[Path]) -> ImageFileDataset:
    """`paths` as the model's inputs: read and transformed as the checkpoint's preprocessing says.

    Read as training read them: the same intensity mapping and the same reduced-scale decode of very
    large JPEGs (`draft_size`); the pixel limit is the default one, as in `check_images`.
    """
    spec = model.preprocessing
    if not spec:
        raise ConfigError("ckpt_path: the checkpoint has no preprocessing (written by an older version?)")
    draft = draft_side(spec["image_size"], spec.get("crop_ratio"))
    return ImageFileDataset(
        paths, transform=eval_transform(spec), intensity=spec.get("intensity", "fixed"), draft_size=draft
    )


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


def check_images(paths: Sequence[Path], bad_images: str) -> dict[str, str]:
    """{path: reason} of the files that do not decode; with `bad_images=error`, an error listing them."""
    if bad_images not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"bad_images={bad_images!r}; valid: {', '.join(BAD_IMAGE_POLICIES)}")
    bad = find_bad_images(paths, available_cpus())
    if bad and bad_images == "error":
        raise BadImagesError(bad, f"{len(bad)} unreadable files:\n{format_problems(bad)}")
    if bad:
        log.warning(
            "%d of %d inputs cannot be read, predicted as errors:\n%s", len(bad), len(paths), format_problems(bad)
        )
    return bad


def predict_images(
    model: ResNetClassifier,
    paths: Sequence[Path],
    root: Path | None = None,
    batch_size: int = 64,
    flip_tta: bool = False,
    bad_images: str = "skip",
    num_workers: int = 0,
) -> list[Prediction]:
    """Class probabilities of every file in `paths`, in order; a bad file gets an error instead (`skip`).

    File names are relative to `root` when given. The model stays on its device.
    """
    bad = check_images(paths, bad_images)
    good = [p for p in paths if str(p) not in bad]
    loader = DataLoader(image_dataset(model, good), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(model.parameters()).device
    probs = [class_probabilities(model, images.to(device), flip_tta).cpu() for images, _ in loader]
    by_path = dict(zip(map(str, good), torch.cat(probs) if probs else [], strict=True))
    return [Prediction(_name(p, root), by_path.get(str(p)), bad.get(str(p), "")) for p in paths]


def _name(path: Path, root: Path | None) -> str:
    return str(path.relative_to(root)) if root is not None and root.is_dir() else path.name
