"""Open Images boxes -> an ImageFolder of letterboxed crops (the surveillance study's data).

`python -m lightning_resnet.prepare openimages --images DIR --detections CSV --classes CSV --out DIR`

Every box of a mapped class is cut out of its image, resized keeping its aspect ratio so the longer
side fits the canvas, and pasted at a seeded random offset on a canvas filled with the median colour
of the crop's four corners. The crops are split 8:2 (stratified, seeded) into `<out>/train/<group>/`
and `<out>/val/<group>/`. Everything that decides a crop's pixels, name and split is derived from the
inputs and the seed, so a re-run finds its files already there and writes nothing.

The work runs in three passes: read the CSVs (main process), read every image's size from its header
(parallel; enough to drop boxes that are too small, so the split is drawn over the crops that will
exist), then decode each image once and write its crops (parallel).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import json
import os
import re
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from PIL import ExifTags, Image
from tqdm import tqdm

from lightning_resnet import CONFIG_DIR
from lightning_resnet.data.images import BadImageError, is_image_file, list_images, load_rgb
from lightning_resnet.data.splits import split_indices
from lightning_resnet.errors import ConfigError
from lightning_resnet.utils import available_cpus

DEFAULT_GROUPS = CONFIG_DIR / "prepare" / "openimages_groups.yaml"
SPLIT_NAMES = ("train", "val")
REPORT_NAME = "prepare_report.json"
BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
# `--exclude` choices: boxes with this Open Images attribute set to 1 are skipped.
ATTRIBUTE_COLUMNS = {
    "group_of": "IsGroupOf",
    "depiction": "IsDepiction",
    "occluded": "IsOccluded",
    "truncated": "IsTruncated",
    "inside": "IsInside",
}
IMAGE_FORMATS = {"jpg": ("JPEG", {"quality": 95}), "png": ("PNG", {})}

# Skip reasons, as they appear in the report.
NOT_MAPPED = "label not mapped"
INVALID_BOX = "invalid coordinates"
IMAGE_MISSING = "image missing"
UNREADABLE = "unreadable image"
TOO_SMALL = "too small"

PixelBox = tuple[int, int, int, int]  # (left, top, right, bottom), as PIL crops
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Box:
    """One detections.csv row of a mapped class; coordinates are fractions of the image size."""

    image_id: str
    index: int  # the row's position among its image's rows: names the file and seeds its offset
    group: str
    xmin: float
    xmax: float
    ymin: float
    ymax: float

    @property
    def name(self) -> str:
        return f"{self.image_id}_{self.index}"

    def pixels(self, width: int, height: int) -> PixelBox:
        return (
            round(self.xmin * width),
            round(self.ymin * height),
            round(self.xmax * width),
            round(self.ymax * height),
        )


@dataclass(frozen=True)
class CropJob:
    """The crops to write from one image (decoded once for all of them)."""

    image_path: Path
    image_id: str
    crops: tuple[tuple[int, PixelBox, Path], ...]  # (box index, pixel box, destination)


@dataclass
class PrepareReport:
    """What a run produced: crops per split and group, what it skipped and why."""

    out_dir: str
    crops: dict[str, dict[str, int]]
    skipped: dict[str, int]
    written: int = 0
    already_present: int = 0
    pruned: int = 0
    unreadable_images: list[str] = field(default_factory=list)  # "<path>: <reason>"
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "crops": self.crops,
            "total": sum(sum(groups.values()) for groups in self.crops.values()),
            "skipped": self.skipped,
            "written": self.written,
            "already_present": self.already_present,
            "pruned": self.pruned,
            "unreadable_images": self.unreadable_images,
            "settings": self.settings,
        }

    def summary(self) -> str:
        groups = sorted({group for counts in self.crops.values() for group in counts})
        lines = [f"{'':<10}" + "".join(f"{split:>10}" for split in SPLIT_NAMES)]
        lines += [
            f"{group:<10}" + "".join(f"{self.crops[split][group]:>10}" for split in SPLIT_NAMES) for group in groups
        ]
        empty = [group for group in groups if not any(self.crops[split][group] for split in SPLIT_NAMES)]
        if empty:
            lines.append(f"warning: no crops for groups {empty}")
        lines.append(f"written {self.written}, already present {self.already_present}, pruned {self.pruned}")
        lines += [f"skipped ({reason}): {count}" for reason, count in sorted(self.skipped.items())]
        lines += [f"  {problem}" for problem in self.unreadable_images[:10]]
        if len(self.unreadable_images) > 10:
            lines.append(f"  ... {len(self.unreadable_images) - 10} more unreadable images in {REPORT_NAME}")
        return "\n".join(lines)


# ---------------------------------------------------------------- inputs


def _require_file(path: str | Path, option: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{option}: file not found: {path}")
    return path


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """LabelName (`/m/...`) -> DisplayName; with V7's header row or without (the older boxable file)."""
    path = _require_file(path, "--classes")
    names: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for line, row in enumerate(csv.reader(file), start=1):
            if not row or (line == 1 and not row[0].startswith("/")):  # a header: ids start with /m/ or /g/
                continue
            if len(row) < 2:
                raise ConfigError(f"{path}:{line}: expected 'LabelName,DisplayName', got {row}")
            names[row[0]] = row[1]
    if not names:
        raise ConfigError(f"{path}: no class descriptions (expected rows 'LabelName,DisplayName')")
    return names


def load_groups(source: str | Path | Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """Target group -> Open Images display names, from a YAML file (default: the study's) or a mapping."""
    if source is None or isinstance(source, (str, Path)):
        path = _require_file(DEFAULT_GROUPS if source is None else source, "--groups")
        source_name, mapping = str(path), yaml.safe_load(path.read_text(encoding="utf-8"))
    else:
        source_name, mapping = "groups", source
    if not isinstance(mapping, Mapping) or not mapping:
        raise ConfigError(f"{source_name}: expected a mapping 'group: [Display name, ...]', got {mapping!r}")
    groups: dict[str, list[str]] = {}
    for group, names in mapping.items():
        if not isinstance(group, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", group):
            raise ConfigError(f"{source_name}: group {group!r} is not a usable folder name (letters, digits, _ . -)")
        if not isinstance(names, Sequence) or isinstance(names, str) or not names:
            raise ConfigError(f"{source_name}: group '{group}' needs a non-empty list of display names")
        groups[group] = [str(name) for name in names]
    return groups


def resolve_groups(groups: Mapping[str, Sequence[str]], descriptions: Mapping[str, str]) -> dict[str, str]:
    """LabelName -> group. Every display name must exist; an unknown one is reported with close matches."""
    ids_by_name: dict[str, list[str]] = defaultdict(list)
    for label, name in descriptions.items():
        ids_by_name[name].append(label)  # a few display names are shared by several ids: take them all
    label_groups: dict[str, str] = {}
    unknown: list[str] = []
    for group, names in groups.items():
        for name in names:
            if name not in ids_by_name:
                close = difflib.get_close_matches(name, list(ids_by_name), n=3, cutoff=0.6)
                unknown.append(f"'{name}' (group {group}; close: {', '.join(close) or 'none'})")
            for label in ids_by_name.get(name, []):
                if label_groups.get(label, group) != group:
                    raise ConfigError(f"display name '{name}' is in two groups: {label_groups[label]} and {group}")
                label_groups[label] = group
    if unknown:
        raise ConfigError("unknown Open Images display names in the groups mapping: " + "; ".join(unknown))
    return label_groups


def _parse_box(row: Mapping[str, str], index: int, group: str) -> Box | None:
    """A Box with coordinates clamped to [0, 1], or None when they are not numbers or enclose nothing."""
    try:
        xmin, xmax, ymin, ymax = (min(max(float(row[key]), 0.0), 1.0) for key in ("XMin", "XMax", "YMin", "YMax"))
    except ValueError:
        return None
    if not (xmin < xmax and ymin < ymax):  # also false for NaN
        return None
    return Box(row["ImageID"], index, group, xmin, xmax, ymin, ymax)


def read_boxes(
    path: str | Path, label_groups: Mapping[str, str], exclude: Sequence[str], skipped: Counter[str]
) -> list[Box]:
    """The mapped, well-formed boxes of detections.csv; every other row is counted in `skipped`."""
    path = _require_file(path, "--detections")
    exclude_columns = [ATTRIBUTE_COLUMNS[name] for name in exclude]
    rows_per_image: Counter[str] = Counter()
    boxes: list[Box] = []
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in (*BOX_COLUMNS, *exclude_columns) if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{path}: missing columns {missing}; found {reader.fieldnames}")
        for row in reader:
            index = rows_per_image[row["ImageID"]]
            rows_per_image[row["ImageID"]] += 1
            group = label_groups.get(row["LabelName"])
            if group is None:
                skipped[NOT_MAPPED] += 1
                continue
            excluded = next((column for column in exclude_columns if row[column].strip() == "1"), None)
            if excluded:
                skipped[f"excluded ({excluded})"] += 1
                continue
            box = _parse_box(row, index, group)
            if box is None:
                skipped[INVALID_BOX] += 1
                continue
            boxes.append(box)
    return boxes


def index_images(images_dir: str | Path) -> dict[str, Path]:
    """ImageID (file stem) -> image file, for the image files directly in `images_dir`."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ConfigError(f"--images: folder not found: {images_dir}")
    images: dict[str, Path] = {}
    for path in list_images(images_dir, recursive=False)[0]:
        images.setdefault(path.stem, path)
    return images


# ---------------------------------------------------------------- pixels


def displayed_size(path: Path) -> tuple[int, int] | str:
    """(width, height) after EXIF rotation (as `load_rgb` returns it), read from the header only;
    or the reason the file cannot be an image."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):  # rotated by 90 degrees
                width, height = height, width
            return width, height
    except (OSError, SyntaxError, ValueError) as err:
        return f"{path}: {err}"


def corner_median(crop: np.ndarray) -> tuple[int, ...]:
    """Median colour of the four corner pixels of an HxWx3 array: a background guess for the padding."""
    corners = crop[[0, 0, -1, -1], [0, -1, 0, -1]]
    return tuple(int(v) for v in np.round(np.median(corners, axis=0)))


def box_rng(seed: int, image_id: str, index: int) -> np.random.Generator:
    """A generator for one box, independent of which process handles it or in which order."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode()), index])


def letterbox(crop: Image.Image, canvas_size: int, rng: np.random.Generator) -> Image.Image:
    """Fit `crop` in a square canvas keeping its aspect ratio, at a random offset, on its corner colour."""
    width, height = crop.size
    ratio = min(canvas_size / width, canvas_size / height)
    new_size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    canvas = Image.new("RGB", (canvas_size, canvas_size), corner_median(np.asarray(crop)))
    offset = (int(rng.integers(0, canvas_size - new_size[0] + 1)), int(rng.integers(0, canvas_size - new_size[1] + 1)))
    canvas.paste(crop.resize(new_size, Image.Resampling.LANCZOS), offset)
    return canvas


def _save_atomically(image: Image.Image, destination: Path, image_format: str) -> None:
    """Write to a hidden temporary file, then rename: an interrupted run leaves no half-written crop."""
    pil_format, options = IMAGE_FORMATS[image_format]
    partial_file = destination.with_name(f".{destination.name}.partial")
    image.save(partial_file, format=pil_format, **options)
    os.replace(partial_file, destination)


def render_crops(job: CropJob, seed: int, canvas_size: int, image_format: str) -> str | None:
    """Decode the image once and write each of its crops; the reason if the image cannot be decoded."""
    try:
        image = load_rgb(job.image_path)
    except BadImageError as err:
        return str(err)
    for index, pixel_box, destination in job.crops:
        crop = letterbox(image.crop(pixel_box), canvas_size, box_rng(seed, job.image_id, index))
        _save_atomically(crop, destination, image_format)
    return None


def _map_in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool) -> list[R]:
    """`[fn(x) for x in items]` over a process pool, with a progress bar; inline with one worker."""
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(items) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results: Iterable[R] = pool.map(fn, items, chunksize=max(1, min(64, len(items) // (4 * workers))))
        else:
            results = map(fn, items)
        return list(tqdm(results, total=len(items), desc=desc, unit="image", disable=not progress))


# ---------------------------------------------------------------- planning


def _check_options(
    min_box_size: int,
    canvas_size: int,
    val_fraction: float,
    seed: int,
    image_format: str,
    exclude: Sequence[str],
    workers: int,
) -> None:
    if min_box_size < 1:
        raise ConfigError(f"--min-box-size must be >= 1 pixel, got {min_box_size}")
    if canvas_size < 1:
        raise ConfigError(f"--canvas-size must be >= 1 pixel, got {canvas_size}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"--format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    unknown = [name for name in exclude if name not in ATTRIBUTE_COLUMNS]
    if unknown:
        raise ConfigError(f"--exclude: unknown {unknown}; choose from {sorted(ATTRIBUTE_COLUMNS)}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")


def _sized_boxes(
    boxes: Sequence[Box],
    images: Mapping[str, Path],
    min_box_size: int,
    workers: int,
    progress: bool,
    skipped: Counter[str],
    unreadable: list[str],
) -> list[tuple[Box, PixelBox]]:
    """Boxes with their pixel coordinates, minus those of missing or unreadable images and the too small.

    Only image headers are read here, so the split can be drawn over the crops that will exist."""
    present = [box for box in boxes if box.image_id in images]
    skipped[IMAGE_MISSING] += len(boxes) - len(present)
    image_ids = sorted({box.image_id for box in present})
    sizes = _map_in_processes(displayed_size, [images[i] for i in image_ids], workers, "reading sizes", progress)
    size_of = dict(zip(image_ids, sizes, strict=True))
    unreadable += [size for size in sizes if isinstance(size, str)]
    kept = []
    for box in present:
        size = size_of[box.image_id]
        if isinstance(size, str):
            skipped[UNREADABLE] += 1
            continue
        left, top, right, bottom = pixel_box = box.pixels(*size)
        if min(right - left, bottom - top) < min_box_size:
            skipped[TOO_SMALL] += 1
            continue
        kept.append((box, pixel_box))
    return sorted(kept, key=lambda item: (item[0].image_id, item[0].index))


def _assign_splits(groups: Sequence[str], val_fraction: float, seed: int) -> list[str]:
    """A split name per crop: seeded, stratified by group."""
    counts = Counter(groups)
    too_few = {group: n for group, n in sorted(counts.items()) if n < 2}
    if too_few:
        raise ConfigError(f"too few usable boxes to split train/val in groups {too_few}; each group needs >= 2")
    names = sorted(counts)
    label_of = {group: label for label, group in enumerate(names)}
    try:
        parts = split_indices([label_of[g] for g in groups], val_fraction, seed, class_names=names)
    except ConfigError as err:  # a validation part too small to hold every group
        raise ConfigError(f"cannot split {dict(counts)} with --val-fraction {val_fraction}: {err}") from None
    splits = [""] * len(groups)
    for split in SPLIT_NAMES:
        for i in parts[split]:
            splits[i] = split
    return splits


def _plan(
    kept: Sequence[tuple[Box, PixelBox]], out_dir: Path, val_fraction: float, seed: int, image_format: str
) -> dict[Path, tuple[Box, PixelBox]]:
    """Destination `<out>/<split>/<group>/<ImageID>_<row>.<format>` -> the box it holds."""
    splits = _assign_splits([box.group for box, _ in kept], val_fraction, seed)
    return {
        out_dir / split / box.group / f"{box.name}.{image_format}": (box, pixel_box)
        for (box, pixel_box), split in zip(kept, splits, strict=True)
    }


def _previous_settings(out_dir: Path) -> dict[str, Any] | None:
    report = out_dir / REPORT_NAME
    return json.loads(report.read_text(encoding="utf-8")).get("settings") if report.is_file() else None


def _prune_stale(out_dir: Path, planned: set[Path], pixels_unchanged: bool, prune: bool) -> int:
    """Crops this run would not write, or would draw differently (another seed or canvas), would mix two
    datasets in one folder: refuse, or delete them with `prune`."""
    existing = {path for split in SPLIT_NAMES for path in out_dir.glob(f"{split}/*/*") if is_image_file(path)}
    stale = sorted(existing - planned if pixels_unchanged else existing)
    if stale and not prune:
        examples = ", ".join(str(path.relative_to(out_dir)) for path in stale[:3])
        why = "from other inputs or settings" if pixels_unchanged else "made with another --seed or --canvas-size"
        raise ConfigError(
            f"{out_dir} holds {len(stale)} crops this run would not write ({examples}, ...), {why}; "
            "use a new --out folder, or --prune to delete them"
        )
    for path in stale:
        path.unlink()
    return len(stale)


def _write_crops(
    todo: Mapping[Path, tuple[Box, PixelBox]],
    images: Mapping[str, Path],
    render: Callable[[CropJob], str | None],
    workers: int,
    progress: bool,
) -> dict[str, tuple[Path, ...]]:
    """Write the crops of `todo`, one job per image; for each image that cannot be decoded, the reason
    and the crops it did not get."""
    per_image: dict[str, list[tuple[int, PixelBox, Path]]] = defaultdict(list)
    for destination, (box, pixel_box) in todo.items():
        destination.parent.mkdir(parents=True, exist_ok=True)
        per_image[box.image_id].append((box.index, pixel_box, destination))
    jobs = [CropJob(images[image_id], image_id, tuple(crops)) for image_id, crops in sorted(per_image.items())]
    failures = _map_in_processes(render, jobs, workers, "writing crops", progress)
    return {
        failure: tuple(destination for _, _, destination in job.crops)
        for job, failure in zip(jobs, failures, strict=True)
        if failure is not None
    }


def _count_crops(crops: Iterable[Path], groups: Iterable[str]) -> dict[str, dict[str, int]]:
    """split -> group -> number of crops, from their paths `<split>/<group>/<name>`; 0 for an empty group."""
    counts = Counter((path.parent.parent.name, path.parent.name) for path in crops)
    return {split: {group: counts[split, group] for group in sorted(groups)} for split in SPLIT_NAMES}


# ---------------------------------------------------------------- the task


def prepare_openimages(
    images_dir: str | Path,
    detections_csv: str | Path,
    class_descriptions_csv: str | Path,
    out_dir: str | Path,
    *,
    groups: str | Path | Mapping[str, Sequence[str]] | None = None,
    min_box_size: int = 32,
    canvas_size: int = 224,
    val_fraction: float = 0.2,
    seed: int = 42,
    image_format: str = "jpg",
    exclude: Sequence[str] = (),
    workers: int | None = None,
    prune: bool = False,
    progress: bool = True,
) -> PrepareReport:
    """Cut the mapped boxes out of the images into `<out_dir>/{train,val}/<group>/<ImageID>_<row>.<format>`.

    Crops already in place are kept as they are (a re-run writes nothing); the report is printed by
    the CLI and written to `<out_dir>/prepare_report.json`.
    """
    workers = available_cpus() if workers is None else workers
    _check_options(min_box_size, canvas_size, val_fraction, seed, image_format, exclude, workers)
    images = index_images(images_dir)
    label_groups = resolve_groups(load_groups(groups), read_class_descriptions(class_descriptions_csv))
    settings = {
        "images": str(images_dir),
        "detections": str(detections_csv),
        "classes": str(class_descriptions_csv),
        "groups": {
            g: sorted(label for label, g_ in label_groups.items() if g_ == g)
            for g in sorted(set(label_groups.values()))
        },
        "min_box_size": min_box_size,
        "canvas_size": canvas_size,
        "val_fraction": val_fraction,
        "seed": seed,
        "format": image_format,
        "exclude": sorted(exclude),
    }
    skipped: Counter[str] = Counter()
    unreadable: list[str] = []
    boxes = read_boxes(detections_csv, label_groups, exclude, skipped)
    kept = _sized_boxes(boxes, images, min_box_size, workers, progress, skipped, unreadable)
    if not kept:
        raise ConfigError(
            f"no usable boxes in {detections_csv} for groups {sorted(settings['groups'])}: {dict(skipped)}"
        )

    out_dir = Path(out_dir)
    plan = _plan(kept, out_dir, val_fraction, seed, image_format)
    previous = _previous_settings(out_dir)
    pixels_unchanged = previous is None or all(previous.get(k) == settings[k] for k in ("seed", "canvas_size"))
    pruned = _prune_stale(out_dir, set(plan), pixels_unchanged, prune)
    todo = {destination: item for destination, item in plan.items() if not destination.exists()}
    render = partial(render_crops, seed=seed, canvas_size=canvas_size, image_format=image_format)
    failures = _write_crops(todo, images, render, workers, progress)  # headers fine, pixels not: truncated files
    failed = {destination for destinations in failures.values() for destination in destinations}
    skipped[UNREADABLE] += len(failed)
    unreadable += failures

    report = PrepareReport(
        out_dir=str(out_dir),
        crops=_count_crops(set(plan) - failed, settings["groups"]),
        skipped={reason: n for reason, n in sorted(skipped.items()) if n},
        written=len(todo) - len(failed),
        already_present=len(plan) - len(todo),
        pruned=pruned,
        unreadable_images=sorted(unreadable),
        settings=settings,
    )
    (out_dir / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_resnet.prepare openimages",
        description="Cut Open Images boxes into letterboxed crops in an ImageFolder with a train/val split.",
    )
    parser.add_argument("--images", required=True, type=Path, help="folder of <ImageID>.jpg files")
    parser.add_argument("--detections", required=True, type=Path, help="Open Images detections.csv (boxes)")
    parser.add_argument("--classes", required=True, type=Path, help="class-descriptions CSV (LabelName,DisplayName)")
    parser.add_argument("--out", required=True, type=Path, help="output folder: train/<group>/, val/<group>/")
    parser.add_argument(
        "--groups", type=Path, default=None, help=f"YAML group -> display names (default: {DEFAULT_GROUPS.name})"
    )
    parser.add_argument("--min-box-size", type=int, default=32, help="skip boxes whose shorter side is below this (px)")
    parser.add_argument("--canvas-size", type=int, default=224, help="side of the square output images (px)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="stratified validation fraction")
    parser.add_argument("--seed", type=int, default=42, help="seeds the split and every crop's offset")
    parser.add_argument("--format", dest="image_format", choices=sorted(IMAGE_FORMATS), default="jpg")
    parser.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        choices=sorted(ATTRIBUTE_COLUMNS),
        help="skip boxes with these Open Images attributes (e.g. group_of depiction)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs available)")
    parser.add_argument("--prune", action="store_true", help="delete crops in --out this run would not write")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 with a one-line error for bad inputs or options."""
    args = build_parser().parse_args(argv)
    try:
        report = prepare_openimages(
            args.images,
            args.detections,
            args.classes,
            args.out,
            groups=args.groups,
            min_box_size=args.min_box_size,
            canvas_size=args.canvas_size,
            val_fraction=args.val_fraction,
            seed=args.seed,
            image_format=args.image_format,
            exclude=args.exclude,
            workers=args.workers,
            prune=args.prune,
            progress=args.progress,
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"report: {Path(report.out_dir) / REPORT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
