"""Data loaders, and the training sampler: a permutation that depends only on (seed, epoch).

Every process draws the same order (accelerate then hands each process its share of the
batches), and a resumed run draws the order it had before the interruption, so skipping the
batches already seen lands exactly where it stopped. It owns its generator and never touches
the global random state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from .config import TrainingConfig

__all__ = ["EpochSampler", "make_loader"]


class EpochSampler(Sampler[int]):
    """Indices 0..length-1, shuffled by ``(seed, epoch)`` (in order when ``shuffle`` is
    False). Call ``set_epoch`` before each epoch (accelerate's data loaders do)."""

    def __init__(self, length: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=gen).tolist())


def make_loader(
    dataset: Dataset,
    config: TrainingConfig,
    *,
    train: bool,
    collate_fn: Callable | None = None,
    generator: torch.Generator | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset``: an :class:`EpochSampler` (shuffled for training) for
    map-style data, none for streams. ``generator`` seeds the workers; passing one keeps
    starting an epoch from drawing on the global random state."""
    sampler = None
    if not isinstance(dataset, IterableDataset):
        sampler = EpochSampler(len(dataset), seed=config.seed, shuffle=config.shuffle and train)
    return DataLoader(
        dataset,
        batch_size=config.batch_size if train else (config.eval_batch_size or config.batch_size),
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.num_workers,
        pin_memory=pin_memory,
        drop_last=config.drop_last and train,
        generator=generator
        if generator is not None
        else torch.Generator().manual_seed(config.seed),
    )
