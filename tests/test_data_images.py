"""Robust image reading on a messy folder: every odd-but-valid image loads as RGB, every bad file is reported."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lightning_resnet.builders import build_datamodule
from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.data.datasets import ImageFileDataset
from lightning_resnet.data.images import BadImagesError, draft_side, load_rgb
from lightning_resnet.data.pixels import decode_resized
from lightning_resnet.data.transforms import resize_ops
from lightning_resnet.tasks.prepare import main as prepare_main
from lightning_resnet.tasks.train import run
from tests.miniature import write_image


def _exif_rotated(path: Path) -> Path:
    """40x20 stored, red left half; EXIF orientation 6 says: display rotated 90 degrees clockwise."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def make_messy_folder(root: Path) -> dict[str, Path]:
    """`root/{cat,dog}/` with odd valid images and bad files, `root/bird/` empty; returns the notable paths."""
    rng = np.random.default_rng(0)
    cat, dog = root / "cat", root / "dog"
    for i in range(4):
        write_image(cat / f"plain{i}.jpg", rng, 1)
        write_image(dog / f"plain{i}.png", rng, 2)
    files = {
        "rgba": cat / "rgba.png",
        "gray": cat / "gray.png",
        "cmyk": cat / "cmyk.jpg",
        "deep": dog / "deep16.png",
        "rotated": dog / "rotated.jpg",
        "zero": cat / "zero.jpg",
        "truncated": dog / "truncated.jpg",
        "text": cat / "notes.jpg",
    }
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:8] = (0, 0, 255, 255)  # top half opaque blue, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    Image.new("L", (16, 16), 77).save(files["gray"])
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(files["cmyk"], quality=95)  # pure red in CMYK
    ramp = np.tile(np.linspace(1000, 61000, 32, dtype=np.uint16), (8, 1))
    Image.fromarray(ramp).save(files["deep"])  # 16-bit grayscale PNG
    _exif_rotated(files["rotated"])
    files["zero"].write_bytes(b"")
    whole = write_image(root / "whole.jpg", rng, 3, (64, 64)).read_bytes()
    (root / "whole.jpg").unlink()
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    files["text"].write_text("this is not a picture\n")
    (cat / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (dog / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "bird").mkdir()
    return files


BAD = ("zero", "truncated", "text")


def test_16_bit_images_keep_their_absolute_intensity(tmp_path):
    scene = np.tile(np.linspace(0, 1, 16), (16, 1))  # one scene, scanned dark and bright
    for name, scale in (("dark", 8000), ("bright", 60000)):
        Image.fromarray((scene * scale).astype(np.uint16)).save(tmp_path / f"{name}.png")
    Image.fromarray((scene * 0.5).astype(np.float32)).save(tmp_path / "float.tif")
    dark, bright = (np.asarray(load_rgb(tmp_path / f"{n}.png"))[0, :, 0] for n in ("dark", "bright"))
    assert dark.max() == round(8000 * 255 / 65535) and bright.max() == round(60000 * 255 / 65535)
    assert np.asarray(load_rgb(tmp_path / "float.tif")).max() == 128  # float images: [0, 1] -> [0, 255]
    stretched = [np.asarray(load_rgb(tmp_path / f"{n}.png", "per_image")) for n in ("dark", "bright")]
    assert (stretched[0] == stretched[1]).all() and stretched[0].max() == 255  # the explicit windowing


def test_odd_but_valid_images_load_as_rgb(tmp_path):
    files = make_messy_folder(tmp_path)
    images = {name: load_rgb(files[name]) for name in ("rgba", "gray", "cmyk", "deep", "rotated")}
    assert all(image.mode == "RGB" for image in images.values())
    rgba = np.asarray(images["rgba"])
    assert (rgba[0, 0] == (0, 0, 255)).all() and (rgba[-1, -1] == (255, 255, 255)).all()  # on white
    assert (np.asarray(images["gray"]) == 77).all()
    assert np.abs(np.asarray(images["cmyk"]).astype(int) - (255, 0, 0)).max() < 8
    deep = np.asarray(images["deep"])[0, :, 0]
    assert deep[0] == 4 and deep[-1] == 237 and (np.diff(deep.astype(int)) >= 0).all()  # v * 255 / 65535
    rotated = np.asarray(images["rotated"])
    assert rotated.shape == (40, 20, 3)  # portrait after applying EXIF orientation
    assert rotated[2, 10, 0] > 200 and rotated[-3, 10, 0] < 50  # the red half went to the top


def _messy_dm(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs = {"layout": "classes", "fractions": [0.5, 0.5], "image_size": 32, "batch_size": 4, "num_workers": 0,
              "normalize": "imagenet", **kwargs}  # fmt: skip
    return ImageFolderDataModule(root=root, **kwargs)


def test_messy_folder_reports_every_bad_file_before_training(tmp_path):
    files = make_messy_folder(tmp_path)
    with pytest.raises(BadImagesError) as err:
        _messy_dm(tmp_path).setup("fit")
    assert set(err.value.problems) == {*(str(files[name]) for name in BAD), str(tmp_path / "bird")}
    message = str(err.value)
    assert "empty file (0 bytes)" in message and "cannot decode" in message and "not an image" in message
    assert "data.bad_images=skip" in message
    assert ".DS_Store" not in message and "Thumbs.db" not in message and "rgba" not in message


@pytest.mark.slow
def test_messy_folder_trains_with_skip_in_worker_processes(make_cfg, tmp_path, caplog):
    files = make_messy_folder(tmp_path / "messy")
    cfg = make_cfg("data=folder", f"data.root={tmp_path / 'messy'}", "data.layout=classes", "data.bad_images=skip",
                   "data.fractions=[0.5,0.5]", "data.num_workers=1", "trainer.fast_dev_run=true")  # fmt: skip
    metrics = run(cfg)
    assert np.isfinite(metrics["test"]["test/loss"])
    for name in BAD:
        assert str(files[name]) in caplog.text
    dm = build_datamodule(cfg)
    assert dm.class_names == ["cat", "dog"]  # the empty bird folder is left out too
    used = {p.name for ds in dm.datasets.values() for p in ds.paths}
    assert used.isdisjoint({files[name].name for name in BAD}) and {"rgba.png", "deep16.png"} <= used


def test_verification_is_cached_until_the_files_change(tmp_path, monkeypatch):
    make_messy_folder(tmp_path)
    calls = []
    import lightning_resnet.data.folder as folder

    real = folder.find_bad_images
    monkeypatch.setattr(folder, "find_bad_images", lambda paths, *a: calls.append(len(paths)) or real(paths, *a))
    for _ in range(2):
        _messy_dm(tmp_path, bad_images="skip").setup("fit")
    assert len(calls) == 1  # the second setup read the cache
    write_image(tmp_path / "dog" / "new.png", np.random.default_rng(1), 2)
    _messy_dm(tmp_path, bad_images="skip").setup("fit")
    assert len(calls) == 2 and calls[1] == calls[0] + 1


def test_scan_command_lists_every_bad_file(tmp_path, capsys):
    files = make_messy_folder(tmp_path)
    status = prepare_main(["scan", "data=folder", f"data.root={tmp_path}", "data.layout=classes"])
    out = capsys.readouterr().out
    assert status == 1
    for name in BAD:
        assert str(files[name]) in out
    assert f"{tmp_path / 'bird'}: class folder without images" in out
    assert "all: 16 images" in out and "3 bad files" not in out and "4 bad files" in out
    assert "Thumbs.db" in out  # reported as ignored, not as bad

    (files["zero"]).unlink()
    files["truncated"].unlink()
    files["text"].unlink()
    (tmp_path / "bird").rmdir()
    assert prepare_main(["scan", "data=folder", f"data.root={tmp_path}", "data.layout=classes"]) == 0
    assert "0 bad files" in capsys.readouterr().out


def test_prepare_dispatcher_lists_its_commands(capsys):
    assert prepare_main([]) == 2
    assert prepare_main(["os"]) == 2  # never imports a module named on the command line
    err = capsys.readouterr()
    assert "unknown command 'os'" in err.err and "scan" in err.err and "openimages" in err.err
    assert prepare_main(["scan", "data=digits"]) == 0
    assert "no files to scan" in capsys.readouterr().out
    assert prepare_main(["scan", "data=folder", "data.root=/nonexistent/x"]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- reduced-scale JPEG decoding: training, the pixel cache and prediction read the same pixels --------


def _gradient_jpeg(path: Path, width: int, height: int) -> Path:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    checks = (np.indices((height, width)).sum(axis=0) // 7 % 2 * 40)[:, :, None]  # edges, like a photo's
    pixels = np.broadcast_to((x + y) / 2 + checks, (height, width, 3)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def test_jpegs_twice_the_target_side_decode_at_reduced_scale_the_rest_exactly(tmp_path):
    big = _gradient_jpeg(tmp_path / "big.jpg", 400, 300)
    full = np.asarray(load_rgb(big))
    assert full.shape == (300, 400, 3)  # no target size: the whole image
    assert load_rgb(big, draft_size=64).size == (100, 75)  # 1/4: the smallest scale keeping 64 px a side
    assert load_rgb(big, draft_size=150).size == (200, 150)  # exactly twice: 1/2
    assert np.array_equal(np.asarray(load_rgb(big, draft_size=151)), full)  # under twice: a full decode
    png = tmp_path / "big.png"
    Image.fromarray(full).save(png)
    assert load_rgb(png, draft_size=64).size == (400, 300)  # other formats always decode in full

    resize = v2.Compose(resize_ops(64))
    cached = decode_resized(big, 64)  # the pixel cache's decode
    as_files = ImageFileDataset([big], transform=resize, draft_size=draft_side(64))[0][0]  # training, prediction
    assert torch.equal(cached, as_files)
    difference = (cached.int() - resize(Image.fromarray(full)).int()).abs().float()
    assert difference.mean() < 2 and difference.max() < 40  # the same picture, pixels a little apart


def test_images_returned_without_a_copy_stay_usable(tmp_path):
    jpeg = write_image(tmp_path / "upright.jpg", np.random.default_rng(0), 1)
    assert np.asarray(load_rgb(jpeg)).shape == (32, 40, 3)  # not a closed image
    frames = [Image.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(2)]
    frames[0].save(tmp_path / "two.tif", save_all=True, append_images=frames[1:])
    image = load_rgb(tmp_path / "two.tif")  # a multi-frame file keeps its handle open: copied, closed
    assert image.mode == "RGB" and (np.asarray(image) == 0).all()
