"""`ClassificationDataModule`: what every dataset shares (loaders, normalisation, class info).

Subclasses implement `_load_splits()` returning train/val/test datasets of (image, label) that
take a `transform`; this base decides the transforms, the loaders and the bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from lightning_resnet.compat import UnrepeatedDistributedSampler
from lightning_resnet.data.batch_augment import BatchAugment
from lightning_resnet.data.sampling import EpochSampler, EpochSeededDataset
from lightning_resnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, DeviceTransform, collate, worker_transform
from lightning_resnet.errors import ConfigError
from lightning_resnet.utils import available_cpus

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SAMPLERS = (None, "weighted")
AUGMENT_ON = ("auto", "cpu", "gpu")


class ClassificationDataModule(pl.LightningDataModule):
    """Base for image-classification data modules.

    Args:
        batch_size: per-device batch size.
        image_size: square side the images are resized to.
        normalize: `imagenet`, `auto` (mean/std of the training split), null (none),
            or `{mean: [...], std: [...]}`.
        augment: transforms.v2 ops applied to training images only (the `augment` config group).
        num_workers: DataLoader workers; `auto` = the CPUs this process may use.
        pin_memory: `auto` = on when CUDA is available (page-locked batches copy to the GPU asynchronously).
        persistent_workers: keep workers alive between epochs (only when num_workers > 0), so each
            epoch does not pay the workers' start-up (and, with a pixel cache, their page-cache warm-up).
        seed: seed of the dataset's splits (training randomness follows the global `seed`: the training
            sampler takes `torch.initial_seed()` when its first loader is made, see `EpochSampler`, and
            keeps it, with the epochs started, in the data module's checkpoint state, so a resume continues it).
        prefetch_factor: batches loaded ahead per worker (null: PyTorch's default; only with workers).
        sampler: null (shuffle) or `weighted`: draw training images with probability 1 / class count,
            so every class is seen equally often (with replacement, same epoch length).
        batch_augment: batch-level ops on training batches (MixUp/CutMix, the `augment.batch` entries),
            each an op or a factory called with `num_classes=`; one is chosen at random per batch. They run
            on the device after normalisation (`DeviceTransform`), whatever `augment_on` says.
        crop_ratio: null (resize to a square) or e.g. 0.875: resize the shorter side to
            image_size / crop_ratio, then centre-crop image_size (train and eval geometry alike).
        augment_on: where training augmentation runs. `cpu`: in the DataLoader workers (image files: the
            v2 ops image by image; a pixel cache: `BatchAugment` over each uint8 batch, rounded back to uint8).
            `gpu`: workers only decode and resize, and `BatchAugment` runs on the training device after the
            transfer. `auto`: `gpu` when the Trainer trains on a CUDA device, else `cpu`. Either way every
            loader ships uint8 (N, 3, H, W) batches (4x fewer bytes than floats) and normalisation runs once
            per batch on the device (`on_after_batch_transfer`), for training and evaluation alike.
    """

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 224,
        normalize: str | dict[str, Sequence[float]] | None = "imagenet",
        augment: Sequence[nn.Module] = (),
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        seed: int = 0,
        prefetch_factor: int | None = None,
        sampler: str | None = None,
        batch_augment: Sequence[Callable[..., Any]] = (),
        crop_ratio: float | None = None,
        augment_on: str = "auto",
    ) -> None:
        super().__init__()
        if batch_size < 1 or image_size < 1:
            raise ConfigError(f"data.batch_size and data.image_size must be >= 1, got {batch_size}, {image_size}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler={sampler!r}; valid: null, weighted")
        if crop_ratio is not None and not 0.0 < crop_ratio <= 1.0:
            raise ConfigError(f"data.crop_ratio must be null or in (0, 1], got {crop_ratio}")
        if augment_on not in AUGMENT_ON:
            raise ConfigError(f"data.augment_on={augment_on!r}; valid: {', '.join(AUGMENT_ON)}")
        self.batch_size = batch_size
        self.image_size = image_size
        self.normalize = normalize
        self.augment = list(augment)
        self.num_workers = available_cpus() if num_workers == "auto" else int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.seed = seed
        self.prefetch_factor = prefetch_factor if self.num_workers > 0 else None
        self.sampler = sampler
        self.batch_augment = list(batch_augment)
        self.crop_ratio = crop_ratio
        self.augment_on = augment_on
        self.device_transform: DeviceTransform | None = None  # normalisation (+ augmentation, MixUp) on the device
        self.datasets: dict[str, Dataset] = {}
        self.train_transform: Callable | None = None  # the CPU path's; train_dataloader restores it
        self.train_sampler: EpochSampler | None = None  # made by the first train_dataloader, then reused
        self._sampler_state: dict[str, int] | None = None  # from a checkpoint, for a sampler not made yet
        self.mean: list[float] = []
        self.std: list[float] = []

    # -- to implement ------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    def _load_splits(self) -> dict[str, Dataset]:
        """Return {"train", "val", "test"} datasets without transforms; each must have `.labels`."""
        raise NotImplementedError

    def _train_mean_std(self) -> tuple[list[float], list[float]]:
        """Mean/std of the training images, for `normalize: auto`."""
        raise ConfigError(f"data.normalize=auto is not supported by {type(self).__name__}")

    # -- shared ------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:  # idempotent: the train task sets up before Lightning does
            return
        self.datasets = self._load_splits()
        self.mean, self.std = self._resolve_normalization()
        for split, dataset in self.datasets.items():
            dataset.transform = self._worker_transform(dataset, self.augment if split == "train" else ())
        self.train_transform = self.datasets["train"].transform
        batch_op = None
        if self.batch_augment:
            ops = [op if isinstance(op, nn.Module) else op(num_classes=self.num_classes) for op in self.batch_augment]
            batch_op = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)
        self.device_transform = DeviceTransform(self.mean, self.std, batch_op=batch_op)
        sizes = ", ".join(f"{s}={len(d)}" for s, d in self.datasets.items())
        log.info("%s: %d classes, %s", type(self).__name__, self.num_classes, sizes)

    def _worker_transform(self, dataset: Dataset, augment: Sequence[nn.Module]) -> Callable | None:
        """What a DataLoader worker does to `dataset`'s images, uint8 in and out: a batch of cached pixels
        gets `BatchAugment` (None without augmentation), an image file resize + per-image ops (`worker_transform`)."""
        if getattr(dataset, "batched", False):
            return BatchAugment(augment, to_uint8=True) if augment else None
        return worker_transform(augment, self._resize(dataset), self.crop_ratio)

    def _resize(self, dataset: Dataset) -> int | None:
        """Side to resize to in the transform; None when the dataset already delivers that size
        (a `PixelDataset`)."""
        return None if getattr(dataset, "resized", False) else self.image_size

    def _resolve_normalization(self) -> tuple[list[float], list[float]]:
        norm = self.normalize
        if norm is None or norm == "none":
            return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        if norm == "imagenet":
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        if norm == "auto":
            return self._train_mean_std()
        if isinstance(norm, Mapping) and {"mean", "std"} <= set(norm):
            return [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
        raise ConfigError(f"data.normalize={norm!r}; valid: imagenet, auto, none, or {{mean: [..], std: [..]}}")

    def class_counts(self, split: str = "train") -> list[int]:
        """Images per class in `split` (after setup)."""
        labels = torch.as_tensor(list(self.datasets[split].labels))
        return torch.bincount(labels, minlength=self.num_classes).tolist()

    def preprocessing(self) -> dict[str, Any]:
        """How an image file becomes the model's input at evaluation, saved in checkpoints so prediction
        needs no data config: {image_size, mean, std} and `crop_ratio` when set (see `transforms.eval_transform`)."""
        spec = {"image_size": self.image_size, "mean": self.mean, "std": self.std}
        if self.crop_ratio is not None:
            spec["crop_ratio"] = self.crop_ratio
        return spec

    def _class_balancing_weights(self) -> torch.Tensor:
        """`sampler: weighted`: each training image drawn with probability proportional to 1 / (its class's count)."""
        labels = torch.as_tensor(list(self.datasets["train"].labels))
        counts = torch.bincount(labels, minlength=self.num_classes).clamp(min=1)
        return (1.0 / counts.double())[labels]

    def _epoch_sampler(self) -> EpochSampler:
        """The one training sampler of this data module (its epoch count must survive reloaded loaders).

        Its seed: the checkpoint's when resuming, else `torch.initial_seed()` (the global `seed` after
        `seed_everything`), rank 0's under DDP, where every rank must draw the same order to deal it out.
        """
        if self.train_sampler is None:
            seed = torch.initial_seed()
            trainer = getattr(self, "trainer", None)
            if trainer is not None and trainer.world_size > 1:
                seed = int(trainer.strategy.broadcast(seed, src=0))
            weights = self._class_balancing_weights() if self.sampler == "weighted" else None
            self.train_sampler = EpochSampler(len(self.datasets["train"]), seed, weights)
        if self._sampler_state is not None:
            self.train_sampler.load_state_dict(self._sampler_state)
            self._sampler_state = None
        return self.train_sampler

    def state_dict(self) -> dict[str, Any]:
        """Checkpointed by Lightning: the training sampler's seed and epoch count (see `EpochSampler`)."""
        state = self._sampler_state or (self.train_sampler.state_dict() if self.train_sampler else None)
        return {"train_sampler": dict(state)} if state else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_sampler" in state_dict:
            self._sampler_state = dict(state_dict["train_sampler"])
            if self.train_sampler is not None:
                self._epoch_sampler()

    def _loader(
        self,
        split: str,
        shuffle: bool,
        sampler: Sampler | None = None,
        dataset: Dataset | None = None,
    ) -> DataLoader:
        # Worker seeding: Lightning's seed_everything(workers=True) adds its worker_init_fn to every loader.
        return DataLoader(
            self.datasets[split] if dataset is None else dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-balanced) by `EpochSampler`: each epoch's order and randomness are a function
        of (seed, epoch), in the main process and in the workers (`EpochSeededDataset`)."""
        sampler = self._epoch_sampler()
        train = self.datasets["train"]
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        dataset = EpochSeededDataset(train, rank) if self.num_workers > 0 else train
        on_device = self._augment_on_device()
        # augment_on gpu: the workers decode and resize only, the device transform augments after the transfer
        train.transform = self._worker_transform(train, ()) if on_device else self.train_transform
        if self.device_transform is not None:
            augment = on_device and bool(self.augment)
            self.device_transform.augment = BatchAugment(self.augment, to_uint8=False) if augment else None
        return self._loader("train", shuffle=False, sampler=sampler, dataset=dataset)

    def _augment_on_device(self) -> bool:
        if self.augment_on != "auto":
            return self.augment_on == "gpu"
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Every uint8 batch becomes the model's input here, on the device (`model_input`); a training batch
        (the Trainer is training) is augmented first with `augment_on=gpu` and mixed after (MixUp/CutMix)."""
        trainer = getattr(self, "trainer", None)
        batch = self.model_input(batch, train=trainer is not None and trainer.training)
        # the precision plugin converts float inputs before the transfer (e.g. to bf16 under `bf16-true`):
        # these floats were made after it, so they get the same conversion here
        plugin = getattr(trainer, "precision_plugin", None)
        return plugin.convert_input(batch) if plugin is not None else batch

    def model_input(self, batch: Any, train: bool = False) -> Any:
        """(uint8 images, labels) from one of this module's loaders -> (normalised float images, labels):
        what `on_after_batch_transfer` does, for code that reads the loaders without a Trainer. A batch
        that is not uint8 images (already floats) passes unchanged."""
        images = batch[0] if isinstance(batch, list | tuple) else None
        if self.device_transform is None or not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            return batch
        return self.device_transform(images, batch[1], train)

    def _eval_sampler(self, split: str) -> Sampler | None:
        """Under DDP, each val/test image on exactly one process. Lightning's default sampler pads the
        last round with repeats, which the synced metrics would count; without repeats the processes
        may run one batch fewer, safe without gradients as long as each has a batch."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size < 2 or len(self.datasets[split]) < trainer.world_size:
            return None
        world, rank = trainer.world_size, trainer.global_rank
        return UnrepeatedDistributedSampler(self.datasets[split], num_replicas=world, rank=rank, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, sampler=self._eval_sampler("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, sampler=self._eval_sampler("test"))
