"""ImageFolderDataModule: the three layouts, split rules, class checks, k-fold and the weighted sampler."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.data.images import load_rgb
from lightning_resnet.data.transforms import eval_transform
from lightning_resnet.errors import ConfigError
from tests.miniature import write_image


def write_classes(folder: Path, counts: dict[str, int], template: str = "{c}/{i}.png") -> Path:
    rng = np.random.default_rng(len(counts))
    for tint, (name, count) in enumerate(counts.items()):
        for i in range(count):
            write_image(folder / template.format(c=name, i=i), rng, tint)
    return folder


def make_dm(root: Path, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(root=root, **{"image_size": 32, "batch_size": 4, "num_workers": 0, **kwargs})
    dm.setup("fit")
    return dm


def as_unit_floats(image: torch.Tensor) -> torch.Tensor:
    """A dataset's image in [0, 1] (with normalize=none): uint8 images, normalised after the transfer, scaled."""
    return image.float() / 255 if image.dtype == torch.uint8 else image


def sizes(dm: ImageFolderDataModule) -> dict[str, int]:
    return {split: len(ds) for split, ds in dm.datasets.items()}


def test_split_folders_carve_val_and_fall_back_to_it_for_test(tmp_path, caplog):
    write_classes(tmp_path / "train", {"a": 10, "b": 10})
    with caplog.at_level(logging.INFO):
        dm = make_dm(tmp_path, val_fraction=0.3)
    assert sizes(dm) == {"train": 14, "val": 6, "test": 6}
    assert dm.class_counts("val") == [3, 3] and dm.datasets["test"].paths == dm.datasets["val"].paths
    assert "no test split" in caplog.text and "30% of train (no val folder)" in caplog.text

    write_classes(tmp_path / "val", {"a": 2, "b": 2})
    write_classes(tmp_path / "test", {"a": 3, "b": 3})
    assert sizes(make_dm(tmp_path)) == {"train": 20, "val": 4, "test": 6}


def test_class_folders_split_by_three_fractions(tmp_path):
    write_classes(tmp_path, {"x": 20, "y": 20, "z": 20})
    dm = make_dm(tmp_path, layout="classes", fractions=[0.7, 0.15, 0.15])
    assert dm.class_names == ["x", "y", "z"]
    assert sizes(dm) == {"train": 42, "val": 9, "test": 9}
    assert dm.class_counts("test") == [3, 3, 3]
    paths = [p for ds in dm.datasets.values() for p in ds.paths]
    assert len(set(paths)) == 60  # disjoint and complete


def test_labels_from_file_names(tmp_path):
    write_classes(tmp_path / "train", {"cat": 5, "dog": 5}, template="{c}.{i}.jpg")
    dm = make_dm(tmp_path, layout="filenames", folder="train", label_pattern=r"^(cat|dog)\.", fractions=[0.6, 0.4])
    assert dm.class_names == ["cat", "dog"] and sizes(dm)["val"] == 4
    for path, label in zip(dm.datasets["train"].paths, dm.datasets["train"].labels, strict=True):
        assert path.name.startswith(dm.class_names[label])
    write_image(tmp_path / "train" / "bird.1.jpg", np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"finds no class in 1 file names.*bird\.1\.jpg"):
        make_dm(tmp_path, layout="filenames", folder="train", label_pattern=r"^(cat|dog)\.")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "tree"}, "data.layout='tree'; valid: splits, classes, filenames"),
        ({"layout": "filenames", "label_pattern": "cat"}, "needs a group"),
        ({"layout": "filenames", "label_pattern": "(cat"}, "not a valid regex"),
        ({"bad_images": "ignore"}, "data.bad_images='ignore'; valid: error, skip"),
        ({"fractions": [0.5, 0.4]}, "data.fractions"),
        ({"sampler": "balanced"}, "data.sampler='balanced'; valid: null, weighted"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ImageFolderDataModule(root=tmp_path, **kwargs)


def test_class_missing_from_a_split_or_unexpected_classes(tmp_path):
    write_classes(tmp_path / "train", {"a": 4, "b": 4, "c": 4})
    write_classes(tmp_path / "test", {"a": 2, "b": 2})
    with pytest.raises(ConfigError, match=r"class \['c'\] has no images in the test split"):
        make_dm(tmp_path)
    write_classes(tmp_path / "test", {"c": 2})
    with pytest.raises(ConfigError, match=r"data.classes=\['a', 'b'\] but .* has classes \['a', 'b', 'c'\]"):
        make_dm(tmp_path, classes=["b", "a"])


def test_carved_validation_split_is_never_augmented(tmp_path):
    write_classes(tmp_path / "train", {"a": 6, "b": 6})
    dm = make_dm(tmp_path, augment=[v2.RandomInvert(p=1.0)], normalize="none")
    eval_tf = eval_transform(dm.preprocessing())
    for split, inverted in (("train", True), ("val", False), ("test", False)):
        image = as_unit_floats(dm.datasets[split][0][0])
        plain = eval_tf(load_rgb(dm.datasets[split].paths[0]))
        assert torch.allclose(image, 1 - plain if inverted else plain, atol=1e-6), split


def test_k_fold_validation_parts_cover_train_and_val(tmp_path):
    write_classes(tmp_path / "train", {"a": 9, "b": 6})
    write_classes(tmp_path / "test", {"a": 2, "b": 2})
    folds = [make_dm(tmp_path, num_folds=3, fold=k) for k in range(3)]
    vals = [set(dm.datasets["val"].paths) for dm in folds]
    assert all(len(v) == 5 for v in vals) and len(set.union(*vals)) == 15
    assert all(dm.class_counts("val") == [3, 2] for dm in folds)  # stratified folds
    assert all(len(dm.datasets["test"]) == 4 for dm in folds)


def test_weighted_sampler_balances_imbalanced_classes(tmp_path):
    write_classes(tmp_path / "train", {"common": 24, "rare": 4})
    write_classes(tmp_path / "val", {"common": 2, "rare": 2})
    dm = make_dm(tmp_path, sampler="weighted", batch_size=28)
    torch.manual_seed(0)
    labels = torch.cat([y for _ in range(30) for _, y in dm.train_dataloader()])
    assert len(labels) == 30 * 28  # same epoch length
    assert abs(labels.float().mean().item() - 0.5) < 0.05  # plain shuffling would give 4 / 28 = 0.14


def test_crop_ratio_resizes_then_centre_crops(tmp_path):
    write_classes(tmp_path / "train", {"a": 5, "b": 5})
    dm = make_dm(tmp_path, crop_ratio=0.5, normalize="none")
    image = as_unit_floats(dm.datasets["val"][0][0])
    source = load_rgb(dm.datasets["val"].paths[0])
    expected = v2.functional.center_crop(v2.functional.resize(v2.functional.to_image(source), 64), 32)
    assert image.shape == (3, 32, 32)
    assert torch.allclose(image, expected.float() / 255, atol=1e-6)
    assert dm.preprocessing()["crop_ratio"] == 0.5
    assert torch.allclose(eval_transform(dm.preprocessing())(source), image, atol=1e-6)  # what prediction uses


def test_image_files_keep_their_paths_in_one_array_workers_need_not_copy(tmp_path):
    """No `Path` object per file (one refcount write per read would copy its memory into every worker)."""
    from lightning_resnet.data.datasets import ImageFileDataset

    rng = np.random.default_rng(0)
    files = [write_image(tmp_path / name, rng) for name in ("a.png", "café/ß.jpg", "c.png")]
    dataset = ImageFileDataset(files, [0, 1, 0])
    assert isinstance(dataset._paths, np.ndarray) and dataset._paths.dtype.kind == "S"
    assert dataset.paths == files and len(dataset) == 3  # non-ASCII names round-trip
    image, label = dataset[1]
    assert image.size == (40, 32) and label == 1
