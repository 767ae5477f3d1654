"""Training-epoch randomness that depends only on (seed, epoch), so a resumed run repeats an uninterrupted one.

`EpochSampler` draws each epoch's order from (seed, epoch) and reseeds the main process's RNGs; its
indices (`EpochIndex`) carry the epoch's seed to DataLoader workers, which `EpochSeededDataset` reseeds
at each epoch's first image. The data module saves the sampler's state in checkpoints.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info


def derived_seed(*key: int) -> int:
    """A 63-bit seed that depends only on `key` (non-negative ints), well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)


def seed_process(*key: int) -> None:
    """Seed this process's torch (CPU and CUDA), numpy and Python RNGs from `key`, like `seed_everything`."""
    sequence = np.random.SeedSequence(list(key))
    torch_seed, python_seed = (int(v) for v in sequence.generate_state(2, np.uint64))
    torch.manual_seed(torch_seed >> 1)
    random.seed(python_seed)
    np.random.seed(sequence.generate_state(4))


class EpochIndex(int):
    """A dataset index that carries the seed of its training epoch to the process that loads it.

    Only indices reach a DataLoader worker during an epoch, so this is how a persistent worker learns that
    a new epoch began (see `EpochSeededDataset`). It indexes like the plain int it is.
    """

    epoch_seed: int

    def __new__(cls, index: int, epoch_seed: int) -> EpochIndex:
        value = super().__new__(cls, index)
        value.epoch_seed = epoch_seed
        return value

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        return EpochIndex, (int(self), self.epoch_seed)


class EpochSampler(Sampler[int]):
    """The training sampler: epoch k's order and randomness depend only on (seed, k), not on what the
    process did before, so a run resumed from an epoch-boundary checkpoint repeats the uninterrupted run.

    Each `iter()` starts the next epoch (`epoch` counts them; the data module checkpoints it with `seed`):
    it draws the order from its own generator seeded by (seed, epoch), uniformly without replacement or,
    with `weights`, with replacement by weight (as `WeightedRandomSampler`); and it reseeds this process's
    global RNGs from (seed, epoch): dropout, augmentation and MixUp/CutMix in the main process. It runs
    when the loader first asks for the epoch's indices, before any of those draws, wherever Lightning made
    the iterator (for a run's first epoch, fresh or resumed, before set_epoch and `on_train_epoch_start`,
    which is why neither is used). The indices carry the epoch's seed to the workers (`EpochIndex`).
    A checkpoint taken mid-epoch resumes with the next epoch's order: exact only at epoch boundaries.
    """

    def __init__(self, num_samples: int, seed: int, weights: torch.Tensor | None = None) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.weights = weights
        self.epoch = 0  # epochs started: the next iter() serves epoch `epoch`

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        epoch_seed = derived_seed(self.seed, self.epoch)
        self.epoch += 1
        seed_process(epoch_seed, 0)
        generator = torch.Generator().manual_seed(epoch_seed)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        return (EpochIndex(i, epoch_seed) for i in order.tolist())

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class EpochSeededDataset(Dataset):
    """The training dataset as DataLoader workers see it: a worker reseeds its RNGs from (epoch seed, rank,
    worker id) at the first index of each epoch (`EpochIndex`), so its augmentation (per image, or per
    batch through `__getitems__`) depends on the epoch, not on how many epochs this worker served before: a
    persistent worker continues across epochs, a resumed run starts fresh ones. A no-op in the main process
    (where `EpochSampler` reseeds: MixUp/CutMix and `augment_on=gpu` draw there, after the transfer).
    """

    def __init__(self, dataset: Dataset, rank: int = 0) -> None:
        self.dataset = dataset
        self.rank = rank
        self._epoch_seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        self._reseed(index)
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        """A whole batch (the DataLoader's fetcher calls this when defined): reseeded by its first index,
        then the wrapped dataset's own `__getitems__` (one batched read), else its items one by one."""
        if len(indices):
            self._reseed(indices[0])
        getitems = getattr(self.dataset, "__getitems__", None)
        return getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]

    def _reseed(self, index: int) -> None:
        epoch_seed = getattr(index, "epoch_seed", None)
        worker = get_worker_info()
        if epoch_seed is not None and epoch_seed != self._epoch_seed and worker is not None:
            seed_process(epoch_seed, 1, self.rank, worker.id)
            self._epoch_seed = epoch_seed

    def __getattr__(self, name: str) -> Any:
        # `labels`, `paths`, `transform` of the wrapped dataset; never dunders (the wrapped `__getitems__`
        # goes through the method above, which reseeds first) and never during unpickling, before `dataset` is set
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
