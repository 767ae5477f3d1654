"""The private PyTorch / Lightning behaviour `lightning_resnet.compat` relies on: each test fails loudly
when an upgrade changes it, so the fix goes into compat.py and nowhere else."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from lightning_resnet.builders import build_datamodule, build_model, build_trainer
from lightning_resnet.compat import UnrepeatedDistributedSampler, event_file_writer, nested_schedulers, set_last_lrs


def test_unrepeated_sampler_deals_each_sample_to_exactly_one_rank():
    data = list(range(7))
    shares = [list(UnrepeatedDistributedSampler(data, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]  # no padding repeats, sample k*W + r on rank r


def test_nested_schedulers_reach_the_parts_of_a_sequential_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ramp, cosine = LinearLR(optimizer, 0.1, total_iters=2), CosineAnnealingLR(optimizer, T_max=5)
    sequence = SequentialLR(optimizer, [ramp, cosine], milestones=[2])
    found = list(nested_schedulers([sequence]))
    assert found[0] is sequence and {id(s) for s in found[1:]} == {id(ramp), id(cosine)}


def test_set_last_lrs_is_what_get_last_lr_reports():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = CosineAnnealingLR(optimizer, T_max=5)
    set_last_lrs(scheduler, [0.5])
    assert scheduler.get_last_lr() == [0.5]


def test_event_file_writer_writes_a_built_summary(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import scalar

    writer = SummaryWriter(tmp_path)
    event_file_writer(writer).add_summary(scalar("val/acc", 0.5), 3)
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val/acc")] == [(3, 0.5)]


@pytest.mark.slow
def test_epoch_metrics_cover_every_batch_of_every_epoch(make_cfg):
    """The Metric objects are handed to Lightning once per epoch (overhead fix); their values still
    come from every batch, and each epoch starts afresh."""
    cfg = make_cfg("trainer.limit_val_batches=1.0", "callbacks.reports.train_samples=0")
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg)
    first = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    second = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    batches = [datamodule.model_input(batch) for batch in datamodule.val_dataloader()]
    assert len({len(y) for _, y in batches}) > 1  # a short last batch: the loss mean must weight by size
    with torch.no_grad():
        logits = [model.eval()(x) for x, _ in batches]
        correct = sum((out.argmax(1) == y).sum().item() for out, (_, y) in zip(logits, batches, strict=True))
        loss_sum = sum(model.loss_fn(out, y).item() * len(y) for out, (_, y) in zip(logits, batches, strict=True))
    images = sum(len(y) for _, y in batches)
    assert first["val/acc"] == pytest.approx(correct / images, abs=1e-6)
    assert first["val/loss"] == pytest.approx(loss_sum / images, rel=1e-5)
    assert second == first
