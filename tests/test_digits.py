import pytest
import torch

from lightning_resnet.data import DigitsDataModule
from lightning_resnet.data.splits import split_indices
from lightning_resnet.errors import ConfigError


def _dm(**kwargs) -> DigitsDataModule:
    dm = DigitsDataModule(image_size=32, batch_size=16, num_workers=0, **kwargs)
    dm.setup("fit")
    return dm


def test_split_sizes_classes_and_stratification():
    dm = _dm()
    assert dm.num_classes == 10 and dm.class_names == [str(i) for i in range(10)]
    sizes = {s: len(d) for s, d in dm.datasets.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["train"] == pytest.approx(0.7 * 1797, abs=2)
    for split in ("train", "val", "test"):
        counts = torch.tensor(dm.class_counts(split), dtype=torch.float)
        share = counts / counts.sum()
        assert (share - 0.1).abs().max() < 0.02  # each class keeps its ~10 % share


def test_splits_are_disjoint_and_reproducible():
    labels = [i % 4 for i in range(200)]
    a = split_indices(labels, 0.25, seed=3, test_fraction=0.2)
    b = split_indices(labels, 0.25, seed=3, test_fraction=0.2)
    c = split_indices(labels, 0.25, seed=4, test_fraction=0.2)
    assert all((a[k] == b[k]).all() for k in a) and not (a["val"] == c["val"]).all()
    assert {k: len(v) for k, v in a.items()} == {"train": 120, "val": 40, "test": 40}
    merged = sorted(i for part in a.values() for i in part.tolist())
    assert merged == list(range(200))
    with pytest.raises(ConfigError, match="sum(ming)? to 1"):
        DigitsDataModule(fractions=[0.5, 0.2, 0.2])


def test_a_class_too_small_to_split_is_named():
    labels = [0] * 20 + [1] * 20 + [2]
    with pytest.raises(ConfigError, match=r"too few images in class 'tiny' \(1 image\)"):
        split_indices(labels, 0.2, seed=0, class_names=["cat", "dog", "tiny"])


def test_batch_shape_dtype_and_normalization():
    dm = _dm()
    x, y = dm.model_input(next(iter(dm.train_dataloader())), train=True)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    all_train = torch.cat([dm.model_input(b)[0] for b in dm.train_dataloader()])
    assert all_train.mean(dim=(0, 2, 3)).abs().max() < 1e-3  # normalize=auto: zero mean, unit std
    assert (all_train.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    raw = dm.datasets["train"].images()
    assert raw.dtype == torch.uint8 and raw.max() > 200  # real strokes, full range after upsampling


def test_imagenet_and_explicit_normalization():
    assert _dm(normalize="imagenet").mean == pytest.approx([0.485, 0.456, 0.406])
    dm = _dm(normalize={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    image, _ = dm.datasets["val"][0]
    x = dm.model_input((image[None], torch.zeros(1)))[0][0]
    raw = dm.datasets["val"].images(0, 1)[0].float() / 255
    assert torch.allclose(x, (raw - 0.5) / 0.25, atol=1e-5)
    assert dm.preprocessing() == {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}


def test_k_fold_validation_parts_are_disjoint_and_cover_the_pool():
    folds = [_dm(num_folds=3, fold=k) for k in range(3)]
    tests = {tuple(dm.datasets["test"].rows.tolist()) for dm in folds}
    assert len(tests) == 1  # the test split is held out, identical for every fold
    val_rows = [set(dm.datasets["val"].rows.tolist()) for dm in folds]
    pool = set(folds[0].datasets["train"].rows.tolist()) | val_rows[0]
    assert sum(len(v) for v in val_rows) == len(pool) == 1797 - len(folds[0].datasets["test"])
    assert set().union(*val_rows) == pool  # disjoint folds that cover train + val
    with pytest.raises(ConfigError, match="data.num_folds"):
        _dm(num_folds=3, fold=3)
