"""`ImageFolderDataModule`: any folder of images, in one of the layouts of `data.layouts`.

Setup lists the files, checks them (every class in every split; with `verify`, every image decodes,
without it every header is read: a file PIL cannot identify, a dangling symbolic link or an image over
`max_image_pixels` is known without decoding; both cached by a fingerprint of the file list), then
assigns seeded stratified splits. Bad files either stop the run with a report listing every one of
them, or are left out with a warning listing them; no unreadable image reaches a DataLoader worker.

Every file is `stat`ed once per set-up (the listing's fingerprint); the keys of the verification, the
`normalize: auto` statistics and the pixel cache derive from it. Each of them is built by one process
while the others sharing the cache folder (DDP ranks, parallel sweep jobs) wait and read it (`data.cache`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lightning_resnet.data.base import ClassificationDataModule
from lightning_resnet.data.cache import ResultCache, fingerprint
from lightning_resnet.data.datasets import ImageFileDataset, PixelDataset
from lightning_resnet.data.images import (
    BAD_IMAGE_POLICIES,
    DEFAULT_MAX_PIXELS,
    INTENSITY,
    BadImagesError,
    draft_side,
    find_bad_images,
    format_problems,
    list_images,
)
from lightning_resnet.data.layouts import POOL, Listing, make_layout
from lightning_resnet.data.pixels import Decoding, build_pixels, check_cache_options
from lightning_resnet.data.splits import check_fractions, split_indices
from lightning_resnet.data.transforms import channel_mean_std, resize_ops
from lightning_resnet.errors import ConfigError
from lightning_resnet.utils import available_cpus

log = logging.getLogger(__name__)


def _positive_count(value: object) -> bool:
    """A whole number >= 1 (`2e8` from a command line included), not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 1 and float(value).is_integer()


@dataclass
class ScanReport:
    """What `scan` found: images per split and class, and every file that was left out and why."""

    counts: dict[str, dict[str, int]]
    bad: dict[str, str]
    ignored: list[Path]

    def format(self) -> str:
        lines = [
            f"{split}: {sum(c.values())} images  " + ", ".join(f"{k}={v}" for k, v in c.items())
            for split, c in self.counts.items()
        ]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} files that are not images:")
            lines += [f"  {path}" for path in self.ignored]
        lines.append(f"{len(self.bad)} bad files" + (":" if self.bad else ""))
        if self.bad:
            lines.append(format_problems(self.bad))
        return "\n".join(lines)


class ImageFolderDataModule(ClassificationDataModule):
    """Images in folders, labelled by folder or file name.

    Args:
        root: the dataset's folder.
        layout: `splits`, `classes` or `filenames` (see `data.layouts`).
        split_dirs: (splits) folder of each split under root; a null or absent val is carved from
            train (`val_fraction`), an absent test falls back to val.
        folder: (classes, filenames) the folder under root holding the class folders / the files.
        label_pattern: (filenames) regex whose first group is the class, e.g. `^(cat|dog)\\.`.
        fractions: (classes, filenames) [train, val] or [train, val, test], seeded and stratified.
        val_fraction: (splits) share of train held out for validation when there is no val folder.
        num_folds, fold: k-fold cross-validation instead: fold `fold` of a stratified k-fold over
            train+val is the validation split (the test split stays held out).
        classes: expected class names (null: whatever the data has); a mismatch is an error.
        predict_dir: folder of unlabelled images under root, predicted into `kaggle_submission.csv`
            at the end of a training run with `kaggle_submission=true` (null: none).
        bad_images: `error` (stop with a report of every bad file) or `skip` (leave them out, warn).
        verify: decode every image at setup (cached per file list) so bad files show before training;
            false still reads every header (cached too), which names dangling links, non-images and bombs.
        cache_dir: where `normalize: auto` statistics, verification results and the pixel cache are
            kept (null: `<root>/.lightning_resnet`).
        download: where to get the dataset, shown when `root` does not exist.
        cache: null (decode every image file at every epoch), `memory` or `disk`: decode every image
            once at the training size and serve uint8 pixels from RAM or a memory-mapped file in
            `cache_dir` (see `data.pixels`). Augmentation semantics are unchanged.
        cache_decode: `cpu` (PIL, the same pixels as without the cache) or `cuda` (nvJPEG on the GPU,
            for building a large cache quickly; slightly different pixels).
        intensity: how 16-/32-bit images become 8 bits: `fixed` (the type's full range, the same for
            every image, so brightness keeps its meaning) or `per_image` (each image stretched between
            its own min and max). See `data.images`.
        max_image_pixels: an image whose header claims more pixels is a bad image (`bad_images` applies),
            named with its size, never decoded: a decompression bomb (a 100 KB PNG claiming 30000 x 30000
            pixels) cannot take a run's memory. Default: PIL's own error threshold; null: no limit.
        **kwargs: see `ClassificationDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        layout: str = "splits",
        split_dirs: dict[str, str | None] | None = None,
        folder: str = ".",
        label_pattern: str | None = None,
        fractions: Sequence[float] = (0.8, 0.2),
        val_fraction: float = 0.2,
        num_folds: int | None = None,
        fold: int = 0,
        classes: Sequence[str] | None = None,
        predict_dir: str | None = None,
        bad_images: str = "error",
        verify: bool = True,
        cache_dir: str | Path | None = None,
        download: str | None = None,
        cache: str | None = None,
        cache_decode: str = "cpu",
        intensity: str = "fixed",
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"data.bad_images={bad_images!r}; valid: {', '.join(BAD_IMAGE_POLICIES)}")
        if intensity not in INTENSITY:
            raise ConfigError(f"data.intensity={intensity!r}; valid: {', '.join(INTENSITY)}")
        if max_image_pixels is not None and not _positive_count(max_image_pixels):
            raise ConfigError(f"data.max_image_pixels={max_image_pixels!r}; valid: a positive pixel count, or null")
        split_dirs = {"train": "train", "val": "val", "test": "test"} if split_dirs is None else dict(split_dirs)
        self.layout = make_layout(layout, split_dirs=split_dirs, folder=folder, label_pattern=label_pattern)
        self.root = Path(root).expanduser()
        self.fractions = check_fractions(fractions)
        self.val_fraction = val_fraction
        self.num_folds, self.fold = num_folds, fold
        self.expected_classes = sorted(str(c) for c in classes) if classes is not None else None
        self.predict_dir = predict_dir
        self.bad_images = bad_images
        self.verify = verify
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".lightning_resnet"
        self.results = ResultCache(self.cache_dir)
        check_cache_options(cache, cache_decode)
        self.cache_mode = cache
        self.cache_decode = cache_decode
        self.download = download
        self.intensity = intensity
        self.max_image_pixels = None if max_image_pixels is None else int(max_image_pixels)
        self._class_names: list[str] = []
        self._files_key: str | None = None  # fingerprint of the listed files, stamped once per set-up

    @property
    def class_names(self) -> list[str]:
        if not self._class_names:
            raise RuntimeError("class names are known after setup()")
        return self._class_names

    # -- listing and checking ----------------------------------------------------------------------
    def _list(self) -> Listing:
        if not self.root.is_dir():
            classes = self.expected_classes or ["<class>"]
            tree = "\n".join(f"  {line}" for line in self.layout.tree(classes))
            where = f"\nDownload: {self.download}" if self.download else ""
            raise FileNotFoundError(
                f"data.root={self.root} does not exist.{where}\nExpected layout:\n{self.root}/\n{tree}\n"
                f"Point data.root (or paths.data_dir / $LIGHTNING_RESNET_DATA) at the dataset."
            )
        listing = self.layout.discover(self.root)
        if listing.ignored:
            log.info("ignored %d files that are not images, e.g. %s", len(listing.ignored), listing.ignored[:3])
        return listing

    def _check_images(
        self, paths: list[Path], recheck: bool = False, progress: bool = False, decode: bool = True
    ) -> dict[str, str]:
        """{path: reason} of the bad files (decoded, or with `decode=False` their headers only); cached by
        the file list's fingerprint (and the pixel limit, when it is not the default, so old keys hold),
        built by one process of those sharing the cache folder."""
        limit = () if self.max_image_pixels == DEFAULT_MAX_PIXELS else (self.max_image_pixels,)
        kind = "verified" if decode else "headers"
        threads = available_cpus()  # nothing else runs during set-up: every core checks
        self._files_key = fingerprint(paths, threads=threads)
        key = fingerprint([], *limit, within=self._files_key)

        def check() -> dict[str, str]:
            what = "images" if decode else "image headers"
            log.info("checking %d %s with %d workers (cached afterwards)", len(paths), what, threads)
            return find_bad_images(paths, threads, progress, self.max_image_pixels, decode)

        return self.results.get_or_build(kind, key, check, refresh=recheck)

    def _drop_bad(self, listing: Listing) -> Listing:
        """Apply `bad_images` to bad files (undecodable with `verify`, else a bad header) and empty class folders."""
        problems = {str(d): "class folder without images" for d in listing.empty_classes}
        problems.update(self._check_images(listing.paths(), decode=self.verify))
        if not problems:
            return listing
        report = f"{len(problems)} unreadable files or empty class folders under {self.root}:\n" + format_problems(
            problems
        )
        if self.bad_images == "error":
            raise BadImagesError(
                problems,
                f"{report}\nFix or delete them, or set data.bad_images=skip to train without them "
                f"(python -m lightning_resnet.prepare scan data=... lists them too).",
            )
        log.warning("data.bad_images=skip: leaving out %s", report)
        splits = {
            split: [(p, c) for p, c in items if str(p) not in problems] for split, items in listing.splits.items()
        }
        return Listing(splits=splits, ignored=listing.ignored)

    def _check_classes(self, listing: Listing) -> list[str]:
        """Sorted class names; every split must have every class (and the `classes` key, if set)."""
        per_split = {split: {c for _, c in items} for split, items in listing.splits.items()}
        names = sorted(set().union(*per_split.values()))
        for split, found in per_split.items():
            missing = sorted(set(names) - found)
            if missing:
                raise ConfigError(
                    f"data: class {missing} has no images in the {split} split under {self.root}; "
                    f"every split needs every class ({names})"
                )
        if self.expected_classes is not None and names != self.expected_classes:
            raise ConfigError(f"data.classes={self.expected_classes} but {self.root} has classes {names}")
        if len(names) < 2:
            raise ConfigError(f"data: {self.root} has {len(names)} classes ({names}); a classifier needs at least 2")
        return names

    # -- splits ------------------------------------------------------------------------------------
    def _assign(self, listing: Listing) -> dict[str, list[tuple[Path, int]]]:
        """(path, label) per split: the folders' own splits, with what is missing carved by `split_indices`.

        A pool layout (`classes`, `filenames`) is split by `fractions`. A `splits` layout keeps its val
        folder, or carves `val_fraction` of train when there is none; with `num_folds`, train and val
        are pooled and fold `fold` is the validation part. Without a test split, val is tested.
        """
        index = {name: i for i, name in enumerate(self._class_names)}
        parts = {split: [(p, index[c]) for p, c in items] for split, items in listing.splits.items()}
        if POOL in parts:
            pool = parts.pop(POOL)
            train, val, *test = self.fractions
            val_fraction, test_fraction = val / (train + val), (test[0] if test else 0.0)
        elif "val" not in parts or self.num_folds is not None:
            has_val = "val" in parts
            pool, val_fraction, test_fraction = parts.pop("train") + parts.pop("val", []), self.val_fraction, 0.0
            log.info(
                "validation split: %s of %s",
                f"fold {self.fold}/{self.num_folds}" if self.num_folds else f"{val_fraction:.0%}",
                "train + val" if has_val else "train (no val folder)",
            )
        else:
            pool = []
        if pool:
            labels = [y for _, y in pool]
            indices = split_indices(
                labels, val_fraction, self.seed, test_fraction, self.num_folds, self.fold, self._class_names
            )
            parts.update({split: [pool[i] for i in rows] for split, rows in indices.items()})
        if "test" not in parts:
            log.info("no test split under %s: testing on the validation split", self.root)
            parts["test"] = parts["val"]
        return parts

    def _load_splits(self) -> dict[str, ImageFileDataset | PixelDataset]:
        listing = self._drop_bad(self._list())
        self._class_names = self._check_classes(listing)
        parts = self._assign(listing)
        if self.cache_mode:
            return self._cached(parts)
        return {
            split: ImageFileDataset([p for p, _ in items], [y for _, y in items], **self._reading())
            for split, items in parts.items()
        }

    def _cached(self, parts: dict[str, list[tuple[Path, int]]]) -> dict[str, PixelDataset]:
        """The same splits served from the pixel cache of all their files (one cache for every split)."""
        how = Decoding(self.image_size, self.crop_ratio, self.cache_decode, self.intensity, self.max_image_pixels)
        every_path = [p for items in parts.values() for p, _ in items]
        threads = available_cpus()  # nothing else runs during set-up: every core decodes
        pixels, rows = build_pixels(every_path, how, self.cache_mode, self.cache_dir, threads, self._files_key)
        return {
            split: PixelDataset(pixels, [rows[str(p)] for p, _ in items], [y for _, y in items], [p for p, _ in items])
            for split, items in parts.items()
        }

    def _reading(self) -> dict[str, Any]:
        """How `ImageFileDataset` reads a file: the intensity mapping, the pixel limit, the reduced-scale decode."""
        draft = draft_side(self.image_size, self.crop_ratio)
        return {"intensity": self.intensity, "max_pixels": self.max_image_pixels, "draft_size": draft}

    def preprocessing(self) -> dict[str, Any]:
        spec = super().preprocessing()
        if self.intensity != "fixed":
            spec["intensity"] = self.intensity
        return spec

    # -- normalisation, scanning ------------------------------------------------------
    def _train_mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean/std of the resized training images; cached per file list and geometry, computed
        by one process of those sharing the cache folder."""
        train = self.datasets["train"]
        names = train.names if isinstance(train, ImageFileDataset) else train.paths  # no `Path` per file
        key = fingerprint(names, self.image_size, self.crop_ratio, within=self._files_key)

        def compute() -> dict[str, list[float]]:
            if isinstance(train, PixelDataset):  # the resized pixels are at hand: no decoding
                batches = train.batches()
            else:
                transform = v2.Compose(resize_ops(self.image_size, self.crop_ratio))  # uint8: 4x fewer bytes
                loader = DataLoader(
                    ImageFileDataset(names, train.labels, transform, **self._reading()),
                    batch_size=self.batch_size,
                    num_workers=self.num_workers,
                )
                batches = (images for images, _ in loader)
            mean, std = channel_mean_std(batches)
            log.info("normalize=auto over %d training images: mean %s, std %s", len(train), mean, std)
            return {"mean": mean, "std": std}

        stats = self.results.get_or_build("normalize", key, compute)
        return stats["mean"], stats["std"]

    def scan(self, progress: bool = False) -> ScanReport:
        """Decode every file of every split (and `predict_dir`), ignoring the cache; nothing is skipped."""
        listing = self._list()
        bad = {str(d): "class folder without images" for d in listing.empty_classes}
        counts = {}
        for split, items in listing.splits.items():  # one pass (not one per class: 1000 x 1.28 M for ImageNet)
            per_class = Counter(c for _, c in items)
            counts[split] = {name: per_class[name] for name in sorted(per_class)}
        paths = listing.paths()
        if self.predict_dir and (self.root / self.predict_dir).is_dir():
            predict = list_images(self.root / self.predict_dir, recursive=False)[0]
            counts["predict"] = {"unlabelled": len(predict)}
            paths += predict
        bad.update(self._check_images(paths, recheck=True, progress=progress))
        return ScanReport(counts=counts, bad=bad, ignored=listing.ignored)
