"""Batches leave DataLoader workers in shared memory the worker reuses once the main process frees them."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lightning_resnet.data import batch_augment as ba
from lightning_resnet.data import worker_batches
from lightning_resnet.data.datasets import PixelDataset
from lightning_resnet.data.transforms import Batch, collate

IMAGES, BATCH = 24, 4


class _SharedFlags(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[bool, bool, bool]:
        flipped = ba.BatchAugment([v2.RandomHorizontalFlip(p=1.0)])(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
        jittered = ba.BatchAugment([v2.ColorJitter(brightness=0.5)])(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
        return worker_batches.batch_buffer((2, 3)).is_shared(), flipped.is_shared(), jittered.is_shared()


def test_batch_buffers_are_in_shared_memory_in_workers_only():
    """Pins the private `_new_shared` storage call (the one `default_collate` makes) that `batch_buffer` uses;
    what `BatchAugment` returns in a worker, uint8 all the way (a flip) or rounded from floats, is there too."""
    assert not worker_batches.batch_buffer((2, 3)).is_shared()
    assert not worker_batches.shareable(torch.zeros(2)).is_shared()  # the main process: nothing to hand over
    assert [list(flags) for flags in DataLoader(_SharedFlags(), batch_size=None, num_workers=1)] == [[True] * 3] * 2


class _SlotReporting(PixelDataset):
    """Image i is filled with i; each label says whether the batch lies in one of the worker's reused blocks."""

    def __init__(self) -> None:
        pixels = torch.arange(IMAGES, dtype=torch.uint8).view(-1, 1, 1, 1).expand(IMAGES, 3, 4, 4).contiguous()
        super().__init__(pixels, range(IMAGES), [0] * IMAGES)

    def __getitems__(self, indices: list[int]) -> Batch:
        images = super().__getitems__(indices).images
        in_slot = worker_batches._slot_of(images) is not None
        return Batch(images, torch.full((len(indices),), int(in_slot)))


def loader(workers: int = 1) -> DataLoader:
    return DataLoader(_SlotReporting(), BATCH, collate_fn=collate, num_workers=workers, persistent_workers=workers > 0)


def expected(k: int) -> torch.Tensor:
    return torch.arange(k * BATCH, (k + 1) * BATCH, dtype=torch.uint8).view(-1, 1, 1, 1).expand(BATCH, 3, 4, 4)


def test_batches_freed_by_the_main_process_reuse_the_workers_few_blocks():
    """Three epochs of 6 batches, each dropped once read: every batch came in one of the worker's SLOTS blocks."""
    batches = loader()
    for _ in range(3):
        for k, (images, in_slot) in enumerate(batches):
            assert torch.equal(images, expected(k)) and in_slot.tolist() == [1] * BATCH
            del images, in_slot
    assert worker_batches.SLOTS < 3 * IMAGES // BATCH


def test_a_batch_the_main_process_keeps_is_never_overwritten():
    """Batches (or a view of one) kept past the worker's SLOTS keep their blocks: later batches take one-off
    blocks, and every kept batch still holds its own images after two epochs."""
    batches = loader()
    kept = [images for images, _ in batches]
    view = kept[0][1:]
    in_slot = [int(flags[0]) for _, flags in batches]  # the second epoch: the first epoch's 6 are all kept
    del kept[0]
    for _ in batches:
        pass
    assert torch.equal(view, expected(0)[1:])
    assert all(torch.equal(images, expected(k + 1)) for k, images in enumerate(kept))
    assert in_slot == [0] * (IMAGES // BATCH)  # every block still taken by a batch kept in the first epoch


def test_the_main_process_collates_into_private_memory():
    images, labels = next(iter(loader(workers=0)))
    assert not images.is_shared() and labels.tolist() == [0] * BATCH
