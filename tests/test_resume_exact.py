"""Exact resume: a seeded, deterministic run interrupted at an epoch boundary and continued with
`ckpt_path=last` has the same per-epoch figures and test figures as the same run uninterrupted."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_resnet.data.sampling import EpochIndex, EpochSampler, EpochSeededDataset
from lightning_resnet.tasks.train import run
from tests.conftest import FAST, compose_config, read_json

RUN = [
    *FAST,
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "seed=7",
    "callbacks.reports=null",
    "data.batch_size=16",
    "model.head_dropout=0.2",  # dropout draws from the global RNG too
]
INTERRUPT = ["+callbacks.interrupt._target_=tests.test_resume_exact.StopAfterEpochs", "+callbacks.interrupt.epochs=2"]


class StopAfterEpochs(pl.Callback):
    """An interruption at an epoch boundary: fitting stops once `epochs` epochs (and their last.ckpt) are
    done, with the config otherwise unchanged (a smaller max_epochs would change the cosine schedule)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def assert_same_figures(expected: list[dict] | dict, actual: list[dict] | dict, what: str) -> None:
    rows = zip(expected, actual, strict=True) if isinstance(expected, list) else [(expected, actual)]
    for want, got in rows:
        assert set(got) == set(want), what
        differ = {k: (want[k], got[k]) for k in want if not math.isclose(want[k], got[k], rel_tol=0, abs_tol=1e-6)}
        assert not differ, f"{what}, epoch {want.get('epoch')}: (uninterrupted, resumed) {differ}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        ["data.num_workers=0"],
        ["data.num_workers=0", "augment=mixup", "+data.sampler=weighted"],  # flip + MixUp collate, main process
        ["data.num_workers=2", "augment=flip_jitter"],  # persistent workers: they continue across epochs
    ],
    ids=["workers0", "workers0-mixup-weighted", "workers2-flip_jitter"],
)
def test_resumed_run_repeats_the_uninterrupted_one(tmp_path: Path, variant: list[str]) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    uninterrupted = run(compose_config(whole, [*RUN, *variant]))
    run(compose_config(parts, [*RUN, *variant, *INTERRUPT, "test=false"]))
    assert [row["epoch"] for row in read_json(parts / "history.json")] == [0, 1]
    resumed = run(compose_config(parts, [*RUN, *variant, "ckpt_path=last"]))

    history = read_json(whole / "history.json")
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    assert_same_figures(history, read_json(parts / "history.json"), "history.json")
    assert_same_figures(uninterrupted["test"], resumed["test"], "test")


class Tens(torch.utils.data.Dataset):
    """Item i is 10 * i; picklable (module level), as DataLoader workers need."""

    labels = [0, 1, 2]

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> int:
        return int(index) * 10


def test_epoch_order_and_main_process_rng_depend_only_on_seed_and_epoch() -> None:
    sampler = EpochSampler(50, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(50)) and first != second
    assert sampler.state_dict() == {"seed": 3, "epoch": 2}

    torch.manual_seed(123)  # whatever the process did before
    restored = EpochSampler(50, seed=0)
    restored.load_state_dict({"seed": 3, "epoch": 1})
    assert list(restored) == second
    after_restored = torch.rand(4)  # what dropout would draw in the resumed epoch 1

    torch.manual_seed(789)
    fresh = EpochSampler(50, seed=3)
    list(fresh)
    torch.rand(1000)  # epoch 0's draws
    list(fresh)
    assert torch.equal(torch.rand(4), after_restored)  # epoch 1 of the uninterrupted sampler


def test_weighted_epoch_sampler_draws_by_weight_with_replacement() -> None:
    weights = torch.tensor([1.0] * 10 + [9.0])
    draws = torch.tensor([int(i) for _ in range(20) for i in EpochSampler(11, seed=0, weights=weights)])
    assert len(draws) == 220 and (draws == 10).float().mean() > 0.35  # 9 / 19 = 0.47 expected


def test_epoch_index_travels_to_workers_and_the_wrapper_forwards_the_dataset() -> None:
    index = pickle.loads(pickle.dumps(EpochIndex(4, 99)))
    assert index == 4 and index.epoch_seed == 99 and [10, 11, 12, 13, 14][index] == 14
    wrapped = pickle.loads(pickle.dumps(EpochSeededDataset(Tens())))
    assert len(wrapped) == 3 and wrapped[EpochIndex(2, 5)] == 20 and wrapped.labels == [0, 1, 2]
    # a batch at a time: the wrapped dataset's own `__getitems__` when it has one, else item by item
    assert wrapped.__getitems__([EpochIndex(2, 5), EpochIndex(0, 5)]) == [20, 0]
