"""The augment group (per-image ops and MixUp/CutMix batches) and normalize=auto."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import v2

from lightning_resnet import CONFIG_DIR
from lightning_resnet.builders import build_datamodule
from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.tasks.train import run
from tests.miniature import write_image

AUGMENTS = sorted(p.stem for p in (CONFIG_DIR / "augment").glob("*.yaml"))


def _augment(name: str) -> dict:
    return instantiate(OmegaConf.load(CONFIG_DIR / "augment" / f"{name}.yaml"), _convert_="all")


@pytest.mark.parametrize("name", AUGMENTS)
def test_every_augment_config_builds_and_transforms_an_image(name):
    ops = _augment(name).get("ops", [])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    out = v2.Compose(ops)(image) if ops else image
    assert isinstance(out, Image.Image) and out.size == (32, 32)


def test_keras_yoga_maps_the_image_data_generator_arguments():
    affine, flip, jitter = _augment("keras_yoga")["ops"]
    assert isinstance(affine, v2.RandomAffine) and affine.degrees == [-30.0, 30.0]
    assert affine.translate == [0.2, 0.2] and affine.scale == [0.9, 1.1]
    assert affine.shear == [-0.15, 0.15]  # Keras' shear_range is in degrees
    assert isinstance(flip, v2.RandomHorizontalFlip) and jitter.brightness == (0.2, 1.0)


def _two_class_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for tint, name in enumerate(("a", "b")):
        for i in range(6):
            write_image(root / "train" / name / f"{i}.png", rng, tint, (32, 32))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_batch_augment_gives_soft_training_targets_only(make_cfg, tmp_path, name):
    root = _two_class_folder(tmp_path / "data")
    overrides = ["data=folder", f"data.root={root}", f"augment={name}", "data.num_workers=0", "data.batch_size=8"]
    dm = build_datamodule(make_cfg(*overrides))
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and labels.dtype == torch.long  # mixed on the device, after the transfer
    _, y = dm.model_input((images, labels), train=True)
    assert y.shape == (8, 2) and y.dtype == torch.float32
    assert torch.allclose(y.sum(dim=1), torch.ones(8)) and ((y > 0) & (y < 1)).any()
    _, y_val = dm.model_input(next(iter(dm.val_dataloader())))
    assert y_val.dtype == torch.long and y_val.ndim == 1
    if name == "mixup":  # the losses and metrics take the soft targets
        metrics = run(make_cfg(*overrides, "trainer.fast_dev_run=true"))
        assert np.isfinite(metrics["test"]["test/loss"])


def _pixels(paths: list[Path]) -> np.ndarray:
    return np.concatenate([np.asarray(Image.open(p).convert("RGB"), np.float64).reshape(-1, 3) / 255 for p in paths])


def test_auto_normalization_reproduces_the_hand_computed_statistics_and_is_cached(tmp_path):
    root = _two_class_folder(tmp_path)

    def setup() -> ImageFolderDataModule:
        dm = ImageFolderDataModule(root=root, image_size=32, num_workers=0, normalize="auto", val_fraction=0.5)
        dm.setup("fit")
        return dm

    dm = setup()
    expected = _pixels(dm.datasets["train"].paths)
    assert dm.mean == pytest.approx(expected.mean(axis=0).tolist(), abs=1e-9)
    assert dm.std == pytest.approx(expected.std(axis=0).tolist(), abs=1e-9)
    image, _ = dm.datasets["train"][0]
    assert image.dtype == torch.uint8  # the loaders ship uint8; normalised once per batch on the device
    x = dm.model_input((image[None], torch.zeros(1)))[0][0]
    raw = torch.as_tensor(np.asarray(Image.open(dm.datasets["train"].paths[0]).convert("RGB")) / 255.0)
    normalized = (raw.permute(2, 0, 1) - torch.tensor(dm.mean).view(3, 1, 1)) / torch.tensor(dm.std).view(3, 1, 1)
    assert torch.allclose(x, normalized.float(), atol=1e-5)

    cached = list((root / ".lightning_resnet").glob("normalize-*.json"))
    assert len(cached) == 1
    cached[0].write_text('{"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}')
    assert setup().mean == [0.1, 0.2, 0.3]  # same files: read from the cache

    changed = dm.datasets["train"].paths[0]
    Image.new("RGB", (32, 32), (255, 255, 255)).save(changed)  # the data changed: recomputed
    recomputed = setup()
    assert recomputed.mean == pytest.approx(_pixels(recomputed.datasets["train"].paths).mean(axis=0).tolist())
    assert recomputed.mean != pytest.approx(dm.mean)
