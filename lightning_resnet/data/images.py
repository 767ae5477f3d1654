"""Finding and reading images: the one lister, and every file as an RGB PIL image or a `BadImageError`.

Handles grayscale, palette, RGBA (composited on white), CMYK, 16-bit and EXIF-rotated files;
zero-byte, truncated and undecodable files raise instead of crashing a DataLoader worker later.

High bit depths keep their absolute intensity: a 16-bit value v becomes round(v * 255 / 65535), the
same for every image, so a dark and a bright scan of one scene stay dark and bright (32-bit integer
images are read on the same 16-bit scale, float images as [0, 1]; both clipped). Stretching each image
between its own minimum and maximum is the explicit `intensity="per_image"`.

Size: a file whose header claims more than `max_pixels` pixels (default `DEFAULT_MAX_PIXELS`, PIL's own
error threshold) is a bad image, named with its size, before a byte of it is decoded: a 100 KB PNG can
claim 30000 x 30000 pixels and take gigabytes to decode (a decompression bomb). `max_pixels=None` lifts
the limit, PIL's process-wide one (`Image.MAX_IMAGE_PIXELS`) included, which is raised as needed.
Decoding memory is width x height x channels bytes for every format but one: a JPEG over
`DRAFT_ABOVE_PIXELS` pixels, read for a transform that resizes it to `draft_size`, is decoded at 1/2, 1/4
or 1/8 scale (libjpeg's DCT scaling, `Image.draft`), the smallest that still has `draft_size` pixels a side.
Its pixels then differ slightly from a full decode's (the same picture); smaller JPEGs and every other
format decode in full, so their pixels are exactly those of a full decode. (Shrinking a PNG after it is
decoded, `Image.reduce` or `thumbnail`, saves no peak memory: there `max_pixels` is what bounds it.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from lightning_resnet.errors import ConfigError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
SKIPPED_DIRS = frozenset({"__MACOSX"})  # macOS zip metadata; hidden folders are skipped too
INTENSITY = ("fixed", "per_image")
BAD_IMAGE_POLICIES = ("error", "skip")  # stop listing every bad file, or leave them out naming them
# PIL's own error threshold (2 x its default Image.MAX_IMAGE_PIXELS): no image PIL read before is refused,
# and one decode stays under ~540 MB (RGB); `data.max_image_pixels` changes it.
DEFAULT_MAX_PIXELS = 178_956_970
# JPEGs over 16.8 MP (4096 x 4096) are decoded at reduced scale when the transform shrinks them anyway;
# smaller ones (every 12 MP phone photo) decode in full, bit-identical to before.
DRAFT_ABOVE_PIXELS = 4096 * 4096


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


def draft_side(size: int | None, crop_ratio: float | None = None) -> int | None:
    """The side `transforms.resize_ops(size, crop_ratio)` resizes to first (None: no resize): the least a
    reduced-scale JPEG decode (`load_rgb(draft_size=...)`) must keep."""
    if not size:
        return None
    return size if crop_ratio is None else round(size / crop_ratio)


def _file_problem(path: Path) -> str | None:
    """Why `path` is no readable file at all (a dangling symbolic link, an empty file), or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "no such file (deleted after it was listed?)"
    except OSError as err:  # a symbolic link loop, no permission
        return f"cannot read ({err.strerror or err})"
    return "empty file (0 bytes)" if size == 0 else None


def _too_large(pixels: int, limit: int, size: tuple[int, int] | None = None) -> str:
    dims = f"{size[0]}x{size[1]} = " if size else ""
    return f"{dims}{pixels:,} pixels, over the limit of {limit:,} (data.max_image_pixels; a decompression bomb?)"


def _let_pil_open(max_pixels: int | None) -> None:
    """Raise PIL's process-wide bomb limit (it refuses over 2 x `Image.MAX_IMAGE_PIXELS` at open) so that
    `max_pixels` is the limit that applies; it is never lowered."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and (max_pixels is None or max_pixels > 2 * current):
        Image.MAX_IMAGE_PIXELS = None if max_pixels is None else -(-max_pixels // 2)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Every way PIL fails on a file, as a `BadImageError` naming it."""
    try:
        yield
    except BadImageError:
        raise
    except Image.DecompressionBombError as err:  # PIL's own limit, checked at open (or per GIF frame)
        found = re.findall(r"(\d+) pixels", str(err))
        reason = _too_large(int(found[0]), int(found[1])) if len(found) == 2 else f"decompression bomb ({err})"
        raise BadImageError(path, reason) from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image PIL can identify") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken headers
        raise BadImageError(path, f"cannot decode ({err})") from None


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """`Image.open` (the header only) of a file that exists, is not empty and claims at most `max_pixels`."""
    problem = _file_problem(path)
    if problem:
        raise BadImageError(path, problem)
    _let_pil_open(max_pixels)
    image = Image.open(path)
    pixels = image.size[0] * image.size[1]
    if max_pixels is not None and pixels > max_pixels:
        image.close()
        raise BadImageError(path, _too_large(pixels, max_pixels, image.size))
    return image


def check_header(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """What can be told without decoding (a readable file PIL identifies, within `max_pixels`), or a
    `BadImageError`: milliseconds per file, where `load_rgb` decodes it all."""
    path = Path(path)
    with _reading(path), _open(path, max_pixels):
        pass


def load_rgb(
    path: str | Path,
    intensity: str = "fixed",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode `path` fully (so truncation shows now), apply EXIF orientation, convert to RGB.

    `intensity`: how 16-/32-bit images become 8 bits, `fixed` (the type's range, the same for every
    image) or `per_image` (each image stretched between its own min and max). `max_pixels`: a larger
    image is a `BadImageError` before it is decoded (None: no limit). `draft_size`: the side the caller
    resizes to next (see `draft_side`); a JPEG over `DRAFT_ABOVE_PIXELS` is then decoded at the smallest
    1/2, 1/4 or 1/8 scale that keeps `draft_size` pixels a side (square, so EXIF rotation cannot matter).
    """
    path = Path(path)
    with _reading(path), _open(path, max_pixels) as image:
        width, height = image.size
        if draft_size and width * height > DRAFT_ABOVE_PIXELS and min(width, height) >= 2 * draft_size:
            image.draft(None, (draft_size, draft_size))  # JPEG only: other formats ignore it
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image, intensity)


def _problem(path: str, max_pixels: int | None, decode: bool) -> str | None:
    try:
        load_rgb(path, max_pixels=max_pixels) if decode else check_header(path, max_pixels)
    except BadImageError as err:
        return err.reason
    return None


def find_bad_images(
    paths: Sequence[str | Path],
    num_threads: int = 1,
    progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode: bool = True,
) -> dict[str, str]:
    """{path: reason} of the bad files: decoded in full (in threads: Pillow releases the GIL while decoding),
    or with `decode=False` only their headers checked (`check_header`)."""
    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        results = pool.map(partial(_problem, max_pixels=max_pixels, decode=decode), paths, chunksize=64)
        desc = "checking images" if decode else "checking image headers"
        results = tqdm(results, total=len(paths), desc=desc, unit="img", disable=not progress)
        return {path: reason for path, reason in zip(paths, results, strict=True) if reason is not None}


def format_problems(problems: dict[str, str]) -> str:
    """Every problem as an indented `path: reason` line, sorted by path."""
    return "\n".join(f"  {path}: {reason}" for path, reason in sorted(problems.items()))
