"""The default run written as a plain PyTorch script: the reference the overhead benchmark compares against.

Same work as `python -m lightning_resnet` with the default config: scikit-learn's digits upsampled to
32 px RGB, split 70/15/15 stratified with seed 42 (test carved first, then val), normalised by the
training split's mean/std, torchvision resnet18 with a 10-class head, batch 64 shuffled, Adam 1e-3,
cosine over the epochs (stepped per epoch), validation every epoch, the best-val weights saved to a
file and tested at the end. Nothing of `lightning_resnet` is imported, so its imports are not counted.
Its set-up frees a 31 MB float64 copy of the training images (for the mean/std), which raises glibc's
allocator thresholds so that its steps reuse freed memory; without that, its steps faulted as many pages
as the default run did before `lightning_resnet.utils.retain_freed_memory` set those thresholds.

    python benchmarks/plain_digits.py [--epochs 10] [--out DIR]

Prints one JSON line: test and best-val accuracy, best epoch, per-epoch train/val seconds and the
wall-clock time (`time.time()`) of the first training step, for the benchmark to subtract its launch time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 42
FRACTIONS = (0.7, 0.15, 0.15)


def digit_splits(image_size: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (uint8 images (N, 3, S, S), labels)}: stratified, test carved first, then val from the rest."""
    digits = load_digits()
    pixels = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 1)
    images = (images * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.as_tensor(digits.target)
    train, val, test = FRACTIONS
    everything = list(range(len(labels)))
    rest, test_rows = train_test_split(everything, train_size=1 - test, stratify=digits.target, random_state=seed)
    train_rows, val_rows = train_test_split(
        sorted(rest), train_size=1 - val / (train + val), stratify=digits.target[sorted(rest)], random_state=seed
    )
    rows = {"train": sorted(train_rows), "val": sorted(val_rows), "test": sorted(test_rows)}
    return {name: (images[r], labels[r]) for name, r in rows.items()}


def normalised(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(images[start : start + batch_size])
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", default=None, help="folder for best.pt (default: a temporary one)")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    splits = digit_splits(args.image_size, SEED)
    train_images = splits["train"][0].double() / 255.0
    mean, std = train_images.mean(dim=(0, 2, 3)).float(), train_images.std(dim=(0, 2, 3), unbiased=False).float()
    data = {name: (normalised(x, mean, std), y) for name, (x, y) in splits.items()}

    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)  # as conf/optimizer/adam.yaml
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    x_train, y_train = data["train"]
    generator = torch.Generator().manual_seed(SEED)

    with tempfile.TemporaryDirectory() as scratch:
        best_path = Path(args.out or scratch) / "best.pt"
        best_path.parent.mkdir(parents=True, exist_ok=True)
        best_acc, best_epoch, first_step = -1.0, -1, None
        train_s, val_s = [], []
        for epoch in range(args.epochs):
            started = time.perf_counter()
            model.train()
            order = torch.randperm(len(y_train), generator=generator)
            for start in range(0, len(order), args.batch_size):
                if first_step is None:
                    first_step = time.time()
                rows = order[start : start + args.batch_size]
                loss = loss_fn(model(x_train[rows]), y_train[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss.item()  # a hand-written loop reads its loss (for a log line or a NaN check)
            scheduler.step()
            train_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            val_acc = accuracy(model, *data["val"], args.batch_size)
            if val_acc > best_acc:
                best_acc, best_epoch = val_acc, epoch
                torch.save(model.state_dict(), best_path)
            val_s.append(time.perf_counter() - started)
        model.load_state_dict(torch.load(best_path, weights_only=True))
        test_acc = accuracy(model, *data["test"], args.batch_size)
    result = {
        "test_acc": test_acc,
        "best_val_acc": best_acc,
        "best_epoch": best_epoch,
        "epoch_train_s": train_s,
        "epoch_val_s": val_s,
        "first_step_time": first_step,
        "sizes": {name: len(y) for name, (_, y) in splits.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
