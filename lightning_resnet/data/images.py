"""Finding and reading images: the one lister, and every file as an RGB PIL image or a `BadImageError`.

Handles grayscale, palette, RGBA (composited on white), CMYK, 16-bit and EXIF-rotated files;
zero-byte, truncated and undecodable files raise instead of crashing a DataLoader worker later.

High bit depths keep their absolute intensity: a 16-bit value v becomes round(v * 255 / 65535), the
same for every image, so a dark and a bright scan of one scene stay dark and bright (32-bit integer
images are read on the same 16-bit scale, float images as [0, 1]; both clipped). Stretching each image
between its own minimum and maximum is the explicit `intensity="per_image"`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from lightning_resnet.errors import ConfigError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
SKIPPED_DIRS = frozenset({"__MACOSX"})  # macOS zip metadata; hidden folders are skipped too
INTENSITY = ("fixed", "per_image")


class BadImageError(ValueError):
    """A file that should be an image cannot be decoded; `path` and `reason` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class BadImagesError(ConfigError):
    """The dataset has files that cannot be read; `problems` maps each path to its reason."""

    def __init__(self, problems: dict[str, str], message: str) -> None:
        super().__init__(message)
        self.problems = problems


def is_image_file(path: str | Path) -> bool:
    """By extension, ignoring hidden files such as `.DS_Store` or `._cat.jpg` (macOS resource forks)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in SKIPPED_DIRS


def list_images(folder: str | Path, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, sorted; hidden files and folders and `__MACOSX` skipped.

    Every listing of image files goes through here: data modules, prediction, dataset preparation.
    """
    images: list[Path] = []
    others: list[Path] = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if _visible(d)) if recursive else []
        for name in sorted(files):
            path = Path(directory, name)
            if is_image_file(path):
                images.append(path)
            elif _visible(name):
                others.append(path)
    return images, others


def list_class_folders(folder: str | Path) -> list[Path]:
    """The visible sub-folders of `folder`, sorted: the classes of an ImageFolder layout."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and _visible(p.name))


def _high_bit_depth_to_8_bits(image: Image.Image, intensity: str) -> Image.Image:
    """16-/32-bit integer or float grayscale as 8-bit `L` (see the module docstring for the scale)."""
    array = np.asarray(image, dtype=np.float64)
    if intensity == "per_image":
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    else:
        scaled = array if image.mode == "F" else array / 65535.0
    return Image.fromarray((scaled.clip(0.0, 1.0) * 255.0).round().astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image, intensity: str) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_bit_depth_to_8_bits(image, intensity)
    return image.convert("RGB")


def load_rgb(path: str | Path, intensity: str = "fixed") -> Image.Image:
    """Decode `path` fully (so truncation shows now), apply EXIF orientation, convert to RGB.

    `intensity`: how 16-/32-bit images become 8 bits, `fixed` (the type's range, the same for every
    image) or `per_image` (each image stretched between its own min and max).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image, intensity)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image PIL can identify") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken headers
        raise BadImageError(path, f"cannot decode ({err})") from None


def _problem(path: str) -> str | None:
    try:
        load_rgb(path)
    except BadImageError as err:
        return err.reason
    return None


def find_bad_images(paths: Sequence[str | Path], num_threads: int = 1, progress: bool = False) -> dict[str, str]:
    """Decode every file (in threads: Pillow releases the GIL while decoding); {path: reason} of the bad ones."""
    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        results = pool.map(_problem, paths, chunksize=64)
        results = tqdm(results, total=len(paths), desc="checking images", unit="img", disable=not progress)
        return {path: reason for path, reason in zip(paths, results, strict=True) if reason is not None}


def format_problems(problems: dict[str, str]) -> str:
    """Every problem as an indented `path: reason` line, sorted by path."""
    return "\n".join(f"  {path}: {reason}" for path, reason in sorted(problems.items()))
