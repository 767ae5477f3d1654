"""What a researcher sees in TensorBoard: one curated HParams row per run, each figure under one tag, train
and val of a metric on one chart, first on the default tab."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lightning_resnet.reporting.tensorboard import dashboard_tag, run_hparams
from tests.conftest import FAST, compose_config

DEFAULT_COLUMNS = {
    "model", "optimizer", "lr", "weight_decay", "scheduler", "loss", "label_smoothing", "batch_size", "epochs",
    "image_size", "finetune", "augment", "seed", "data",
}  # fmt: skip
SPLIT_RUNS = ("", "train", "val", "test")  # the run's tensorboard/ folder and its per-split runs


def hparams_content(events: EventAccumulator, tag: str) -> plugin_data_pb2.HParamsPluginData:
    return plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")[tag])


def read_runs(tensorboard_dir: Path) -> dict[str, EventAccumulator]:
    """The event files of a run's `tensorboard/` folder and of its `train/`, `val/`, `test/` runs."""
    runs = {}
    for run in SPLIT_RUNS:
        events = EventAccumulator(str(tensorboard_dir / run), size_guidance={"scalars": 0, "tensors": 0})
        runs[run] = events.Reload()
    return runs


@contextlib.contextmanager
def tensorboard_server(logdir: Path) -> Iterator[str]:
    """`tensorboard --logdir <logdir>` on 127.0.0.1 and a free port, stopped by its pid; yields its URL.

    The port is free when picked but may be taken before TensorBoard binds it (other tests start servers
    and workers): a server that could not bind is started again on another port."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    for attempt in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while server.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/data/plugins_listing", timeout=2).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            if server.poll() is None:
                server.kill()
            server.wait()
            error = server.stderr.read().decode()[-2000:]
            server.stderr.close()
            if "could not bind" in error and attempt < 2:
                continue
            raise RuntimeError(f"tensorboard did not start: {error}")
        break
    try:
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_dashboard_tag_gives_each_split_its_run_and_curves_the_first_group():
    assert dashboard_tag("val/acc") == ("val", "curves/acc")
    assert dashboard_tag("train/loss") == ("train", "curves/loss")
    assert dashboard_tag("test/f1") == ("test", "macro/f1")
    assert dashboard_tag("val/best_acc") == ("val", "summary/best_acc")
    assert dashboard_tag("lr-Adam/head") == ("", "lr-Adam/head")
    assert dashboard_tag("model/gmacs") == ("", "model/gmacs")
    # TensorBoard opens the first two tag groups in name order: the curves, then the learning rate
    groups = sorted({dashboard_tag(k)[1].split("/")[0] for k in ("val/acc", "val/f1", "val/best_acc", "model/x")})
    assert groups[0] == "curves" and sorted([*groups, "lr-Adam", "report", "samples"])[:2] == ["curves", "lr-Adam"]


def test_hparams_row_has_the_curated_choices_with_their_types(trained_digits_run):
    out, _ = trained_digits_run
    runs = read_runs(out / "tensorboard")
    events = runs[""]
    values = hparams_content(events, "_hparams_/session_start_info").session_start_info.hparams
    assert set(values) == DEFAULT_COLUMNS
    assert values["model"].string_value == "resnet18"
    assert values["optimizer"].string_value == "Adam"
    assert values["lr"].WhichOneof("kind") == "number_value"
    assert values["data"].string_value == "digits"
    assert not any(v.string_value in ("None", "null") for v in values.values())

    infos = hparams_content(events, "_hparams_/experiment").experiment.metric_infos
    declared = {m.display_name: (m.name.group, m.name.tag) for m in infos}
    assert len(declared) == len(infos)
    assert {"val/acc", "test/acc", "test/loss", "val/best_acc", "train/best_acc"} <= set(declared)
    for run, tag in declared.values():  # the plugin reads each metric from the scalar it points at
        assert tag in runs[run].Tags()["scalars"], (run, tag)

    every = [(run, tag) for run, accumulator in runs.items() for tag in accumulator.Tags()["scalars"]]
    assert len(every) == len(set(every))
    names = {tag for _, tag in every}
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "test/silhouette"):
        run, tag = dashboard_tag(key)  # each figure in one place, under one name
        assert tag in runs[run].Tags()["scalars"] and key not in names
    assert {"curves/acc", "curves/loss"} <= set(runs["train"].Tags()["scalars"]) & set(runs["val"].Tags()["scalars"])
    assert not any(tag.startswith("hparams/") for tag in names)  # no copies of test/*
    assert "params/trainable" not in names and "model/params_trainable" in events.Tags()["scalars"]
    assert "epoch" not in names


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


@pytest.mark.slow
def test_hparams_table_of_a_two_by_two_sweep_has_a_row_per_job_with_the_choices_and_every_metric(small_sweep):
    """What the HParams tab shows, from TensorBoard's own HParams plugin (its HTTP API) on the sweep folder."""
    with tensorboard_server(small_sweep) as url:
        experiment = post_json(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
        request = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": []}
        request["allowedStatuses"] = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        groups = post_json(f"{url}/data/plugin/hparams/session_groups", request)["sessionGroups"]

    columns = {info["name"] for info in experiment["hparamInfos"]}
    metrics = {info["displayName"]: info["name"] for info in experiment["metricInfos"]}
    assert {"model", "optimizer", "lr", "batch_size", "epochs"} <= columns
    assert {"val/acc", "val/loss", "test/acc", "test/loss", "test/f1", "val/best_acc", "test/silhouette"} <= set(
        metrics
    )
    assert len(groups) == 4  # one row per job, none for the per-split runs
    rows = {(g["hparams"]["optimizer"], g["hparams"]["seed"]) for g in groups}
    assert rows == {(o, s) for o in ("Adam", "SGD") for s in (0, 1)}
    for group in groups:  # every declared metric has its value in every row
        found = {(v["name"].get("group", ""), v["name"]["tag"]) for v in group["metricValues"]}
        assert {(name.get("group", ""), name["tag"]) for name in metrics.values()} <= found, group["name"]
