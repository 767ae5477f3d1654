"""Miniature copies of each dataset's real on-disk layout, made of real JPEG/PNG files.

`write_miniature("mask", tmp_path / "mask")` writes a few images per class in exactly the folder
structure of the real download, so a dataset config can be tested end to end without it.
Reusable by any test: the images differ per class (a tint) and per file (noise), sizes vary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

EXTENSIONS = (".jpg", ".png", ".jpeg")

# name -> [(folder under root, images, file-name template)]; "{c}" is the folder's last part.
MINIATURES: dict[str, list[tuple[str, int, str]]] = {
    "flatfoot": [(f"{s}/{c}", n, "{i}{ext}") for s, n in (("train", 10), ("test", 4)) for c in ("flat", "normal")],
    "yoga": [*((f"train/{c}", 5, "{i}{ext}") for c in "012345"), ("test", 3, "{i}{ext}")],
    "surveillance": [
        (f"{s}/{c}", n, "crop_{i}.jpg") for s, n in (("train", 8), ("val", 2)) for c in ("person", "animal", "object")
    ],
    "mask": [
        (f"{s}/{c}", n, "{i}.png")
        for s, n in (("Train", 6), ("Validation", 2), ("Test", 3))
        for c in ("WithMask", "WithoutMask")
    ],
    "catsdogs": [("train", 10, "cat.{i}.jpg"), ("train", 10, "dog.{i}.jpg"), ("test1", 3, "{i}.jpg")],
    "catsdogs_petimages": [("Cat", 10, "{i}.jpg"), ("Dog", 10, "{i}.jpg")],
}

# Expected figures for each miniature under its dataset config (seeded stratified splits).
EXPECTED: dict[str, dict] = {
    "flatfoot": {"classes": ["flat", "normal"], "sizes": {"train": 16, "val": 4, "test": 8}},
    "yoga": {"classes": list("012345"), "sizes": {"train": 24, "val": 6, "test": 6}, "predict": 3},
    "surveillance": {"classes": ["animal", "object", "person"], "sizes": {"train": 24, "val": 6, "test": 6}},
    "mask": {"classes": ["WithMask", "WithoutMask"], "sizes": {"train": 12, "val": 4, "test": 6}},
    "catsdogs": {"classes": ["cat", "dog"], "sizes": {"train": 16, "val": 2, "test": 2}, "predict": 3},
    "catsdogs_petimages": {"classes": ["Cat", "Dog"], "sizes": {"train": 16, "val": 2, "test": 2}},
}


def write_image(path: Path, rng: np.random.Generator, tint: int = 0, size: tuple[int, int] = (40, 32)) -> Path:
    """A real RGB image file (format from the extension): noise around a tint that depends on the class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.array([(tint * 70) % 256, (tint * 150 + 60) % 256, (tint * 30 + 120) % 256])
    pixels = np.clip(base + rng.integers(-40, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_miniature(name: str, root: Path, seed: int = 0) -> Path:
    """Write dataset `name`'s miniature layout under `root` (see MINIATURES) and return root."""
    rng = np.random.default_rng(seed)
    for tint, (folder, count, template) in enumerate(MINIATURES[name]):
        for i in range(count):
            ext = EXTENSIONS[i % len(EXTENSIONS)]
            size = (40, 32) if i % 2 else (32, 44)
            write_image(root / folder / template.format(i=i, ext=ext), rng, tint, size)
    if name == "catsdogs_petimages":  # as the real download: Thumbs.db and undecodable JPEGs
        for folder in ("Cat", "Dog"):
            (root / folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not an image")
            (root / folder / "666.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    return root


def write_job_folder(
    sweep: Path,
    name: str,
    overrides: list[str],
    val: float | None,
    status: str = "ok",
    config: dict | None = None,
    error: str = "ValueError: bad lr",
) -> Path:
    """A sweep job's folder as the train task leaves it: `.hydra/` config and overrides, `status.json`
    (none for `unfinished`), and for an `ok` job its `metrics.json` (best val/acc `val`) and history."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"monitor": "val/acc", "monitor_mode": "max", **(config or {})}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if status == "unfinished":
        return job
    (job / "status.json").write_text(json.dumps({"status": status, "error": error}))
    if status != "ok":
        return job
    metrics = {
        "monitor": "val/acc",
        "mode": "max",
        "best_score": val,
        "epochs_run": 2,
        "wall_time_s": 3.0,
        "best": {"train/acc": 0.9, "val/acc": val},
        "test": {"test/acc": val - 0.01, "test/f1": val - 0.02, "test/loss": 0.5},
        "report": {"silhouette": 0.25},
        "model": {"params_total": 11_000_000, "gmacs": 0.037},
    }
    (job / "metrics.json").write_text(json.dumps(metrics))
    (job / "history.json").write_text(json.dumps([{"epoch": 0, "val/acc": val - 0.1}, {"epoch": 1, "val/acc": val}]))
    return job
