"""`OutputCollector`: what the report needs from the test loop, gathered batch by batch.

Logits, targets and penultimate features are kept for every sample; images only as small uint8
thumbnails (for TensorBoard's projector) and, at full size, for the `k` most confident mistakes seen
so far, so memory stays bounded on large test sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
        self.mistakes.sort(key=lambda m: (-m.confidence, m.index))
        del self.mistakes[self.num_mistakes :]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, targets, features, thumbnails) of every sample, in test order."""
        return (
            torch.cat(self.logits) if self.logits else torch.empty(0, 0),
            torch.cat(self.targets) if self.targets else torch.empty(0, dtype=torch.long),
            torch.cat(self.features) if self.features else torch.empty(0, 0),
            torch.cat(self.thumbnails) if self.thumbnails else torch.empty(0, 3, 1, 1, dtype=torch.uint8),
        )
