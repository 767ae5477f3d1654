"""The evaluate, predict and export tasks on the shared digits checkpoint, in process and by CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from lightning_resnet import CONFIG_DIR
from lightning_resnet.builders import build_datamodule
from lightning_resnet.data.transforms import eval_transform
from lightning_resnet.errors import ConfigError
from lightning_resnet.inference.predictor import predict_images
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.tasks import evaluate, export, predict
from tests.conftest import compose_config, read_json, require_extra

pytestmark = pytest.mark.slow


def task_config(name: str, output_dir: Path, *overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=[f"paths.output_dir={output_dir}", *overrides])


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def best_checkpoint(run: tuple[Path, dict]) -> str:
    return run[1]["best_checkpoint"]


@pytest.fixture(scope="module")
def test_images(trained_digits_run, tmp_path_factory) -> Path:
    """The digits test split as 32 px PNG files (0000.png, ...), plus one corrupt file."""
    out, _ = trained_digits_run
    datamodule = build_datamodule(compose_config(out / "unused", ["data.image_size=32"]))
    folder = tmp_path_factory.mktemp("test_images")
    for i, image in enumerate(datamodule.datasets["test"].images()):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def evaluated(trained_digits_run, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("evaluate")
    cfg = task_config(
        "evaluate", out, f"ckpt_path={best_checkpoint(trained_digits_run)}", "callbacks.progress_bar.refresh_rate=0"
    )
    return out, evaluate.run(cfg)


def test_evaluate_reproduces_the_runs_test_figures_and_report(trained_digits_run, evaluated):
    run_dir, run_metrics = trained_digits_run
    out, metrics = evaluated
    assert metrics["test"]["test/acc"] == pytest.approx(run_metrics["test"]["test/acc"], abs=1e-6)
    assert metrics["report"]["silhouette"] == pytest.approx(run_metrics["report"]["silhouette"], abs=1e-5)
    assert read_csv(out / "classification_report.csv") == read_csv(run_dir / "classification_report.csv")
    for name in ("confusion_matrix.png", "curves.png", "embedding.png", "mistakes.png", "metrics.json"):
        assert (out / name).is_file(), name  # curves from the training run's history.json


def test_evaluate_under_ddp_gives_the_single_device_figures_and_report(trained_digits_run, tmp_path):
    # 271 test images on 2 processes: 136 and 135 (uneven, none repeated: UnrepeatedDistributedSampler); batches
    # of 45 make that 4 batches, the last of 1, and 3
    ckpt, split = best_checkpoint(trained_digits_run), ["data.fractions=[0.7,0.1495,0.1505]", "data.batch_size=45"]
    single = evaluate.run(task_config("evaluate", tmp_path / "one", f"ckpt_path={ckpt}", *split))
    assert single["report"]["samples"] == 271
    ddp_run = ["trainer=ddp_sim", f"hydra.run.dir={tmp_path / 'ddp'}"]
    result = cli("evaluate", f"ckpt_path={ckpt}", *split, *ddp_run)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = read_json(tmp_path / "ddp" / "metrics.json")
    for name, value in single["test"].items():  # synced metrics, each image counted once
        assert ddp["test"][name] == pytest.approx(value, abs=1e-6), name
    assert read_csv(tmp_path / "ddp" / "classification_report.csv") == read_csv(
        tmp_path / "one" / "classification_report.csv"
    )
    ddp_rows, one_rows = (read_csv(tmp_path / run / "predictions.csv") for run in ("ddp", "one"))  # in test order
    assert [(r["target"], r["predicted"]) for r in ddp_rows] == [(r["target"], r["predicted"]) for r in one_rows]
    ddp_confidence, one_confidence = ([float(r["confidence"]) for r in rows] for rows in (ddp_rows, one_rows))
    assert ddp_confidence == pytest.approx(one_confidence, abs=2e-6)  # other batch sizes: float rounding
    assert ddp["report"]["silhouette"] == pytest.approx(single["report"]["silhouette"], abs=1e-5)


def test_evaluate_rejects_data_with_other_classes(trained_digits_run, tmp_path, monkeypatch):
    cfg = task_config("evaluate", tmp_path, f"ckpt_path={best_checkpoint(trained_digits_run)}")
    monkeypatch.setattr("lightning_resnet.data.DigitsDataModule.class_names", property(lambda self: list("abcdefghij")))
    with pytest.raises(ConfigError, match="differ from the checkpoint"):
        evaluate.run(cfg)


def test_predict_on_a_folder_gives_the_labels_evaluate_gives(trained_digits_run, evaluated, test_images, tmp_path):
    cfg = task_config("predict", tmp_path, f"ckpt_path={best_checkpoint(trained_digits_run)}", f"input={test_images}")
    predictions = predict.run(cfg)
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == len(predictions) == 271  # 270 test images + the broken one, not notes.txt
    broken = rows.pop()
    assert broken["file"] == "zz_broken.png" and broken["label"] == "" and "not an image" in broken["error"]

    expected = read_csv(evaluated[0] / "predictions.csv")
    assert [r["file"] for r in rows] == [f"{i:04d}.png" for i in range(270)]
    assert [r["label"] for r in rows] == [e["predicted"] for e in expected]
    assert [float(r["confidence"]) for r in rows] == pytest.approx([float(e["confidence"]) for e in expected], abs=1e-5)
    probs = np.array([[float(r[f"prob_{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [r["top1"] for r in rows] == [r["label"] for r in rows]
    assert all(float(r["top1_prob"]) >= float(r["top2_prob"]) >= float(r["top5_prob"]) for r in rows)


def test_prediction_uses_the_checkpoints_crop(trained_digits_run, test_images):
    model = ResNetClassifier.from_checkpoint(best_checkpoint(trained_digits_run))
    model.preprocessing = {**model.preprocessing, "crop_ratio": 0.5}  # as if trained with data.crop_ratio=0.5
    image = test_images / "0003.png"
    cropped = eval_transform(model.preprocessing)(Image.open(image).convert("RGB"))
    with torch.no_grad():
        expected = model(cropped.unsqueeze(0)).softmax(dim=1)[0]
    assert torch.allclose(predict_images(model, [image])[0].probs, expected, atol=1e-6)


def test_predict_kaggle_format_and_flip_tta(trained_digits_run, test_images, tmp_path):
    ckpt = best_checkpoint(trained_digits_run)
    kaggle = task_config("predict", tmp_path / "k", f"ckpt_path={ckpt}", f"input={test_images}", "format=kaggle")
    predict.run(kaggle)
    lines = (tmp_path / "k" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,label" and lines[1].startswith("0000,") and lines[-1] == "zz_broken,"

    # TTA = the mean of the image's and its mirror image's probabilities.
    one = test_images / "0005.png"
    mirrored = tmp_path / "mirrored.png"
    Image.open(one).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    model = ResNetClassifier.from_checkpoint(ckpt)
    plain, flipped = predict_images(model, [one])[0].probs, predict_images(model, [mirrored])[0].probs
    tta = predict_images(model, [one], flip_tta=True)[0].probs
    assert torch.allclose(tta, (plain + flipped) / 2, atol=1e-6)
    assert not torch.allclose(plain, flipped, atol=1e-4)

    with pytest.raises(ConfigError, match="format='parquet'; valid: csv, kaggle"):
        predict.run(task_config("predict", tmp_path, f"ckpt_path={ckpt}", f"input={test_images}", "format=parquet"))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_within_1e4(trained_digits_run, fmt, tmp_path):
    if fmt == "onnx":
        require_extra("onnxscript", "export")
        ort = require_extra("onnxruntime", "export")
    ckpt = best_checkpoint(trained_digits_run)
    info = export.run(task_config("export", tmp_path, f"ckpt_path={ckpt}", f"format={fmt}"))
    path = tmp_path / info["file"]
    assert info["parity_max_abs_diff"] <= 1e-4 and info["class_names"] == [str(i) for i in range(10)]

    # Independently of the task's own check: real digits, a batch size not seen at export time.
    model = ResNetClassifier.from_checkpoint(ckpt)
    datamodule = build_datamodule(compose_config(tmp_path / "unused", ["data.image_size=32"]))
    images = datamodule.model_input(next(iter(datamodule.test_dataloader())))[0][:5]
    with torch.no_grad():
        expected = model(images).numpy()
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": images.numpy()})[0]
    else:
        got = torch.jit.load(str(path))(images).detach().numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_export_fails_when_the_exported_model_disagrees(trained_digits_run, tmp_path, monkeypatch):
    ckpt = best_checkpoint(trained_digits_run)
    real_run = export.instantiate

    def skewed(node):
        exporter = real_run(node)
        original = exporter.run
        exporter.run = lambda path, images: original(path, images) + 1e-3
        return exporter

    monkeypatch.setattr(export, "instantiate", skewed)
    with pytest.raises(export.ExportParityError, match="differ from PyTorch's by 0.001"):
        export.run(task_config("export", tmp_path, f"ckpt_path={ckpt}", "format=torchscript"))


def cli(task: str, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", f"lightning_resnet.{task}", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def run_main(monkeypatch, task: str, *overrides: str) -> None:
    """`python -m lightning_resnet.<task> overrides` through the task's Hydra entry point, in this process."""
    module = {"evaluate": evaluate, "predict": predict, "export": export}[task]
    monkeypatch.setattr(sys, "argv", [task, *overrides])
    module.main()


def test_cli_evaluate_predict_export(trained_digits_run, test_images, tmp_path, monkeypatch):
    """Each task's command line; one real process (predict's), the other entry points in this process,
    since a process start costs ~10 s here and evaluate's own is test_evaluate_under_ddp's."""
    ckpt = best_checkpoint(trained_digits_run)
    output = tmp_path / "p.csv"
    result = cli(
        "predict",
        f"ckpt_path={ckpt}",
        f"input={test_images}",
        f"output={output}",
        "tta=true",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_csv(output)) == 271
    assert "zz_broken.png" in result.stderr + result.stdout  # the unreadable file is named in the log

    evaluate_dir = f"hydra.run.dir={tmp_path / 'e'}"
    run_main(monkeypatch, "evaluate", f"ckpt_path={ckpt}", evaluate_dir, "trainer.limit_test_batches=2")
    assert (tmp_path / "e" / "classification_report.md").is_file()
    assert read_json(tmp_path / "e" / "metrics.json")["report"]["samples"] == 128  # 2 test batches of data=digits' 64

    run_main(monkeypatch, "export", f"ckpt_path={ckpt}", "format=torchscript", f"hydra.run.dir={tmp_path / 'x'}")
    assert (tmp_path / "x" / "model.pt").is_file() and (tmp_path / "x" / "model.json").is_file()
