"""Training-time augmentation applied to items before they are collated, after the image
cache: cached uint8 images stay shared and each epoch sees fresh draws.

Draws come from a generator seeded by (seed, epoch, the batch's item keys), never from the
global random state, so a resumed run augments the images an uninterrupted one did and
DataLoader workers agree with the main process.
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..processing.views import shift_image

__all__ = ["HorizontalFlip", "RandomShift", "check_shifts"]


def _key(item: dict[str, Any]) -> int:
    meta = item.get("meta") or {}
    key = meta.get("index", meta.get("question_id", meta.get("image_id", 0)))
    if isinstance(key, int | np.integer):
        return int(key) & 0xFFFFFFFF
    return zlib.crc32(str(key).encode())  # strings: the same number in every process


class _ItemAugment:
    """Wraps a collator: ``augment(image, rng)`` each item's image, then ``collate``."""

    def __init__(self, collate: Callable, *, seed: int = 0, stream: int = 0) -> None:
        self.collate = collate
        self.seed = seed
        # a nonzero stream keeps one augmentation's draws apart from another's wrapped with it
        self._salt = [stream] if stream else []
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
            keys = [self.seed, *self._salt, int(self._epoch[0]), *map(_key, kept)]
            rng = np.random.default_rng(keys)
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
    """Move each training image by up to ``pixels`` in each direction (a random crop of the
    padded image): an object keeps its class under a small shift, and shifts that are not
    multiples of the patch size show the model each object cut into patches differently.

    ``fill`` is what enters at the edge: ``"zeros"`` (digits: a black background) or
    ``"edge"`` (the border pixels repeated: easy-VQA's plain light backgrounds, where black
    would read as a black shape)."""

    FILLS = ("zeros", "edge")

    def __init__(
        self,
        collate: Callable,
        pixels: int = 1,
        *,
        fill: str = "zeros",
        seed: int = 0,
        stream: int = 0,
    ) -> None:
        if pixels < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {pixels}")
        if fill not in self.FILLS:
            raise ValueError(f"shift fill must be one of {self.FILLS}, got {fill!r}")
        super().__init__(collate, seed=seed, stream=stream)
        self.pixels = pixels
        self.fill = fill

    @property
    def active(self) -> bool:
        return self.pixels > 0

    def augment(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        k = self.pixels
        h, w = image.shape[-2:]
        if k >= min(h, w):  # a shape check: the first batch fails, not a random later one
            raise ValueError(
                f"a shift of up to {k} pixels does not fit an image of {h}x{w}: a shift must be "
                "smaller than the image"
            )
        dy, dx = rng.integers(0, 2 * k + 1, size=2).tolist()
        if self.fill == "zeros":
            return F.pad(image, (k, k, k, k))[..., dy : dy + h, dx : dx + w].contiguous()
        return shift_image(image, k - dy, k - dx).contiguous()


def check_shifts(args: argparse.Namespace, size: int) -> None:
    """Refuse a training shift (``--shift``) or test-time shift (``--tta-shift``) that is not
    smaller than the image: such a view holds no part of the image, only its border. Checked
    before training starts, so that a bad flag does not cost a run.

    Args:
        args: the job's flags.
        size: the image's shorter side, in pixels, as the model sees it.

    Raises:
        ValueError: naming the flag, its value and the image size.
    """
    for flag in ("shift", "tta_shift"):
        value = getattr(args, flag, 0) or 0
        if value >= size:
            raise ValueError(
                f"--{flag.replace('_', '-')} {value} must be smaller than the image ({size} pixels)"
            )
