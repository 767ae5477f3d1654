"""Optimizer step: each `conf/optimizer` config's `step()` on a ResNet's parameters, fused (the configs'
default) against torch's for-loop implementation (`optimizer.fused=null`), interleaved step by step in
one process.

It times the update alone: forward, backward and data are left out. What it is worth in a whole run is a
whole-process A/B of `python -m lightning_resnet` with and without `optimizer.fused=null` (README, Speed).
"""

from __future__ import annotations

import statistics
import time

import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.common import Row
from lightning_resnet import CONFIG_DIR


def run(steps: int = 30, warmup: int = 3, arch: str = "resnet18") -> list[Row]:
    params = list(getattr(torchvision.models, arch)(num_classes=10).parameters())
    for param in params:
        param.grad = torch.randn_like(param) * 1e-3
    millions = sum(p.numel() for p in params) / 1e6
    rows = []
    for path in sorted((CONFIG_DIR / "optimizer").glob("*.yaml")):
        factory = instantiate(OmegaConf.load(path))
        sides = {"fused": factory(params=params), "for-loop": factory(params=params, fused=None)}
        times: dict[str, list[float]] = {side: [] for side in sides}
        for step in range(warmup + steps):
            for side, optimizer in sides.items():  # in turn, so a drift of the machine's speed hits both
                started = time.perf_counter()
                optimizer.step()
                if step >= warmup:
                    times[side].append(time.perf_counter() - started)
        fused, loop = (statistics.median(times[side]) * 1000 for side in sides)
        note = f"for-loop {loop:.1f} ms: {loop / fused:.1f}x; median of {steps} interleaved steps"
        name = f"{path.stem} step on {arch} ({millions:.1f} M parameters), fused"
        rows.append(Row("optimizer", name, fused, "ms", note))
    return rows
