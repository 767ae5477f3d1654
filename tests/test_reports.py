"""The end-of-test report: files in the run directory, TensorBoard entries, and the numbers in them."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report as sk_classification_report
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DistributedSampler

from lightning_resnet.reporting.classification_report import (
    classification_report,
    confusion_matrix,
    write_report_csv,
    write_report_markdown,
)
from lightning_resnet.reporting.collector import OutputCollector, merge_ranks
from lightning_resnet.reporting.figures import confusion_matrix_figure, curves_figure
from lightning_resnet.reporting.history import best_epoch, best_value
from lightning_resnet.reporting.tensorboard import dashboard_tag
from tests.conftest import read_json

REPORT_FILES = (
    "classification_report.csv",
    "classification_report.md",
    "predictions.csv",
    "confusion_matrix.png",
    "curves.png",
    "embedding.png",
    "mistakes.png",
    "metrics.json",
)


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_run_directory_holds_every_report_file(trained_digits_run):
    out, metrics = trained_digits_run
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = metrics["report"]
    assert metrics == read_json(out / "metrics.json")
    assert report["samples"] == 270 == len(read_csv(out / "predictions.csv"))  # 15 % of 1,797 digits
    assert report["silhouette"] > 0.05  # trained features cluster by class (random features: about 0)
    assert report["accuracy"] == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)
    assert report["macro_f1"] == pytest.approx(metrics["test"]["test/f1"], abs=1e-6)
    assert {"train/acc", "val/acc"} <= set(metrics["best"])


@pytest.mark.slow
def test_tensorboard_events_hold_scalars_hparams_images_and_projector(trained_digits_run):
    out, metrics = trained_digits_run
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()

    def scalars(key: str) -> list:  # where DashboardLogger logs a metric: its split's run, `dashboard_tag`
        run, tag = dashboard_tag(key)
        return EventAccumulator(str(out / "tensorboard" / run), size_guidance={"scalars": 0}).Reload().Scalars(tag)

    assert all(scalars(key) for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/acc"))
    assert [e.value for e in scalars("val/acc")] == pytest.approx([r["val/acc"] for r in read_history(out)])
    assert scalars("test/acc")[-1].value == pytest.approx(metrics["test"]["test/acc"])
    assert scalars("test/silhouette")[-1].value == pytest.approx(metrics["report"]["silhouette"])
    assert "custom_scalars__config__" in tags["tensors"]

    images = set(tags["images"])
    assert {"samples/train_augmented", *(f"report/{n}" for n in ("confusion_matrix", "curves", "embedding"))} <= images
    assert "report/mistakes" in images
    grid = events.Images("samples/train_augmented")[0]
    assert grid.width > 8 * 32 and grid.height > 3 * 32  # 32 images of 32 px, 8 per row

    hparams = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert {"test/acc", "val/best_acc", "test/silhouette"} <= {m.display_name for m in experiment.metric_infos}
    session = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    values = session.session_start_info.hparams
    assert values["lr"].number_value == pytest.approx(0.002)
    assert values["epochs"].number_value == 2

    projector = (out / "tensorboard" / "projector_config.pbtxt").read_text()
    folder = out / "tensorboard" / projector.split('metadata_path: "')[1].split("/metadata.tsv")[0]
    features = np.loadtxt(folder / "tensors.tsv", delimiter="\t")
    assert features.shape == (270, 512)  # resnet18's penultimate width
    metadata = (folder / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "label\tpredicted" and len(metadata) == 271
    predictions = read_csv(out / "predictions.csv")
    assert metadata[1:4] == [f"{p['target']}\t{p['predicted']}" for p in predictions[:3]]
    assert (folder / "sprite.png").is_file()


def read_history(out: Path) -> list[dict]:
    return read_json(out / "history.json")


@pytest.mark.slow
def test_classification_report_matches_scikit_learn_on_the_run(trained_digits_run):
    out, _ = trained_digits_run
    predictions = read_csv(out / "predictions.csv")
    y_true = [int(p["target"]) for p in predictions]
    y_pred = [int(p["predicted"]) for p in predictions]
    assert_matches_sklearn(read_csv(out / "classification_report.csv"), y_true, y_pred, [str(i) for i in range(10)])


def test_classification_report_matches_scikit_learn_with_absent_classes():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 4, (200,), generator=generator)  # class 4 never occurs
    preds = torch.where(torch.rand(200, generator=generator) < 0.6, targets, torch.randint(0, 3, (200,)))
    names = ["cat", "dog", "fox", "owl", "yak"]  # class 3 is never predicted, class 4 neither
    report = classification_report(preds, targets, names)
    rows = [{"class": k, **{c: str(v) for c, v in row.items()}} for k, row in report.items()]
    assert_matches_sklearn(rows, targets.tolist(), preds.tolist(), names)


# 10 samples, 4 classes: "fox" is never predicted (zero_division), "owl" is predicted once but has no support.
SMALL_TARGETS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
SMALL_PREDS = [0, 0, 1, 3, 1, 1, 0, 0, 1, 1]
SMALL_NAMES = ["cat", "dog", "fox", "owl"]
# Written by the torchmetrics implementation this module replaced: the files must not change.
SMALL_CSV = """class,precision,recall,f1,support
cat,0.500000,0.500000,0.500000,4
dog,0.400000,0.666667,0.500000,3
fox,0.000000,0.000000,0.000000,3
owl,0.000000,0.000000,0.000000,0
accuracy,0.400000,0.400000,0.400000,10
macro avg,0.225000,0.291667,0.250000,10
weighted avg,0.320000,0.400000,0.350000,10
"""
SMALL_MARKDOWN = """| class | precision | recall | f1 | support |
|---|---:|---:|---:|---:|
| cat | 0.5000 | 0.5000 | 0.5000 | 4 |
| dog | 0.4000 | 0.6667 | 0.5000 | 3 |
| fox | 0.0000 | 0.0000 | 0.0000 | 3 |
| owl | 0.0000 | 0.0000 | 0.0000 | 0 |
| accuracy |  |  | 0.4000 | 10 |
| macro avg | 0.2250 | 0.2917 | 0.2500 | 10 |
| weighted avg | 0.3200 | 0.4000 | 0.3500 | 10 |
"""


def test_classification_report_is_sklearns_and_its_files_are_unchanged(tmp_path):
    preds, targets = torch.tensor(SMALL_PREDS), torch.tensor(SMALL_TARGETS)
    report = classification_report(preds, targets, SMALL_NAMES)
    assert list(report) == [*SMALL_NAMES, "accuracy", "macro avg", "weighted avg"]
    assert all(list(row) == ["precision", "recall", "f1", "support"] for row in report.values())
    assert all(type(row["support"]) is int and type(row["f1"]) is float for row in report.values())
    expected = sk_classification_report(
        SMALL_TARGETS, SMALL_PREDS, labels=range(4), target_names=SMALL_NAMES, output_dict=True, zero_division=0
    )
    for name in [*SMALL_NAMES, "macro avg", "weighted avg"]:
        theirs = expected[name]
        assert report[name] == {
            "precision": theirs["precision"],
            "recall": theirs["recall"],
            "f1": theirs["f1-score"],
            "support": theirs["support"],
        }, name
    assert expected["accuracy"] == 0.4  # a bare float in scikit-learn, a row of its own here
    assert report["accuracy"] == {"precision": 0.4, "recall": 0.4, "f1": 0.4, "support": 10}
    assert report["fox"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}  # never predicted
    assert report["owl"]["support"] == 0 and report["owl"]["precision"] == 0.0  # no support, one wrong prediction

    write_report_csv(report, tmp_path / "report.csv")
    write_report_markdown(report, tmp_path / "report.md")
    assert (tmp_path / "report.csv").read_bytes() == SMALL_CSV.replace("\n", "\r\n").encode()  # csv.writer's \r\n
    assert (tmp_path / "report.md").read_bytes() == SMALL_MARKDOWN.encode()

    counts = confusion_matrix(preds, targets, 4)
    assert isinstance(counts, torch.Tensor)  # report.py calls .numpy() on it
    assert counts.tolist() == [[2, 1, 0, 1], [1, 2, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize(
    ("names", "annotated", "slanted"),
    [(["cat", "dog", "fox", "owl"], True, False), ([f"class_{i}" for i in range(31)], False, True)],
)
def test_confusion_matrix_figure_labels_both_axes_and_annotates_small_matrices(names, annotated, slanted):
    n = len(names)
    counts = np.arange(n * n).reshape(n, n)
    counts[-1] = 0  # a class with no samples: its normalised row is 0, not NaN
    fig = confusion_matrix_figure(counts, names)
    side = min(max(4.0, 0.45 * n + 2.0), 14.0)
    assert tuple(fig.get_size_inches()) == pytest.approx((2 * side + 1.5, side))
    panels = [ax for ax in fig.axes if ax.get_title()]  # the other two axes are colorbars
    assert [ax.get_title() for ax in panels] == ["counts", "normalised by true class"]
    for ax, image in zip(panels, (counts, None), strict=True):
        assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
        assert {t.get_rotation() for t in ax.get_xticklabels()} == {45.0 if slanted else 0.0}
        cells = [t.get_text() for t in ax.texts]
        assert len(cells) == (n * n if annotated else 0)
        if image is not None:
            assert np.array_equal(ax.images[0].get_array(), counts)
    if annotated:
        assert panels[0].texts[1].get_text() == "1"  # counts as integers
        assert panels[1].texts[n + 1].get_text() == format(counts[1, 1] / counts[1].sum(), ".2f")
        assert panels[1].texts[-1].get_text() == "0.00"
    plt.close(fig)


def assert_matches_sklearn(rows: list[dict], y_true: list[int], y_pred: list[int], names: list[str]) -> None:
    expected = sk_classification_report(
        y_true, y_pred, labels=list(range(len(names))), target_names=names, output_dict=True, zero_division=0
    )
    ours = {row["class"]: row for row in rows}
    assert set(ours) == set(expected)
    for name, values in expected.items():
        if name == "accuracy":
            assert float(ours[name]["f1"]) == pytest.approx(values, abs=1e-4)
            continue
        for key, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert float(ours[name][key]) == pytest.approx(values[theirs], abs=1e-4), (name, key)
        assert int(float(ours[name]["support"])) == values["support"]


def test_curves_mark_the_best_epoch_of_the_monitored_metric():
    history = [
        {"epoch": 0, "train/loss": 1.0, "val/loss": 1.2, "train/acc": 0.5, "val/acc": 0.4},
        {"epoch": 1, "train/loss": 0.6, "val/loss": 0.7, "train/acc": 0.7, "val/acc": 0.8},
        {"epoch": 2, "train/loss": 0.4, "val/loss": 0.9, "train/acc": 0.9, "val/acc": 0.7},
    ]
    assert best_epoch(history, "val/acc", "max") == 1
    assert best_epoch(history, "train/loss", "min") == 2
    assert best_epoch(history, "test/acc", "max") is None
    assert best_value(history, "val/loss") == 0.7 and best_value(history, "val/acc") == 0.8  # mode by name
    assert best_epoch([{"epoch": 0, "val/acc": 0.5}, {"epoch": 1, "val/acc": 0.5}], "val/acc", "max") == 0  # first tie
    fig = curves_figure(history, "val/acc", "max")
    for ax in fig.axes:
        marker = [line for line in ax.get_lines() if line.get_label().startswith("best epoch")]
        assert len(marker) == 1 and list(marker[0].get_xdata()) == [1, 1]
        plotted = {line.get_label() for line in ax.get_lines()}
        assert {"train/loss", "val/loss"} <= plotted or {"train/acc", "val/acc"} <= plotted


def test_collector_keeps_the_most_confident_mistakes_across_batches():
    collector = OutputCollector(mean=[0.0] * 3, std=[1.0] * 3, num_mistakes=3)
    images = torch.rand(4, 3, 8, 8)
    # batch 1: sample 1 wrong at p~0.73, sample 3 wrong at p~0.98; batch 2: one wrong at p~0.88, one at p~0.5
    first = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 4.0]])
    second = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    for logits, targets in ((first, torch.tensor([0, 0, 1, 0])), (second, torch.tensor([1, 1, 1, 0]))):
        collector.update(images, logits, targets, torch.rand(4, 16))
    kept = [(m.index, m.target, m.predicted) for m in collector.mistakes]
    assert kept == [(3, 0, 1), (4, 1, 0), (1, 0, 1)]
    assert [m.confidence for m in collector.mistakes] == sorted(
        (m.confidence for m in collector.mistakes), reverse=True
    )
    assert collector.mistakes[0].image.dtype == torch.uint8 and collector.mistakes[0].image.shape == (3, 8, 8)
    logits, targets, features, thumbnails = collector.stacked()
    assert logits.shape == (8, 2) and features.shape == (8, 16) and thumbnails.shape == (8, 3, 32, 32)


def test_ranks_shares_merge_back_into_test_order_without_the_samplers_padding():
    n, world = 7, 3  # DistributedSampler deals 9 positions: the last two repeat samples 0 and 1
    logits = torch.randn(n, 4)
    targets = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    images = torch.rand(n, 3, 8, 8)
    features = torch.arange(n, dtype=torch.float32).view(n, 1).expand(n, 5)
    parts = []
    for rank in range(world):
        indices = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
        part = OutputCollector(mean=[0.0] * 3, std=[1.0] * 3, num_mistakes=2)
        for batch in (indices[:2], indices[2:]):  # two batches per rank, as a loader would give them
            part.update(images[batch], logits[batch], targets[batch], features[batch])
        parts.append(part)

    merged = merge_ranks(parts, num_samples=n)
    merged_logits, merged_targets, merged_features, thumbnails = merged.stacked()
    assert merged.seen == n and torch.equal(merged_features[:, 0], torch.arange(n, dtype=torch.float32))
    assert torch.equal(merged_logits, logits) and torch.equal(merged_targets, targets)
    whole = OutputCollector(mean=[0.0] * 3, std=[1.0] * 3, num_mistakes=2)
    whole.update(images, logits, targets, features)  # the same test set on one device
    assert torch.equal(thumbnails, whole.stacked()[3])
    assert [(m.index, m.confidence) for m in merged.mistakes] == [(m.index, m.confidence) for m in whole.mistakes]
    assert all(torch.equal(m.image, w.image) for m, w in zip(merged.mistakes, whole.mistakes, strict=True))

    unordered = merge_ranks(parts, num_samples=None)  # another sampler: every rank's samples, rank by rank
    assert unordered.seen == 9 and sorted(m.index for m in unordered.mistakes) == sorted(
        {m.index for m in unordered.mistakes}
    )
