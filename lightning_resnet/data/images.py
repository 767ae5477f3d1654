"""Reading images robustly: every file becomes an RGB PIL image or a `BadImageError` naming it.

Handles grayscale, palette, RGBA (composited on white), CMYK, 16-bit and EXIF-rotated files;
zero-byte, truncated and undecodable files raise instead of crashing a DataLoader worker later.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from lightning_resnet.errors import ConfigError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


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


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / 32-bit grayscale: rescale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode `path` fully (so truncation shows now), apply EXIF orientation, convert to RGB."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
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
