"""Data loaders for any task: seeded shuffling, DDP sharding, optional class-balanced sampling."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from vt_models.config import LoopConfig
from vt_models.train import distributed as dist


class TrainingError(RuntimeError):
    """A training run that cannot start; says what to run or change first."""


def build_loaders(
    train_ds: Dataset,
    val_ds: Dataset,
    tc: LoopConfig,
    seed: int,
    labels: list[int] | None = None,
    collate_fn: Any = None,
) -> tuple[DataLoader, DataLoader]:
    """Train and val loaders for any task: seeded shuffling, DDP sharding, optional class-balanced sampling."""
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise TrainingError(f"empty split: {len(train_ds)} train / {len(val_ds)} val items; check the splits file")
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if dist.is_distributed():
        if labels is not None:
            raise TrainingError("train.imbalance=balanced_sampler does not combine with torchrun: use class_weights")
        sampler = DistributedSampler(train_ds, shuffle=True, seed=seed)
    elif labels is not None:
        counts = torch.bincount(torch.tensor(labels))
        weights = (1.0 / counts.float())[torch.tensor(labels)]
        sampler = WeightedRandomSampler(weights, num_samples=len(train_ds), replacement=True, generator=generator)
    common = dict(
        num_workers=tc.num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        collate_fn=collate_fn,
    )
    train_loader = DataLoader(
        train_ds,
        batch_size=tc.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=len(train_ds) > tc.batch_size,
        **common,
    )
    val_shard = Subset(val_ds, dist.shard(len(val_ds))) if dist.is_distributed() else val_ds
    val_loader = DataLoader(val_shard, batch_size=tc.batch_size, shuffle=False, **common)
    return train_loader, val_loader
