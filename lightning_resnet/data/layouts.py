"""The three on-disk layouts an `ImageFolderDataModule` reads, and what each expects to find.

- `splits`: `<root>/<split dir>/<class>/**/image` for train (required), val and test (optional);
- `classes`: `<root>/<folder>/<class>/**/image`, one pool split later by fractions;
- `filenames`: `<root>/<folder>/image` with the class in the file name (a regex's first group).

A layout only lists files; deciding splits, checking classes and decoding images is the data module's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lightning_resnet.data.images import list_class_folders, list_images
from lightning_resnet.errors import ConfigError

POOL = "all"  # the split name of a layout that has one pool of images to be split by fractions


@dataclass
class Listing:
    """Labelled files per split (`train`/`val`/`test`, or `all`), and what was left out."""

    splits: dict[str, list[tuple[Path, str]]]
    ignored: list[Path] = field(default_factory=list)  # files that are not images (Thumbs.db, notes.txt)
    empty_classes: list[Path] = field(default_factory=list)  # class folders without a single image

    def paths(self) -> list[Path]:
        return [path for items in self.splits.values() for path, _ in items]


def _read_class_folders(folder: Path, listing: Listing, split: str) -> None:
    items: list[tuple[Path, str]] = []
    for class_dir in list_class_folders(folder):
        images, others = list_images(class_dir)
        items += [(path, class_dir.name) for path in images]
        listing.ignored += others
        if not images:
            listing.empty_classes.append(class_dir)
    loose_images, loose_others = list_images(folder, recursive=False)  # files beside the class folders
    listing.ignored += loose_images + loose_others
    listing.splits[split] = items


def _class_lines(classes: list[str], indent: str) -> list[str]:
    return [f"{indent}{name}/  *.jpg, *.png, ..." for name in classes]


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} is not a folder")


class SplitFolders:
    """`<root>/<split_dirs[split]>/<class>/`; a split whose name is null or whose folder is absent is skipped."""

    options = ("split_dirs",)

    def __init__(self, split_dirs: dict[str, str | None]) -> None:
        unknown = set(split_dirs) - {"train", "val", "test"}
        if unknown or not split_dirs.get("train"):
            raise ConfigError(f"data.split_dirs must name a train folder and only train/val/test, got {split_dirs}")
        self.split_dirs = {split: name for split, name in split_dirs.items() if name}

    def discover(self, root: Path) -> Listing:
        listing = Listing(splits={})
        for split, name in self.split_dirs.items():
            folder = root / name
            if split == "train":
                _require_dir(folder, "data.split_dirs.train:")
            if folder.is_dir():
                _read_class_folders(folder, listing, split)
        return listing

    def tree(self, classes: list[str]) -> list[str]:
        return [line for name in self.split_dirs.values() for line in [f"{name}/", *_class_lines(classes, "  ")]]


class ClassFolders:
    """`<root>/<folder>/<class>/`: one pool of labelled images."""

    options = ("folder",)

    def __init__(self, folder: str = ".") -> None:
        self.folder = folder

    def discover(self, root: Path) -> Listing:
        folder = root / self.folder
        _require_dir(folder, "data.folder:")
        listing = Listing(splits={})
        _read_class_folders(folder, listing, POOL)
        return listing

    def tree(self, classes: list[str]) -> list[str]:
        if self.folder == ".":
            return _class_lines(classes, "")
        return [f"{self.folder}/", *_class_lines(classes, "  ")]


class FilenameLabels:
    """`<root>/<folder>/<file>` labelled by the first group of `label_pattern` matched against the file name."""

    options = ("label_pattern", "folder")

    def __init__(self, label_pattern: str | None, folder: str = ".") -> None:
        try:
            self.pattern = re.compile(label_pattern or "")
        except re.error as err:
            raise ConfigError(f"data.label_pattern={label_pattern!r} is not a valid regex: {err}") from None
        if self.pattern.groups < 1:
            raise ConfigError(
                f"data.label_pattern={label_pattern!r} needs a group capturing the class, e.g. '^(cat|dog)\\.'"
            )
        self.folder = folder

    def discover(self, root: Path) -> Listing:
        folder = root / self.folder
        _require_dir(folder, "data.folder:")
        images, others = list_images(folder, recursive=False)
        items, unmatched = [], []
        for path in images:
            match = self.pattern.search(path.name)
            if match and match.group(1):
                items.append((path, match.group(1)))
            else:
                unmatched.append(path.name)
        if unmatched:
            raise ConfigError(
                f"data.label_pattern={self.pattern.pattern!r} finds no class in {len(unmatched)} file names under "
                f"{folder}, e.g. {unmatched[:5]}; fix the pattern or move those files out"
            )
        return Listing(splits={POOL: items}, ignored=others)

    def tree(self, classes: list[str]) -> list[str]:
        names = ", ".join(f"{c}.1.jpg" for c in classes)
        return [f"{self.folder}/", f"  {names}, ...  (class = first group of {self.pattern.pattern!r})"]


Layout = SplitFolders | ClassFolders | FilenameLabels
LAYOUTS: dict[str, type[Layout]] = {"splits": SplitFolders, "classes": ClassFolders, "filenames": FilenameLabels}


def make_layout(layout: str, **options: object) -> Layout:
    """The layout named `layout`, given the options that apply to it (the others are ignored)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"data.layout={layout!r}; valid: {', '.join(LAYOUTS)}")
    cls = LAYOUTS[layout]
    return cls(**{key: value for key, value in options.items() if key in cls.options})
