"""Training-time augmentation applied to items before they are collated, after the image
cache: cached uint8 images stay shared and each epoch sees fresh draws.

Draws come from a generator seeded by (seed, epoch, the batch's item keys), never from the
global random state, so a resumed run augments the images an uninterrupted one did and
DataLoader workers agree with the main process. An item's ``pixel_values`` is one image
(C, H, W), several stacked (N, C, H, W), or a list of images (NLVR2's pair): each image of an
item gets its own draws, and so do the images of its ``candidate_images`` (retrieval's
negatives), which would otherwise stand out as the ones left plain.
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

__all__ = [
    "DEFAULT_RANDAUGMENT_OPS",
    "RANDAUGMENT_OPS",
    "HorizontalFlip",
    "RandAugment",
    "RandomShift",
    "add_randaugment_flags",
    "check_shifts",
    "with_randaugment",
]


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
            kept = [self._augmented(it, rng) for it in kept]
        return self.collate(kept)

    def _augmented(self, item: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = {**item, "pixel_values": self.augment(item["pixel_values"], rng)}
        if item.get("candidate_images"):
            out["candidate_images"] = [self.augment(im, rng) for im in item["candidate_images"]]
        return out


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


# torchvision's RandAugment operations (none flips an image, none cuts a hole in it: ViLT left
# out colour inversion and cutout, and torchvision has neither)
RANDAUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
# The default keeps what a text says of the image true: translations (up to 14% of a side at
# magnitude 9) push what lies near an edge out of the picture, and Solarize inverts every pixel
# above a threshold (a white background turns black, a yellow shape blue), the colour inversion
# ViLT left out because texts name colours. The others shear or rotate a little, or change
# brightness, contrast, saturation, sharpness or the number of grey levels.
DEFAULT_RANDAUGMENT_OPS = tuple(
    op for op in RANDAUGMENT_OPS if op not in ("TranslateX", "TranslateY", "Solarize")
)
# what ViLT's rotations and shears fill the corners with
RANDAUGMENT_FILL = 128


def _torchvision_v2(what: str = "RandAugment") -> Any:
    """torchvision.transforms.v2, or an error naming ``what`` needs it and the extra that
    installs it."""
    try:
        from torchvision.transforms import v2
    except Exception as err:  # absent, or built for another torch (fails at import)
        raise ImportError(
            f"{what} needs torchvision (pip install 'vilt[augment]'), which failed to import: {err}"
        ) from err
    return v2


class RandAugment(_ItemAugment):
    """torchvision's RandAugment on each training image: ``num_ops`` operations drawn from
    ``ops``, each at ``magnitude`` (0-30; ViLT fine-tunes with 2 at 9), with a random sign.

    The operations come from ``torchvision.transforms.v2.RandAugment`` (the ``augment`` extra),
    restricted to ``ops``; rotations and shears fill the corners with mid-grey as ViLT did.
    torchvision draws from the global torch generator: each image's draws run inside a forked
    generator seeded from this wrapper's own (seed, epoch, item) draws, so workers and a
    resumed run replay them and the global state is left as it was.

    Args:
        collate: the collator that batches the augmented items.
        num_ops: operations applied to each image (0: off).
        magnitude: their strength, 0 to 30.
        ops: the operations to draw from (names in :data:`RANDAUGMENT_OPS`).
        seed: the run's seed.
        stream: keeps these draws apart from another augmentation's wrapped with it.
    """

    def __init__(
        self,
        collate: Callable,
        num_ops: int = 2,
        magnitude: int = 9,
        *,
        ops: Sequence[str] = DEFAULT_RANDAUGMENT_OPS,
        seed: int = 0,
        stream: int = 0,
    ) -> None:
        if num_ops < 0:
            raise ValueError(f"RandAugment needs num_ops >= 0, got {num_ops}")
        if not 0 <= magnitude <= 30:
            raise ValueError(f"RandAugment magnitude must be in [0, 30], got {magnitude}")
        unknown = [op for op in ops if op not in RANDAUGMENT_OPS]
        if unknown or not ops:
            raise ValueError(
                f"RandAugment operations {unknown or '(none)'} unknown; choose from "
                f"{', '.join(RANDAUGMENT_OPS)}"
            )
        super().__init__(collate, seed=seed, stream=stream)
        self.num_ops, self.magnitude, self.ops = num_ops, magnitude, tuple(dict.fromkeys(ops))
        self._transform = self._build() if num_ops else None

    def _build(self) -> Any:
        v2 = _torchvision_v2()
        transform = v2.RandAugment(
            num_ops=self.num_ops,
            magnitude=self.magnitude,
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=RANDAUGMENT_FILL,
        )
        space = getattr(transform, "_AUGMENTATION_SPACE", None)
        if not isinstance(space, dict) or not set(self.ops) <= set(space):
            raise ImportError(
                "this torchvision's RandAugment does not list its operations as vilt expects "
                "(torchvision >= 0.16 does): pip install 'vilt[augment]'"
            )
        # the instance's own table: the operations drawn from, in torchvision's order
        transform._AUGMENTATION_SPACE = {op: space[op] for op in space if op in self.ops}
        return transform

    @property
    def active(self) -> bool:
        return self.num_ops > 0

    def __getstate__(self) -> dict[str, Any]:  # spawned workers rebuild the transform
        return {**self.__dict__, "_transform": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._transform = self._build() if self.num_ops else None

    def augment(self, image: Any, rng: np.random.Generator) -> Any:
        if isinstance(image, list | tuple):
            return [self.augment(im, rng) for im in image]
        if image.ndim == 4:
            return torch.stack([self.augment(im, rng) for im in image])
        if image.dtype != torch.uint8:
            raise TypeError(
                f"RandAugment works on uint8 images (preprocess_one(..., normalize=False)), "
                f"got {image.dtype}"
            )
        seed = int(rng.integers(2**63))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._transform(image).contiguous()


def add_randaugment_flags(group: Any, *, default_ops: int = 0) -> None:
    """``--randaugment N``, ``--randaugment-magnitude M`` and ``--randaugment-ops OP ...``.

    Args:
        group: the parser (or argument group) to add them to.
        default_ops: the job's default number of operations (0: off).
    """
    group.add_argument(
        "--randaugment",
        type=int,
        default=default_ops,
        metavar="N",
        help="RandAugment: N operations on each training image (torchvision's, the augment "
        "extra; ViLT fine-tunes with 2) (default: %(default)s, off)",
    )
    group.add_argument(
        "--randaugment-magnitude",
        type=int,
        default=9,
        metavar="M",
        help="RandAugment's strength, 0-30 (default: %(default)s, ViLT's)",
    )
    group.add_argument(
        "--randaugment-ops",
        nargs="+",
        default=list(DEFAULT_RANDAUGMENT_OPS),
        metavar="OP",
        help="the operations drawn from (default: all of torchvision's but TranslateX, "
        "TranslateY and Solarize, which push what a text names out of the image or invert its "
        "colours; known: " + ", ".join(RANDAUGMENT_OPS) + ")",
    )


def check_randaugment_flags(args: argparse.Namespace) -> None:
    """A value the flags cannot take, as a ValueError naming the flag (for ``resolve``).

    Args:
        args: the parsed flags (``--randaugment``, ``-magnitude``, ``-ops``).
    """
    if args.randaugment < 0:
        raise ValueError(f"--randaugment must be >= 0 operations, got {args.randaugment}")
    if not 0 <= args.randaugment_magnitude <= 30:
        raise ValueError(
            f"--randaugment-magnitude must be in [0, 30], got {args.randaugment_magnitude}"
        )
    unknown = [op for op in args.randaugment_ops if op not in RANDAUGMENT_OPS]
    if unknown:
        raise ValueError(
            f"--randaugment-ops: unknown {unknown}; known: {', '.join(RANDAUGMENT_OPS)}"
        )
    if args.randaugment:
        try:
            _torchvision_v2()  # a missing extra stops the job here, before any data is read
        except ImportError as err:
            raise ValueError(f"--randaugment {args.randaugment}: {err}") from None


def with_randaugment(collate: Callable, args: argparse.Namespace, *, stream: int = 7) -> Callable:
    """``collate`` wrapped in :class:`RandAugment` as the flags say (unwrapped when off).

    Args:
        collate: the job's training collator.
        args: the parsed flags (``--randaugment``, ``-magnitude``, ``-ops``, ``--seed``).
        stream: separates these draws from the job's other augmentations of the same seed.
    """
    if not args.randaugment:
        return collate
    return RandAugment(
        collate,
        args.randaugment,
        args.randaugment_magnitude,
        ops=args.randaugment_ops,
        seed=args.seed,
        stream=stream,
    )
