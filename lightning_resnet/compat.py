"""The few private PyTorch / Lightning APIs the project relies on, in one place.

Each is pinned by `tests/test_compat.py`, which fails loudly when an upgrade moves or changes it,
so the fix is made here and nowhere else. One more is a behaviour rather than a name:
`ResNetClassifier` hands its torchmetrics objects to `self.log` once per epoch and relies on
Lightning's result collection to compute, sync and reset them at the epoch's end
(`test_epoch_metrics_cover_every_batch_of_every_epoch` pins it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

# A DistributedSampler that deals each sample to exactly one process, without padding the last round
# with repeats (which synced val/test metrics would count twice). Lightning keeps it in `overrides`.
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

__all__ = [
    "UnrepeatedDistributedSampler",
    "auto_augment_space",
    "event_file_writer",
    "nested_schedulers",
    "quiet_search_bar",
    "set_last_lrs",
    "shared_memory_tensor",
]


def nested_schedulers(schedulers: Sequence[Any]) -> Iterator[Any]:
    """Every scheduler, with the parts of `SequentialLR` / `ChainedScheduler` (their private `_schedulers`)."""
    stack = list(schedulers)
    while stack:
        scheduler = stack.pop()
        stack.extend(getattr(scheduler, "_schedulers", []))
        yield scheduler


def set_last_lrs(scheduler: Any, lrs: list[float]) -> None:
    """Make `get_last_lr()` report `lrs` (torch keeps them in the private `_last_lr`), e.g. after a
    fine-tuning strategy changed a parameter group's LR outside the schedule."""
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = list(lrs)


def event_file_writer(writer: Any) -> Any:
    """The event-file writer behind a `SummaryWriter` (its private `_get_file_writer`), for summaries written
    as built protos: the HParams row whose metrics point at existing scalar tags (`reporting.tensorboard`)."""
    return writer._get_file_writer()


@contextlib.contextmanager
def quiet_search_bar(quiet: bool) -> Iterator[None]:
    """While the range test runs, no tqdm bar when `quiet`: Lightning builds the search's bar itself
    (`tqdm(desc="Finding best initial lr")` in `pytorch_lightning.tuner.lr_finder`, refreshed at every
    step, which off a terminal is a line per step), with no option to turn it off; its module's `tqdm`
    is replaced by a disabled one for that time."""
    from pytorch_lightning.tuner import lr_finder as lightning_lr_finder

    original = getattr(lightning_lr_finder, "tqdm", None)
    if not quiet or original is None:
        yield
        return
    lightning_lr_finder.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        lightning_lr_finder.tqdm = original


def shared_memory_tensor(shape: Sequence[int], dtype: Any) -> Any:
    """An uninitialised tensor in shared memory, which a DataLoader worker hands to the main process without a
    copy: the storage call `default_collate` makes for the batches it stacks (`share_memory_()` would copy)."""
    import math

    import torch

    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).set_(storage).view(tuple(shape))


def auto_augment_space(op: Any) -> dict[str, Any]:
    """{op name: (magnitudes(num_bins, height, width), signed)} of a v2 `RandAugment`/`TrivialAugmentWide`:
    the ops and magnitude tables it draws from, so a batched form draws from the same."""
    return dict(op._AUGMENTATION_SPACE)
