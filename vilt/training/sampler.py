"""The training sampler: a permutation that depends only on (seed, epoch).

Every process draws the same order (accelerate then hands each process its share of the
batches), and a resumed run draws the order it had before the interruption, so skipping the
batches already seen lands exactly where it stopped. It owns its generator and never touches
the global random state.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


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
