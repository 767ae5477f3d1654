"""The pixel cache (`data.cache`) and device-side augmentation (`data.augment_on`): same images, same
augmentation semantics as the PIL path, decoded once and rebuilt when the files change."""

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lightning_resnet.data import ImageFolderDataModule, pixels
from lightning_resnet.errors import ConfigError
from tests.miniature import write_image


def write_folder(root: Path, per_class: int = 6) -> Path:
    """Class folders of real JPEG and PNG files of varied sizes (so the resize does real work)."""
    rng = np.random.default_rng(0)
    for tint, name in enumerate(("a", "b")):
        for i in range(per_class):
            size = (50 + 7 * i, 40 + 3 * i) if i % 2 else (36, 61)
            write_image(root / name / f"{i}.{'jpg' if i % 3 else 'png'}", rng, tint, size)
    return root


def make_dm(root: Path, **kwargs) -> ImageFolderDataModule:
    settings = {"layout": "classes", "image_size": 24, "batch_size": 4, "num_workers": 0, "augment_on": "cpu"}
    dm = ImageFolderDataModule(root=root, **{**settings, **kwargs})
    dm.setup("fit")
    return dm


@pytest.fixture
def decode_calls(monkeypatch) -> list[str]:
    """Every image the pixel cache decodes."""
    calls: list[str] = []
    decode = pixels.decode_resized

    def counting(path, *args):
        calls.append(str(path))
        return decode(path, *args)

    monkeypatch.setattr(pixels, "decode_resized", counting)
    return calls


def test_disk_cache_is_built_once_memory_mapped_and_rebuilt_when_files_change(tmp_path, decode_calls):
    root = write_folder(tmp_path / "data")
    dm = make_dm(root, cache="disk")
    files = list((root / ".lightning_resnet").glob("pixels-*.npy"))
    assert len(files) == 1 and len(decode_calls) == 12  # every split's files, once
    train = dm.datasets["train"]
    assert isinstance(train.pixels.array, np.memmap) and train.pixels.array.shape == (12, 3, 24, 24)
    image, label = train[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and label in (0, 1)
    copy = pickle.loads(pickle.dumps(train.pixels))  # what a spawned worker gets: the path, mapped there
    assert copy._array is None and torch.equal(copy[3], train.pixels[3])

    make_dm(root, cache="disk", seed=3)  # another split of the same files: the same cache
    assert len(decode_calls) == 12

    os.utime(root / "a" / "1.jpg", ns=(1, 1))  # touched: a new fingerprint, a new cache
    make_dm(root, cache="disk")
    assert len(decode_calls) == 24
    write_image(root / "b" / "new.jpg", np.random.default_rng(1), 1)  # added
    assert len(make_dm(root, cache="disk").datasets["train"].pixels) == 13
    assert len(decode_calls) == 37
    assert not list((root / ".lightning_resnet").glob("*.tmp*"))  # written atomically, no leftovers


def test_cached_images_equal_the_pil_path_without_augmentation(tmp_path, decode_calls):
    root = write_folder(tmp_path / "data")
    for crop_ratio in (None, 0.875):
        plain = make_dm(root, crop_ratio=crop_ratio, normalize="imagenet")
        cached = make_dm(root, crop_ratio=crop_ratio, normalize="imagenet", cache="memory")
        for split in ("train", "val", "test"):
            assert plain.datasets[split].paths == cached.datasets[split].paths
            for (x, y), (cx, cy) in zip(plain.datasets[split], cached.datasets[split], strict=True):
                assert cx.shape == x.shape == (3, 24, 24) and cx.dtype == x.dtype == torch.uint8
                assert torch.equal(cx, x) and cy == y  # the same PIL resize, cached
        batch, cached_batch = next(iter(plain.val_dataloader())), next(iter(cached.val_dataloader()))
        assert batch[0].dtype == cached_batch[0].dtype == torch.uint8 and torch.equal(batch[0], cached_batch[0])
        normalised = plain.model_input(batch)[0]
        assert normalised.dtype == torch.float32 and torch.allclose(cached.model_input(cached_batch)[0], normalised)
    assert len(decode_calls) == 24  # 12 files per geometry


def test_normalize_auto_from_the_cache_matches_decoding(tmp_path):
    root = write_folder(tmp_path / "data")
    plain = make_dm(root, normalize="auto", cache_dir=tmp_path / "a")
    cached = make_dm(root, normalize="auto", cache_dir=tmp_path / "b", cache="memory")
    assert cached.mean == pytest.approx(plain.mean, abs=1e-9) and cached.std == pytest.approx(plain.std, abs=1e-9)


def half_dark_folder(root: Path) -> Path:
    """Two classes of one image each whose left half is dark: a horizontal flip shows."""
    pixels_ = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels_[:, 24:] = 250
    for name in ("a", "b"):
        for i in range(4):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels_).save(root / name / f"{i}.png")
    return root


def flipped(images: torch.Tensor) -> torch.Tensor:
    """Per image (N, C, H, W): is the left half the bright one?"""
    width, images = images.shape[-1], images.float()
    return images[..., : width // 2].mean(dim=(1, 2, 3)) > images[..., width // 2 :].mean(dim=(1, 2, 3))


@pytest.mark.parametrize("cache", [None, "memory"])
def test_random_flip_is_drawn_per_image_with_and_without_the_cache(tmp_path, cache):
    root = half_dark_folder(tmp_path / "data")
    torch.manual_seed(0)
    dm = make_dm(root, cache=cache, augment=[v2.RandomHorizontalFlip(p=0.5)], normalize=None)
    train = dm.datasets["train"]
    draws = torch.stack([train[0][0] for _ in range(400)])
    assert 0.4 < flipped(draws).float().mean() < 0.6

    # augment_on=gpu (run here on the CPU): uint8 from the loader, the flip drawn per image after the transfer
    gpu = make_dm(root, cache=cache, augment=[v2.RandomHorizontalFlip(p=0.5)], normalize=None, augment_on="gpu")
    loader = gpu.train_dataloader()
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 24, 24)
    batch = images[:1].expand(400, -1, -1, -1)  # one image 400 times in one batch
    augmented, _ = gpu.model_input((batch, labels[:1].expand(400)), train=True)
    assert augmented.dtype == torch.float32 and augmented.max() <= 1.0
    assert 0.4 < flipped(augmented).float().mean() < 0.6  # not one draw for the whole batch


@pytest.mark.parametrize("cache", [None, "memory"])
def test_every_loader_ships_uint8_and_the_device_normalises_and_mixes(tmp_path, cache):
    root = write_folder(tmp_path / "data")
    dm = make_dm(root, cache=cache, augment_on="gpu", batch_augment=[v2.MixUp(num_classes=2)], normalize="imagenet")
    mean, std = torch.tensor(dm.mean).view(1, 3, 1, 1), torch.tensor(dm.std).view(1, 3, 1, 1)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        images, labels = next(iter(loader))
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 24, 24) and labels.dtype == torch.long
        x, y = dm.model_input((images, labels))  # evaluation: normalised, never augmented or mixed
        assert torch.allclose(x, (images.float() / 255 - mean) / std, atol=1e-5) and torch.equal(y, labels)

    images, labels = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=True)  # what Lightning's hook sees while fitting
    mixed, soft = dm.on_after_batch_transfer((images, labels), 0)
    assert mixed.dtype == torch.float32 and soft.shape == (len(labels), 2)
    dm.trainer = SimpleNamespace(training=False)  # validating / testing: normalised only
    assert dm.on_after_batch_transfer((images, labels), 0)[1] is labels
    float_batch = (mixed, labels)  # a batch that is already float passes untouched
    assert dm.on_after_batch_transfer(float_batch, 0) is float_batch


def test_cache_options_are_checked(tmp_path):
    root = write_folder(tmp_path / "data", per_class=2)
    with pytest.raises(ConfigError, match=r"data.cache='ram'; valid: null, memory, disk"):
        ImageFolderDataModule(root=root, cache="ram")
    with pytest.raises(ConfigError, match=r"data.augment_on='tpu'; valid: auto, cpu, gpu"):
        ImageFolderDataModule(root=root, augment_on="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cache_decode=cuda needs a CUDA GPU"):
            ImageFolderDataModule(root=root, cache="disk", cache_decode="cuda")


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29 points to TorchCodec
def test_batched_jpeg_decode_is_close_to_pil_and_leaves_rotated_files_to_pil(tmp_path):
    """`cache_decode=cuda`'s decoder, run here with torchvision's CPU decoder: same shapes, close pixels;
    EXIF-rotated JPEGs and PNGs go through PIL (nvJPEG ignores the orientation)."""
    root = write_folder(tmp_path / "data")
    paths = sorted(root.rglob("*.*"))
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[pixels.EXIF_ORIENTATION] = 6  # rotate 90 degrees on display
    Image.open(paths[1]).save(rotated, exif=exif)
    paths.append(rotated)
    batch = pixels.decode_resized_jpegs(paths, 24, device="cpu")
    reference = torch.stack([pixels.decode_resized(p, 24) for p in paths])
    assert batch.shape == reference.shape == (len(paths), 3, 24, 24) and batch.dtype == torch.uint8
    difference = (batch.float() - reference.float()).abs().mean(dim=(1, 2, 3))
    assert difference.max() < 4  # another decoder and a tensor resize: a few grey levels at most
    assert difference[-1] == 0 and all(difference[i] == 0 for i, p in enumerate(paths) if p.suffix == ".png")
