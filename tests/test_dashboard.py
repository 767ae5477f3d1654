"""What a researcher sees in TensorBoard: one curated HParams row per run, each figure under one tag."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lightning_resnet.reporting.tensorboard import run_hparams
from tests.conftest import FAST, compose_config

DEFAULT_COLUMNS = {
    "model", "optimizer", "lr", "weight_decay", "scheduler", "loss", "label_smoothing", "batch_size", "epochs",
    "image_size", "finetune", "augment", "seed", "data",
}  # fmt: skip


def hparams_content(events: EventAccumulator, tag: str) -> plugin_data_pb2.HParamsPluginData:
    return plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")[tag])


def test_hparams_row_has_the_curated_choices_with_their_types(trained_digits_run):
    out, _ = trained_digits_run
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    values = hparams_content(events, "_hparams_/session_start_info").session_start_info.hparams
    assert set(values) == DEFAULT_COLUMNS
    assert values["model"].string_value == "resnet18"
    assert values["optimizer"].string_value == "Adam"
    assert values["lr"].WhichOneof("kind") == "number_value"
    assert values["data"].string_value == "digits"
    assert not any(v.string_value in ("None", "null") for v in values.values())

    scalars = set(events.Tags()["scalars"])
    declared = [m.name.tag for m in hparams_content(events, "_hparams_/experiment").experiment.metric_infos]
    assert len(declared) == len(set(declared))
    assert set(declared) <= scalars  # the plugin reads each metric from the scalar tag of that name
    assert {"val/acc", "test/acc", "test/loss", "val/best_acc", "train/best_acc"} <= set(declared)
    assert not any(tag.startswith("hparams/") for tag in scalars)  # no copies of test/*
    assert "params/trainable" not in scalars and "model/params_trainable" in scalars
    assert "epoch" not in scalars


def test_hparams_booleans_stay_booleans(tmp_path):
    from lightning_resnet.reporting.tensorboard import DashboardLogger, log_hparams_with_results

    logger = DashboardLogger(str(tmp_path), name="", version="")
    logger.experiment.add_scalar("val/acc", 0.5, 0)
    log_hparams_with_results(logger, {"model": "resnet18", "pretrained": True, "lr": 0.1}, ["val/acc"])
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    values = hparams_content(events, "_hparams_/session_start_info").session_start_info.hparams
    assert values["pretrained"].WhichOneof("kind") == "bool_value" and values["pretrained"].bool_value is True
    assert values["lr"].number_value == 0.1
    infos = {i.name: i for i in hparams_content(events, "_hparams_/experiment").experiment.hparam_infos}
    assert set(infos) == {"model", "pretrained", "lr"}
    assert [v.bool_value for v in infos["pretrained"].domain_discrete.values] == [False, True]


def test_run_hparams_of_a_sweep_job_hold_its_choices_and_overridden_keys(tmp_path):
    overrides = ["model=resnet34", "optimizer=sgd", "loss=focal", "data.fold=1", "finetune=linear_probe"]
    cfg = compose_config(tmp_path, [*FAST, *overrides], return_hydra_config=True)
    row = run_hparams(cfg)
    assert row["model"] == "resnet34" and row["optimizer"] == "SGD"
    assert row["momentum"] == 0.9 and row["gamma"] == 2.0 and row["finetune"] == "linear_probe"
    assert row["data.fold"] == 1  # a key the command line set, with its type
    assert not any(k.startswith(("callbacks", "paths", "hydra", "data.image", "data.batch")) for k in row)
    assert "weights" not in row  # null: left out
    assert all(isinstance(v, (bool, int, float, str)) for v in row.values())
