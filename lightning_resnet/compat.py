"""The few private PyTorch / Lightning APIs the project relies on, in one place.

Each is pinned by `tests/test_compat.py`, which fails loudly when an upgrade moves or changes it,
so the fix is made here and nowhere else. One more is a behaviour rather than a name:
`ResNetClassifier` hands its torchmetrics objects to `self.log` once per epoch and relies on
Lightning's result collection to compute, sync and reset them at the epoch's end
(`test_epoch_metrics_cover_every_batch_of_every_epoch` pins it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

# A DistributedSampler that deals each sample to exactly one process, without padding the last round
# with repeats (which synced val/test metrics would count twice). Lightning keeps it in `overrides`.
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

__all__ = ["UnrepeatedDistributedSampler", "event_file_writer", "nested_schedulers", "set_last_lrs"]


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
