"""Training-time augmentation applied to items before they are collated, after the image
cache: cached uint8 images stay shared and each epoch sees fresh draws.

Draws come from a generator seeded by (seed, epoch, the batch's item keys), never from the
global random state, so a resumed run augments the images an uninterrupted one did and
DataLoader workers agree with the main process.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["HorizontalFlip", "RandomShift"]


def _key(item: dict[str, Any]) -> int:
    meta = item.get("meta") or {}
    key = meta.get("index", meta.get("question_id", meta.get("image_id", 0)))
    if isinstance(key, int | np.integer):
        return int(key) & 0xFFFFFFFF
    return zlib.crc32(str(key).encode())  # strings: the same number in every process


class _ItemAugment:
    """Wraps a collator: ``augment(image, rng)`` each item's image, then ``collate``."""

    def __init__(self, collate: Callable, *, seed: int = 0) -> None:
        self.collate = collate
        self.seed = seed
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    @property
    def active(self) -> bool:
        return True

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch
        if hasattr(self.collate, "set_epoch"):
            self.collate.set_epoch(epoch)

    def augment(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> Any:
        kept = [it for it in items if it is not None]
        if self.active and kept:
            rng = np.random.default_rng([self.seed, int(self._epoch[0]), *map(_key, kept)])
            kept = [{**it, "pixel_values": self.augment(it["pixel_values"], rng)} for it in kept]
        return self.collate(kept)


class HorizontalFlip(_ItemAugment):
    """Mirror each training image left-right with probability ``p``.

    Only for tasks whose answers do not depend on left and right: easy-VQA's questions name
    shapes and colours, never sides (its triangles all point up, so no vertical flips);
    VQAv2 asks "what is on the left?", and digits are not symmetric."""

    def __init__(self, collate: Callable, p: float = 0.5, *, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        super().__init__(collate, seed=seed)
        self.p = p

    @property
    def active(self) -> bool:
        return self.p > 0

    def augment(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return image.flip(-1) if rng.random() < self.p else image


class RandomShift(_ItemAugment):
    """Move each training image by up to ``pixels`` in each direction, zero-filled (a random
    crop of the zero-padded image): a digit keeps its class under a small shift."""

    def __init__(self, collate: Callable, pixels: int = 1, *, seed: int = 0) -> None:
        if pixels < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {pixels}")
        super().__init__(collate, seed=seed)
        self.pixels = pixels

    @property
    def active(self) -> bool:
        return self.pixels > 0

    def augment(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        k = self.pixels
        h, w = image.shape[-2:]
        dy, dx = rng.integers(0, 2 * k + 1, size=2).tolist()
        return F.pad(image, (k, k, k, k))[..., dy : dy + h, dx : dx + w].contiguous()
