"""Bad inputs on the data side: every one gets an early error naming the file, or is skipped and named.

A split that lost a class, decompression bombs, dangling symbolic links and classes too small to split;
real image files in temporary folders, tiny settings.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.data.cache import fingerprint
from lightning_resnet.data.datasets import ImageFileDataset
from lightning_resnet.data.images import (
    DEFAULT_MAX_PIXELS,
    DRAFT_FACTOR,
    BadImageError,
    BadImagesError,
    find_bad_images,
    load_rgb,
)
from lightning_resnet.data.pixels import decode_resized
from lightning_resnet.data.splits import split_indices
from lightning_resnet.data.transforms import resize_ops
from lightning_resnet.errors import ConfigError
from lightning_resnet.inference.predictor import image_dataset, predict_images
from lightning_resnet.models.classifier import ResNetClassifier, classification_metrics
from lightning_resnet.reporting.classification_report import classification_report
from lightning_resnet.tasks.prepare import main as prepare_main
from lightning_resnet.tasks.train import run
from tests.conftest import compose_config
from tests.miniature import write_image

BOMB_SIDE = 30000


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A valid 30000 x 30000 all-black 1-bit PNG: ~110 KB on disk, 900 MB once decoded (0.4 s to make).

    The IDAT stream is compressed row by row, so the 112 MB of raw rows never exist at once.
    """
    row = bytes(1 + (BOMB_SIDE + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(BOMB_SIDE)) + compressor.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def write_classes(folder: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(len(counts))
    for tint, (name, count) in enumerate(counts.items()):
        for i in range(count):
            write_image(folder / name / f"{i}.png", rng, tint)
    return folder


def make_dm(root: Path, **kwargs) -> ImageFolderDataModule:
    settings = {"layout": "classes", "fractions": [0.5, 0.5], "image_size": 16, "batch_size": 4, "num_workers": 0,
                "normalize": "imagenet", **kwargs}  # fmt: skip
    dm = ImageFolderDataModule(root=root, **settings)
    dm.setup("fit")
    return dm


def used_paths(dm: ImageFolderDataModule) -> set[str]:
    return {str(p) for ds in dm.datasets.values() for p in ds.paths}


# -- 7: a split that lost a class ------------------------------------------------------------------------
def test_a_split_that_lost_a_class_is_named_in_a_warning(tmp_path, caplog):
    write_classes(tmp_path, {"ant": 2, "bee": 10, "cow": 10})
    with caplog.at_level(logging.WARNING):
        dm = make_dm(tmp_path, fractions=[0.8, 0.1, 0.1])
    assert 0 not in dm.datasets["test"].labels  # the stratified carve left no ant in val or test
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("test" in w and "'ant'" in w and "bee" not in w for w in warnings), warnings
    assert any("val" in w and "'ant'" in w for w in warnings), warnings


def test_macro_metrics_average_over_every_class_as_the_report_does():
    targets = torch.tensor([1, 1, 2, 2, 2])  # class 0 is absent from this split
    logits = torch.nn.functional.one_hot(torch.tensor([1, 1, 2, 2, 1]), 3).float()
    metrics = classification_metrics(3, "test/")
    metrics.update(logits, targets)
    ours = {name: float(value) for name, value in metrics.compute().items()}
    report = classification_report(logits.argmax(1), targets, ["ant", "bee", "cow"])["macro avg"]
    for name in ("f1", "precision", "recall"):
        assert ours[f"test/{name}"] == pytest.approx(report[name], abs=1e-6), name
    assert ours["test/acc"] == pytest.approx(0.8)
    perfect = classification_metrics(3, "test/")
    perfect.update(torch.nn.functional.one_hot(targets, 3).float(), targets)
    assert float(perfect.compute()["test/f1"]) == pytest.approx(2 / 3)  # not 1.0: ant scores 0, as in the report


@pytest.mark.slow
def test_training_on_a_split_that_lost_a_class_warns_and_f1_agrees_with_the_report(make_cfg, tmp_path, caplog):
    write_classes(tmp_path / "data", {"ant": 2, "bee": 10, "cow": 10})
    cfg = make_cfg("data=folder", f"data.root={tmp_path / 'data'}", "data.layout=classes", "data.num_workers=0",
                   "data.fractions=[0.8,0.1,0.1]", "trainer.max_epochs=1")  # fmt: skip
    with caplog.at_level(logging.WARNING):
        metrics = run(cfg)
    assert "'ant'" in caplog.text
    assert metrics["report"]["macro_f1"] == pytest.approx(metrics["test"]["test/f1"], abs=1e-6)


# -- 8: decompression bombs ------------------------------------------------------------------------------
def test_a_decompression_bomb_is_a_bad_image_naming_the_file(tmp_path, bomb_png):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(BadImageError) as err:
        load_rgb(bomb)
    assert err.value.path == str(bomb) and "900,000,000 pixels" in err.value.reason
    assert "max_image_pixels" in err.value.reason
    assert find_bad_images([bomb]) == {str(bomb): err.value.reason}
    assert str(bomb) in find_bad_images([bomb], 1, False, DEFAULT_MAX_PIXELS, False)  # the header alone tells


def test_max_image_pixels_is_a_limit_of_our_own(tmp_path, monkeypatch):
    assert DEFAULT_MAX_PIXELS == 2 * 89478485  # PIL's own error threshold: nothing PIL read before is refused
    path = write_image(tmp_path / "a.png", np.random.default_rng(0), size=(100, 50))
    with pytest.raises(BadImageError, match="5,000 pixels, over the limit of 4,999"):
        load_rgb(path, max_pixels=4999)
    assert load_rgb(path, max_pixels=5000).size == (100, 50)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL would refuse 5,000 pixels (> 2 x 1,000) at open
    with pytest.raises(BadImageError, match="over the limit of 2,000"):
        load_rgb(path, max_pixels=2000)
    assert load_rgb(path, max_pixels=None).size == (100, 50)  # null: no limit, PIL's included
    assert load_rgb(path, max_pixels=10**9).size == (100, 50)
    with pytest.raises(ConfigError, match="data.max_image_pixels"):
        ImageFolderDataModule(root=tmp_path, max_image_pixels=0)
    assert compose_config(tmp_path, ["data=folder", "data.root=x"]).data.max_image_pixels == DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("verify", [True, False])
def test_a_bomb_in_a_class_folder_follows_the_bad_images_policy(tmp_path, bomb_png, caplog, verify):
    write_classes(tmp_path, {"cat": 4, "dog": 4})
    bomb = tmp_path / "dog" / "bomb.png"
    bomb.write_bytes(bomb_png)
    with pytest.raises(BadImagesError) as err:
        make_dm(tmp_path, verify=verify)
    assert set(err.value.problems) == {str(bomb)} and str(bomb) in str(err.value)
    with caplog.at_level(logging.WARNING):
        dm = make_dm(tmp_path, verify=verify, bad_images="skip")
    assert str(bomb) not in used_paths(dm) and len(used_paths(dm)) == 8
    assert str(bomb) in caplog.text and "pixels" in caplog.text


def test_scan_lists_a_bomb(tmp_path, bomb_png, capsys):
    write_classes(tmp_path, {"cat": 2, "dog": 2})
    bomb = tmp_path / "cat" / "bomb.png"
    bomb.write_bytes(bomb_png)
    assert prepare_main(["scan", "data=folder", f"data.root={tmp_path}", "data.layout=classes"]) == 1
    out = capsys.readouterr().out
    assert f"{bomb}: 900,000,000 pixels, over the limit of 178,956,970" in out and "1 bad files" in out


def test_predict_lists_a_bomb_as_an_error(tmp_path, bomb_png):
    good = write_image(tmp_path / "good.jpg", np.random.default_rng(0))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png)
    model = ResNetClassifier(arch="resnet18", num_classes=2, class_names=["a", "b"]).eval()
    model.preprocessing = {"image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}
    predictions = predict_images(model, [good, bomb], tmp_path, batch_size=2, bad_images="skip")
    assert predictions[0].probs is not None and predictions[1].probs is None
    assert predictions[1].file == "bomb.png" and "900,000,000 pixels" in predictions[1].error
    with pytest.raises(BadImagesError, match="bomb.png"):
        predict_images(model, [good, bomb], tmp_path, bad_images="error")
    assert image_dataset(model, [good]).draft_size == 16  # large JPEGs read as training read them


@pytest.mark.slow
def test_training_skips_a_bomb_without_verify_in_worker_processes(make_cfg, tmp_path, bomb_png, caplog):
    write_classes(tmp_path / "data", {"cat": 4, "dog": 4})
    bomb = tmp_path / "data" / "cat" / "bomb.png"
    bomb.write_bytes(bomb_png)
    cfg = make_cfg("data=folder", f"data.root={tmp_path / 'data'}", "data.layout=classes", "data.bad_images=skip",
                   "data.verify=false", "data.fractions=[0.5,0.5]", "data.num_workers=1",
                   "trainer.fast_dev_run=true")  # fmt: skip
    metrics = run(cfg)
    assert np.isfinite(metrics["test"]["test/loss"]) and str(bomb) in caplog.text


def _gradient_jpeg(path: Path, width: int, height: int) -> Path:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def test_large_jpegs_are_decoded_at_reduced_scale_small_ones_exactly(tmp_path):
    big = _gradient_jpeg(tmp_path / "big.jpg", 4800, 3600)  # 17.3 MP
    assert load_rgb(big).size == (4800, 3600)  # no target size: the full image
    drafted = load_rgb(big, draft_size=32)
    assert drafted.size == (600, 450)  # libjpeg's 1/8 scale: 64x fewer pixels, still >= 32 px a side
    assert load_rgb(big, draft_size=800).size == (1200, 900)  # 1/4: the largest scale that keeps 800 px
    resized = decode_resized(big, 32)  # the pixel cache's decode
    reference = v2.functional.resize(v2.functional.pil_to_tensor(drafted), [32, 32], antialias=True)
    assert torch.equal(resized, reference)  # the drafted image, resized as a uint8 tensor
    with_pil = torch.from_numpy(np.array(drafted.resize((32, 32), Image.Resampling.BILINEAR))).permute(2, 0, 1)
    assert (resized.int() - with_pil.int()).abs().max() <= 1  # PIL's resize: the same pixels to 1 grey level
    as_files = ImageFileDataset([big], transform=v2.Compose(resize_ops(32)), draft_size=32)
    assert torch.equal(as_files[0][0], resized)  # the file path of training and prediction: the same pixels
    full = torch.from_numpy(np.array(load_rgb(big).resize((32, 32), Image.Resampling.BILINEAR))).permute(2, 0, 1)
    assert (resized.int() - full.int()).abs().float().mean() < 2  # the same picture
    small = _gradient_jpeg(tmp_path / "small.jpg", 640, 480)  # under DRAFT_FACTOR x the target: exact
    assert np.array_equal(np.asarray(load_rgb(small, draft_size=241)), np.asarray(load_rgb(small)))
    assert load_rgb(small, draft_size=240).size == (320, 240)  # DRAFT_FACTOR x the target: reduced
    assert DRAFT_FACTOR == 2


# -- 9: dangling symbolic links --------------------------------------------------------------------------
@pytest.mark.parametrize("verify", [True, False])
def test_a_dangling_symlink_is_a_bad_file_naming_its_target(tmp_path, caplog, verify):
    write_classes(tmp_path, {"cat": 4, "dog": 4})
    link = tmp_path / "cat" / "gone.jpg"
    link.symlink_to(tmp_path / "elsewhere" / "moved.jpg")
    fingerprint([link])  # a key, not a FileNotFoundError
    with pytest.raises(BadImagesError) as err:
        make_dm(tmp_path, verify=verify)
    reason = err.value.problems[str(link)]
    assert "broken symbolic link" in reason and str(tmp_path / "elsewhere" / "moved.jpg") in reason
    with caplog.at_level(logging.WARNING):
        dm = make_dm(tmp_path, verify=verify, bad_images="skip")
    assert str(link) not in used_paths(dm) and str(link) in caplog.text


def test_scan_lists_a_dangling_symlink(tmp_path, capsys):
    write_classes(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "dog" / "gone.png").symlink_to("nowhere.png")
    assert prepare_main(["scan", "data=folder", f"data.root={tmp_path}", "data.layout=classes"]) == 1
    assert f"{tmp_path / 'dog' / 'gone.png'}: broken symbolic link" in capsys.readouterr().out


def test_fingerprint_changes_when_a_dangling_link_is_repointed(tmp_path):
    link = tmp_path / "a.png"
    link.symlink_to("one.png")
    first = fingerprint([link])
    link.unlink()
    link.symlink_to("two.png")
    assert fingerprint([link]) != first


# -- 13: classes too small to split are named ------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")  # scikit-learn's, unnamed
def test_a_class_too_small_to_split_is_named_not_numbered(tmp_path, caplog):
    write_classes(tmp_path / "pool", {"ant": 10, "bee": 10, "rare": 1})
    with pytest.raises(ConfigError) as err:
        make_dm(tmp_path / "pool", fractions=[0.8, 0.1, 0.1])
    message = str(err.value)
    assert "too few images in class 'rare' (1 image)" in message and "[2]" not in message
    with pytest.raises(ConfigError, match=r"class 'ant' \(2 images\), 'bee' \(3 images\); 5 folds need at least 5"):
        split_indices([0] * 2 + [1] * 3, 0.2, 0, num_folds=5, class_names=["ant", "bee"])
    with caplog.at_level(logging.WARNING):  # scikit-learn only warns when one class is smaller than the folds
        for fold in range(5):
            split_indices([0] * 10 + [1] * 3, 0.2, 0, num_folds=5, fold=fold, class_names=["ant", "bee"])
    assert "the val split has no image of class 'bee' (3 images in all)" in caplog.text
    write_classes(tmp_path / "splits" / "train", {"ant": 4, "bee": 4})
    write_classes(tmp_path / "splits" / "test", {"ant": 2})
    with pytest.raises(ConfigError, match=r"class \['bee'\] has no images in the test split"):
        make_dm(tmp_path / "splits", layout="splits")
