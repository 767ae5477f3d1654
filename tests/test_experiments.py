"""The five studies of shared/studies.md as experiment configs: their recipes, and a debug run of each."""

from __future__ import annotations

import csv

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import compose_config

# The recipe values stated in shared/studies.md, by experiment: config key -> value.
RECIPES: dict[str, dict[str, object]] = {
    "flatfoot_depth": {
        "data._target_": "lightning_resnet.data.ImageFolderDataModule",
        "data.classes": ["flat", "normal"],
        "model.weights": "IMAGENET1K_V1",  # transfer learning from ImageNet weights
        "trainer.max_epochs": 10,
        "data.batch_size": 32,
        "data.split_dirs.val": "test",  # the study's validation figures are on its test folder
    },
    "yoga_finetune": {
        "model.arch": "resnet152v2",
        "data.classes": ["0", "1", "2", "3", "4", "5"],
        "data.fractions": [0.8, 0.2],  # validation_split=0.2
        "data.image_size": 224,
        "data.batch_size": 64,
        "data.normalize": "none",  # rescale 1/255 only
        "data.predict_dir": "test",
        "finetune.freeze_before": "head",  # base frozen at first
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": 0.01,  # phase 1
        "finetune.unfreeze_lr": 1e-4,  # phase 2
        "loss._target_": "lightning_resnet.models.CrossEntropyLoss",
        "callbacks.early_stopping._target_": "pytorch_lightning.callbacks.EarlyStopping",
        # Keras ImageDataGenerator: rotation 30, shifts 0.2, shear 0.15 (degrees), zoom 0.1, brightness 0.2-1.0
        "augment.ops.0.degrees": 30,
        "augment.ops.0.translate": [0.2, 0.2],
        "augment.ops.0.shear": 0.15,
        "augment.ops.0.scale": [0.9, 1.1],
        "augment.ops.1._target_": "torchvision.transforms.v2.RandomHorizontalFlip",
        "augment.ops.2.brightness": [0.2, 1.0],
    },
    "surveillance_focal": {
        "data.classes": ["animal", "object", "person"],
        "model.weights": "DEFAULT",  # ResNet18_Weights.DEFAULT
        "model.head_dropout": 0.3,
        "finetune.freeze_before": "layer4",  # all frozen except layer4 and fc
        "trainer.max_epochs": 50,
        "data.batch_size": 128,
        "optimizer._target_": "torch.optim.AdamW",
        "optimizer.lr": 1e-5,
        "loss._target_": "lightning_resnet.models.FocalLoss",
        "loss.alpha": 1.0,
        "loss.gamma": 2.0,
        "scheduler.T_max": 25,  # half the epochs
        "callbacks.early_stopping.patience": 3,
        "callbacks.early_stopping.monitor": "val/loss",
        "monitor": "val/loss",  # best model saved on val-loss improvement
        "data.normalize": "imagenet",
        "augment.ops.0._target_": "torchvision.transforms.v2.RandomHorizontalFlip",
        "augment.ops.1.brightness": 0.2,
        "augment.ops.1.contrast": 0.2,
        "augment.ops.1.saturation": 0.2,
        "augment.ops.1.hue": 0.1,
    },
    "mask_optimizers": {
        "data.classes": ["WithMask", "WithoutMask"],
        "model.arch": "resnet18",
        "model.weights": None,  # from scratch
        "data.image_size": 224,
        "data.normalize.mean": [0.5685, 0.4648, 0.4162],
        "data.normalize.std": [0.2430, 0.2229, 0.2187],
        "data.batch_size": 32,
        "trainer.max_epochs": 10,
        "loss._target_": "lightning_resnet.models.CrossEntropyLoss",
        "optimizer.lr": 0.01,
    },
    "catsdogs_plain_vs_residual": {
        "data.classes": ["cat", "dog"],
        "model.weights": None,
        "trainer.max_epochs": 30,
        "data.batch_size": 32,
        "optimizer._target_": "torch.optim.Adam",
        "loss._target_": "lightning_resnet.models.CrossEntropyLoss",
    },
}

# The sweep axes each study compares (hydra.sweeper.params of its experiment).
SWEEPS = {
    "flatfoot_depth": {"model": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]},
    "surveillance_focal": {"model": ["resnet18", "resnet50"]},
    "mask_optimizers": {"optimizer": ["adam", "sgd"]},
    "catsdogs_plain_vs_residual": {"model": ["resnet34", "resnet50", "plain34", "plain50"]},
}


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    return list(node) if hasattr(node, "__len__") and not isinstance(node, str) else node


def _check_recipe(cfg, recipe: dict[str, object], skip_prefix: str = "") -> None:
    for key, expected in recipe.items():
        if skip_prefix and key.startswith(skip_prefix):
            continue
        wanted = pytest.approx(expected) if isinstance(expected, float | list) else expected
        assert _get(cfg, key) == wanted, key


def _sweep_axes(tmp_path, experiment: str) -> dict[str, list[str]]:
    """The experiment's `hydra.sweeper.params`, expanded as Hydra's basic sweeper does."""
    cfg = compose_config(tmp_path, [f"experiment={experiment}"], return_hydra_config=True)
    overrides = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: [str(v) for v in o.sweep_string_iterator()] for o in parsed}


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_experiment_sets_the_study_recipe(tmp_path, experiment):
    _check_recipe(compose_config(tmp_path, [f"experiment={experiment}"]), RECIPES[experiment])


@pytest.mark.parametrize("experiment", sorted(SWEEPS))
def test_sweep_axes_and_per_job_recipe(tmp_path, experiment):
    axes = _sweep_axes(tmp_path, experiment)
    assert axes == SWEEPS[experiment]
    for key, choices in axes.items():
        for choice in choices:  # every job of the sweep keeps the study's recipe
            job = compose_config(tmp_path, [f"experiment={experiment}", f"{key}={choice}"])
            _check_recipe(job, RECIPES[experiment], skip_prefix=f"{key}.")
            if experiment == "mask_optimizers":
                assert job.optimizer.lr == 0.01
                assert job.optimizer.get("momentum") == (0.9 if choice == "sgd" else None)  # SGD momentum 0.9


# -- end to end on miniature copies of each dataset's layout ---------------------------------------
DATASETS = {
    "flatfoot_depth": "flatfoot",
    "yoga_finetune": "yoga",
    "surveillance_focal": "surveillance",
    "mask_optimizers": "mask",
    "catsdogs_plain_vs_residual": "catsdogs",
}
# No downloads here: pretrained weights are switched off; everything else is the experiment's recipe.
TINY = ["model.weights=null", "data.image_size=32", "data.batch_size=4", "data.num_workers=0"]


@pytest.fixture(scope="module")
def miniatures(tmp_path_factory):
    from tests.miniature import write_miniature

    root = tmp_path_factory.mktemp("datasets")
    return {name: write_miniature(name, root / name) for name in set(DATASETS.values())}


# The columns of our sweep report that regenerate each study's table (see the README).
TABLE_COLUMNS = {
    "flatfoot_depth": ["best_train_acc", "best_val_acc", "silhouette"],
    "surveillance_focal": ["test_acc", "test_f1"],
    "mask_optimizers": ["test_loss", "test_acc"],
    "catsdogs_plain_vs_residual": ["best_val_acc", "test_acc"],
}


def _check_run_reports(run_dir, classes) -> None:
    report = (run_dir / "classification_report.md").read_text()
    assert all(name in report for name in classes)
    assert (run_dir / "confusion_matrix.png").stat().st_size > 0


@pytest.mark.slow
def test_single_run_experiment_with_debug_fast(tmp_path, miniatures):
    from lightning_resnet.tasks.train import run

    root = miniatures["yoga"]
    cfg = compose_config(tmp_path, ["experiment=yoga_finetune", "debug=fast", f"data.root={root}", *TINY])
    metrics = run(cfg)
    samples = metrics["report"]["samples"]  # fast_dev_run: one test batch
    assert metrics["epochs_run"] == 1 and samples > 0 and (metrics["test"]["test/acc"] * samples).is_integer()
    _check_run_reports(tmp_path, cfg.data.classes)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(SWEEPS))
def test_experiment_sweep_with_debug_fast_writes_the_study_table(tmp_path, miniatures, sweep_here, experiment):
    """The study's own command (`-m experiment=<name>`): one job per swept value."""
    sweep = tmp_path / "sweep"
    root = miniatures[DATASETS[experiment]]
    # batch 16: the one test batch holds several classes, so the cluster score is defined
    overrides = [f"experiment={experiment}", "debug=fast", f"data.root={root}", *TINY, "data.batch_size=16"]
    sweep_here(*overrides, f"hydra.sweep.dir={sweep}")
    ((axis, values),) = SWEEPS[experiment].items()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(f"{axis}={v}" for v in values)
    with (sweep / "summary.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(values) and all(row["status"] == "ok" for row in rows)
    for row in rows:
        assert all(row[column] != "" for column in TABLE_COLUMNS[experiment]), row
        classes = compose_config(tmp_path, [f"experiment={experiment}"]).data.classes
        _check_run_reports(sweep / row["job"], classes)
    assert (sweep / "summary.md").is_file() and (sweep / "summary.png").stat().st_size > 0


@pytest.mark.slow
def test_yoga_reports_both_phases_and_a_kaggle_submission(tmp_path, miniatures):
    from lightning_resnet.tasks import predict
    from lightning_resnet.tasks.train import run

    overrides = ["experiment=yoga_finetune", "debug=limit", "finetune.unfreeze_at_epoch=1"]
    cfg = compose_config(tmp_path, [*overrides, f"data.root={miniatures['yoga']}", *TINY])
    metrics = run(cfg)
    frozen, tuned = metrics["phases"]
    assert (frozen["first_epoch"], tuned["first_epoch"]) == (0, 1)
    assert frozen["params_trainable"] < tuned["params_trainable"]  # head only, then everything
    assert all(phase["best_val/acc"] is not None for phase in (frozen, tuned))
    lines = (tmp_path / "kaggle_submission.csv").read_text().splitlines()
    assert lines[0] == "id,label" and len(lines) == 1 + 3  # the miniature's 3 unlabelled test images
    assert all(line.split(",")[1] in cfg.data.classes for line in lines[1:])
    # one prediction path: the predict task on the tested checkpoint writes the same file
    predict_cfg = compose_config(
        tmp_path / "predict",
        [
            f"ckpt_path={metrics['best_checkpoint']}",
            f"input={cfg.data.root}/{cfg.data.predict_dir}",
            "format=kaggle",
        ],
        config_name="predict",
    )
    predict.run(predict_cfg)
    assert (tmp_path / "predict" / "predictions.csv").read_text().splitlines() == lines
