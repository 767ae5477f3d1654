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
Reduced-scale JPEG decoding: a JPEG read for a transform that resizes it to `draft_size` (see
`draft_side`) and at least `DRAFT_FACTOR` times that size on both sides is decoded at 1/2, 1/4 or 1/8
scale (libjpeg's DCT scaling, `Image.draft`): the smallest scale that still has `draft_size` pixels a
side, so the resize that follows still only shrinks. A 1024 x 768 photo trained at 224 px decodes at
512 x 384, in about half the time, and the resize has a quarter of the pixels to filter. The picture is
the same, the pixels differ slightly from a full decode's (DCT-domain scaling filters like a box, the
resize like a triangle): about 1 grey level on average at 224 px, a few at most on sharp edges
(`benchmarks/decode.py` measures it). Training, the pixel cache (`data.pixels`, whose fingerprint
names the rule) and prediction (`inference`) all read through here with the same `draft_size`, so they
see the same pixels; smaller JPEGs and every other format decode in full, bit-identical to a full
decode, and so does verification (no `draft_size`). Decoding memory is width x height x channels bytes
otherwise: shrinking a PNG after it is decoded (`Image.reduce`, `thumbnail`) saves no peak memory,
`max_pixels` is what bounds it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
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
# A JPEG at least this many times the transform's first resize on both sides decodes at reduced scale
# (1/2 is libjpeg's smallest step, so a smaller factor could not reduce anything).
DRAFT_FACTOR = 2
EXIF_ORIENTATION = 0x0112
CHECK_CHUNK = 64  # files a verification task checks
PROCESS_MIN_FILES = 2048  # fewer files are verified in threads (starting processes costs more than it saves)


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
    """By extension, ignoring hidden files such as `.DS_Store` or `._cat.jpg` (macOS resource forks). String
    operations, no `Path` parsing: the listing calls it for every file (1.28 M of them)."""
    name = os.path.basename(path)
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


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
        here = Path(directory)  # parsed once per folder; `here / name` parses only the name
        for name in sorted(files):
            if is_image_file(name):
                images.append(here / name)
            elif _visible(name):
                others.append(here / name)
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
    return image if image.mode == "RGB" else image.convert("RGB")


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
def _reading(path: str) -> Iterator[None]:
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


def _open(path: str, max_pixels: int | None) -> Image.Image:
    """`Image.open` (the header only) of a file that exists, is not empty and claims at most `max_pixels`.

    The file is `stat`ed only when it does not open, to say why (a dangling link, an empty file): a
    stat per image read is a network round trip on NFS, at every epoch."""
    _let_pil_open(max_pixels)
    try:
        image = Image.open(path)
    except OSError:  # UnidentifiedImageError included
        problem = _file_problem(Path(path))
        if problem:
            raise BadImageError(path, problem) from None
        raise
    pixels = image.size[0] * image.size[1]
    if max_pixels is not None and pixels > max_pixels:
        image.close()
        raise BadImageError(path, _too_large(pixels, max_pixels, image.size))
    return image


def check_header(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """What can be told without decoding (a readable file PIL identifies, within `max_pixels`), or a
    `BadImageError`: milliseconds per file, where `load_rgb` decodes it all."""
    path = os.fspath(path)
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
    resizes to next (see `draft_side`); a JPEG at least `DRAFT_FACTOR` times larger on both sides is
    then decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps `draft_size` pixels a side (square, so
    EXIF rotation cannot matter). An upright RGB file is returned as decoded, with no copy.
    """
    path = os.fspath(path)  # not a `Path`: parsing one costs a tenth of a small JPEG's decode
    with _reading(path):
        image = _open(path, max_pixels)
        try:
            if draft_size and min(image.size) >= DRAFT_FACTOR * draft_size:
                image.draft(None, (draft_size, draft_size))  # JPEG only: other formats ignore it
            image.load()
            rgb = _to_rgb(_upright(image), intensity)
        except BaseException:
            image.close()
            raise
        if rgb is not image:
            image.close()  # frees a multi-frame file's handle; `rgb` is a new image
        elif getattr(image, "fp", None) is not None or getattr(image, "map", None) is not None:
            rgb = image.copy()  # still reading from the file (a multi-frame TIFF, a memory-mapped BMP)
            image.close()
        return rgb


def _upright(image: Image.Image) -> Image.Image:
    """EXIF orientation applied (a new image), or `image` itself when it is upright: no copy."""
    if image.getexif().get(EXIF_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _problem(path: str, max_pixels: int | None, decode: bool) -> str | None:
    try:
        load_rgb(path, max_pixels=max_pixels) if decode else check_header(path, max_pixels)
    except BadImageError as err:
        return err.reason
    return None


def _problems(paths: Sequence[str], max_pixels: int | None, decode: bool) -> dict[str, str]:
    """{path: reason} of the bad files among `paths`: one worker's task."""
    found = {}
    for path in paths:
        reason = _problem(path, max_pixels, decode)
        if reason is not None:
            found[path] = reason
    return found


def _pool(workers: int, files: int, decode: bool) -> Executor:
    """Processes to decode many files (a forked copy of this one: no imports to repeat), else threads.

    Threads share the GIL, which reading an image holds for its Python part (opening, header parsing,
    EXIF): on small JPEGs most of the time, so threads decoding them use little more than one core.
    """
    if decode and workers > 1 and files >= PROCESS_MIN_FILES and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(workers)


def find_bad_images(
    paths: Sequence[str | Path],
    num_threads: int = 1,
    progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode: bool = True,
) -> dict[str, str]:
    """{path: reason} of the bad files: decoded in full, or with `decode=False` only their headers checked
    (`check_header`), by `num_threads` workers (`_pool`: processes or threads), `CHECK_CHUNK` files a task,
    so 1.28 M files are 20,000 tasks (not 1.28 M pending futures, a GB of them)."""
    paths = [str(p) for p in paths]
    chunks = [paths[start : start + CHECK_CHUNK] for start in range(0, len(paths), CHECK_CHUNK)]
    desc = "checking images" if decode else "checking image headers"
    bad: dict[str, str] = {}
    with (
        _pool(max(1, num_threads), len(paths), decode) as pool,
        tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar,
    ):
        check = partial(_problems, max_pixels=max_pixels, decode=decode)
        for chunk, found in zip(chunks, pool.map(check, chunks), strict=True):
            bad.update(found)
            bar.update(len(chunk))
    return bad


def format_problems(problems: dict[str, str]) -> str:
    """Every problem as an indented `path: reason` line, sorted by path."""
    return "\n".join(f"  {path}: {reason}" for path, reason in sorted(problems.items()))
