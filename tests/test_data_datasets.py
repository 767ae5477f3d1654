"""Every dataset config on a miniature of its real on-disk layout: classes, splits, batches, one training step."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_resnet.builders import build_datamodule
from lightning_resnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_resnet.inference.predictor import input_images
from lightning_resnet.tasks.train import run
from tests.conftest import read_json
from tests.miniature import EXPECTED, MINIATURES, write_miniature

REPO = Path(__file__).resolve().parents[1]


def _overrides(name: str, root: Path, *extra: str) -> list[str]:
    return [f"data={name}", f"data.root={root}", "data.num_workers=0", "data.batch_size=8", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MINIATURES))
def test_dataset_config_on_its_real_layout(name, make_cfg, tmp_path):
    root = write_miniature(name, tmp_path / name)
    expected = EXPECTED[name]
    cfg = make_cfg(*_overrides(name, root))
    dm = build_datamodule(cfg)

    assert dm.class_names == expected["classes"] and dm.num_classes == len(expected["classes"])
    assert {split: len(ds) for split, ds in dm.datasets.items()} == expected["sizes"]
    for split in ("train", "val", "test"):  # stratified: every class equally represented, as on disk
        counts = dm.class_counts(split)
        assert max(counts) - min(counts) <= 1, (split, counts)
    all_paths = [p for split in ("train", "val") for p in dm.datasets[split].paths]
    assert len(set(all_paths)) == len(all_paths)  # train and val are disjoint
    # names (or folders) agree with labels
    for path, label in zip(dm.datasets["train"].paths, dm.datasets["train"].labels, strict=True):
        assert dm.class_names[label] in (path.parent.name, path.name.split(".")[0])

    again = build_datamodule(make_cfg(*_overrides(name, root)))
    assert again.datasets["val"].paths == dm.datasets["val"].paths  # reproducible with the seed
    if name in ("flatfoot", "yoga", "catsdogs", "catsdogs_petimages"):  # splits carved by the seed
        other = build_datamodule(make_cfg(*_overrides(name, root, "seed=5")))
        assert other.datasets["val"].paths != dm.datasets["val"].paths

    x, y = dm.model_input(next(iter(dm.train_dataloader())), train=True)  # what the Trainer hands the model
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.long and y.min() >= 0 and y.max() < dm.num_classes
    mean, std = torch.tensor(dm.mean).view(1, 3, 1, 1), torch.tensor(dm.std).view(1, 3, 1, 1)
    pixels = x * std + mean  # undo the normalisation: back to [0, 1]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5 and pixels.std() > 0.05
    if name != "mask":  # mask uses normalize=auto; the others ImageNet statistics
        assert dm.mean == pytest.approx(IMAGENET_MEAN) and dm.std == pytest.approx(IMAGENET_STD)

    if "predict" in expected:  # the unlabelled folder a Kaggle submission is predicted from
        assert len(input_images(dm.root / dm.predict_dir, recursive=False)) == expected["predict"]

    metrics = run(make_cfg(*_overrides(name, root), "trainer.fast_dev_run=true"))
    assert torch.isfinite(torch.tensor(metrics["test"]["test/loss"]))
    assert metrics["report"]["samples"] == min(8, len(dm.datasets["test"]))  # fast_dev_run: one test batch


def test_petimages_leaves_out_its_broken_jpegs_and_says_so(make_cfg, tmp_path, caplog):
    root = write_miniature("catsdogs_petimages", tmp_path / "PetImages")
    dm = build_datamodule(make_cfg(*_overrides("catsdogs_petimages", root)))
    used = [p.name for ds in dm.datasets.values() for p in ds.paths]
    assert "666.jpg" not in used and "Thumbs.db" not in used
    assert f"{root / 'Cat' / '666.jpg'}: not an image" in caplog.text
    assert f"{root / 'Dog' / '666.jpg'}: not an image" in caplog.text


def test_missing_root_says_where_to_download_and_the_expected_tree(make_cfg, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        build_datamodule(make_cfg("data=mask", f"data.root={tmp_path / 'nowhere'}"))
    message = str(err.value)
    assert "kaggle.com/datasets/ashishjangra27/face-mask-12k-images-dataset" in message
    for line in ("Train/", "Validation/", "Test/", "  WithMask/", "  WithoutMask/"):
        assert line in message


@pytest.mark.slow
def test_command_line_training_step_on_a_dataset_folder(tmp_path):
    root = write_miniature("flatfoot", tmp_path / "flatfoot")
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "lightning_resnet", "data=flatfoot", f"data.root={root}", "data.image_size=32",
        "data.num_workers=0", "trainer.fast_dev_run=true", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_json(run_dir / "metrics.json")
    assert set(metrics["test"]) >= {"test/acc", "test/loss"}
    assert "validation split: 20% of train (no val folder)" in result.stdout + result.stderr
