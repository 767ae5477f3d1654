"""`OutputCollector`: what the report needs from the test loop, gathered batch by batch.

Logits, targets and penultimate features are kept for every sample; images only as small uint8
thumbnails (for TensorBoard's projector) and, at full size, for the `k` most confident mistakes seen
so far, so memory stays bounded on large test sets. Under DDP each rank collects its share and
`merge_ranks` puts them back into one collector in test order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised float images (N, C, H, W) back to uint8 for display."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return ((images * std_t + mean_t).clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class Mistake:
    confidence: float
    index: int
    target: int
    predicted: int
    image: torch.Tensor  # (3, H, W) uint8


def most_confident(mistakes: list[Mistake], k: int) -> list[Mistake]:
    """The `k` most confident mistakes; ties go to the earlier sample."""
    return sorted(mistakes, key=lambda m: (-m.confidence, m.index))[:k]


@dataclass
class OutputCollector:
    mean: Sequence[float]
    std: Sequence[float]
    num_mistakes: int = 16
    thumbnail_size: int = 32
    logits: list[torch.Tensor] = field(default_factory=list)
    targets: list[torch.Tensor] = field(default_factory=list)
    features: list[torch.Tensor] = field(default_factory=list)
    thumbnails: list[torch.Tensor] = field(default_factory=list)
    mistakes: list[Mistake] = field(default_factory=list)
    seen: int = 0

    def update(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor) -> None:
        logits, targets = logits.detach().float().cpu(), targets.detach().cpu()
        self.logits.append(logits)
        self.targets.append(targets)
        self.features.append(features.detach().float().flatten(1).cpu())
        display = denormalize(images.detach().float(), self.mean, self.std).cpu()
        self.thumbnails.append(self._thumbnails(display))
        self._keep_confident_mistakes(display, logits, targets)
        self.seen += len(targets)

    def _thumbnails(self, display: torch.Tensor) -> torch.Tensor:
        size = self.thumbnail_size
        if display.shape[-2:] == (size, size):
            return display
        resized = F.interpolate(display.float(), size=(size, size), mode="bilinear", antialias=True)
        return resized.round().clamp(0, 255).to(torch.uint8)

    def _keep_confident_mistakes(self, display: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if self.num_mistakes <= 0:
            return
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        for i in torch.nonzero(predicted != targets).flatten().tolist():
            self.mistakes.append(
                Mistake(float(confidence[i]), self.seen + i, int(targets[i]), int(predicted[i]), display[i].clone())
            )
        self.mistakes = most_confident(self.mistakes, self.num_mistakes)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, targets, features, thumbnails) of every sample, in test order."""
        return (
            torch.cat(self.logits) if self.logits else torch.empty(0, 0),
            torch.cat(self.targets) if self.targets else torch.empty(0, dtype=torch.long),
            torch.cat(self.features) if self.features else torch.empty(0, 0),
            torch.cat(self.thumbnails) if self.thumbnails else torch.empty(0, 3, 1, 1, dtype=torch.uint8),
        )


def merge_ranks(parts: Sequence[OutputCollector], num_samples: int | None) -> OutputCollector:
    """One collector in test order from each rank's, listed by rank.

    A `DistributedSampler(shuffle=False)` deals sample `k * W + r` to rank `r` as its k-th. Lightning's
    default one pads the end with repeats, at positions from `num_samples` on, which are dropped. With
    `num_samples=None` (another sampler) the ranks' samples are concatenated in rank order.
    """
    merged = OutputCollector(parts[0].mean, parts[0].std, parts[0].num_mistakes, parts[0].thumbnail_size)
    world, offsets = len(parts), [0]
    for part in parts:
        offsets.append(offsets[-1] + part.seen)
    total = offsets[-1] if num_samples is None else num_samples

    def position(local: Any, rank: int) -> Any:  # a rank's k-th sample -> its place in the test set
        return local + offsets[rank] if num_samples is None else local * world + rank

    positions = torch.cat([position(torch.arange(part.seen), rank) for rank, part in enumerate(parts)])
    if not len(positions):
        return merged
    in_order, order = positions.sort()
    keep = order[in_order < total]
    columns = zip(*(part.stacked() for part in parts if part.seen), strict=True)
    for name, column in zip(("logits", "targets", "features", "thumbnails"), columns, strict=True):
        getattr(merged, name).append(torch.cat(column)[keep])
    merged.seen = len(keep)
    mistakes = [
        Mistake(m.confidence, position(m.index, rank), m.target, m.predicted, m.image)
        for rank, part in enumerate(parts)
        for m in part.mistakes
    ]
    merged.mistakes = most_confident([m for m in mistakes if m.index < total], merged.num_mistakes)
    return merged
