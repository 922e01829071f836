"""Augmentation and soft targets for image classification, built from the job's flags on
torchvision's transforms (the ``augment`` extra, imported only when a flag needs it).

Per image (uint8, at the model's size, before normalisation): ``--crop-scale`` (random
resized crop), ``--randaugment N`` / ``--randaugment-magnitude M`` or ``--trivialaugment``.
Per batch (after the collator normalised it): ``--random-erasing P`` (a rectangle of each
image replaced by noise, as timm erases), then ``--mixup ALPHA`` / ``--cutmix ALPHA``
(``--mixup-prob`` of the batches, one or the other at random when both are set) and
``--label-smoothing EPS``. With any of the last three the batch's ``labels`` are soft
targets: (B, num_labels) float rows that sum to one, for a model built with
``problem_type="single_label_classification"`` (soft-target cross-entropy).

The API: :func:`add_flags` (the parser), :func:`check_flags` (a bad value or a missing
torchvision: one error line before any data is read), :func:`wrap` (the collator as the
flags say; unchanged when every flag is off) and :func:`soft_targets`.

Every draw comes from torch's CPU generator, forked and seeded by (seed, epoch, the batch's
item keys), as :mod:`vilt.jobs.augment` draws, so DataLoader workers and a resumed run
replay them and the global random states (CPU and CUDA) are left as they were.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .augment import _ItemAugment, _key, _torchvision_v2

__all__ = [
    "ImageTransform",
    "SoftTargets",
    "add_flags",
    "check_flags",
    "soft_targets",
    "wrap",
]


def _v2() -> Any:
    """torchvision.transforms.v2, or an error naming the extra that installs it."""
    return _torchvision_v2("this augmentation")


class _Seeded(_ItemAugment):
    """A collator wrapper whose draws run in torch's generator, forked and seeded from
    (seed, stream, epoch, the batch's item keys)."""

    def _seed(self, items: Sequence[dict[str, Any]]) -> int:
        keys = [self.seed, *self._salt, int(self._epoch[0]), *map(_key, items)]
        return int(np.random.default_rng(keys).integers(2**63))


class ImageTransform(_Seeded):
    """torchvision transforms on each training image (uint8 (C, H, W), at the model's
    size), then ``collate``.

    Args:
        collate: the collator that batches the transformed items.
        crop_scale: random resized crop: the smallest area kept, as a fraction of the image
            (then resized back to the image's size; aspect ratio 3/4 to 4/3); None: off.
        randaugment: RandAugment's number of operations (0: off).
        magnitude: RandAugment's strength, 0 to 30.
        trivialaugment: TrivialAugment (one operation at a random strength) instead.
        seed: the run's seed.
        stream: keeps these draws apart from another augmentation's.
    """

    def __init__(
        self,
        collate: Callable,
        *,
        crop_scale: float | None = None,
        randaugment: int = 0,
        magnitude: int = 9,
        trivialaugment: bool = False,
        seed: int = 0,
        stream: int = 11,
    ) -> None:
        if crop_scale is not None and not 0 < crop_scale <= 1:
            raise ValueError(f"crop scale must be in (0, 1], got {crop_scale}")
        if randaugment < 0 or not 0 <= magnitude <= 30:
            raise ValueError(
                f"RandAugment needs N >= 0 and magnitude in [0, 30], got {randaugment}, {magnitude}"
            )
        if randaugment and trivialaugment:
            raise ValueError("RandAugment and TrivialAugment are alternatives: choose one")
        super().__init__(collate, seed=seed, stream=stream)
        self.crop_scale, self.randaugment, self.magnitude = crop_scale, randaugment, magnitude
        self.trivialaugment = trivialaugment
        self._transforms: dict[tuple[int, int], Any] = {}

    @property
    def active(self) -> bool:
        return self.crop_scale is not None or self.randaugment > 0 or self.trivialaugment

    def _build(self, size: tuple[int, int]) -> Any:
        v2 = _v2()
        steps = []
        if self.crop_scale is not None:
            steps.append(v2.RandomResizedCrop(size, scale=(self.crop_scale, 1.0), antialias=True))
        if self.randaugment:
            steps.append(v2.RandAugment(num_ops=self.randaugment, magnitude=self.magnitude))
        if self.trivialaugment:
            steps.append(v2.TrivialAugmentWide())
        return v2.Compose(steps)

    def __getstate__(self) -> dict[str, Any]:  # spawned workers rebuild the transforms
        return {**self.__dict__, "_transforms": {}}

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> Any:
        kept = [it for it in items if it is not None]
        if not (self.active and kept):
            return self.collate(kept)
        out = []
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(self._seed(kept))  # the CPU one only
            for item in kept:
                image = item["pixel_values"]
                if image.dtype != torch.uint8:
                    raise TypeError(
                        "the image augmentations work on uint8 images "
                        f"(preprocess_one(..., normalize=False)), got {image.dtype}"
                    )
                size = tuple(image.shape[-2:])
                if size not in self._transforms:
                    self._transforms[size] = self._build(size)
                out.append({**item, "pixel_values": self._transforms[size](image).contiguous()})
        return self.collate(out)


class SoftTargets(_Seeded):
    """Batch-level regularisers on the collated batch: random erasing, then Mixup/CutMix and
    label smoothing, which make ``labels`` soft targets (B, num_labels) whose rows sum to one.

    Args:
        collate: the collator (possibly wrapped) that makes the batch: normalised
            ``pixel_values`` (B, C, H, W) and class-id ``labels`` (B,).
        num_labels: the number of classes.
        erasing: the probability that an image gets a rectangle of noise (timm's reprob).
        mixup: Mixup's Beta(alpha, alpha) parameter (0: off).
        cutmix: CutMix's (0: off); with both, each mixed batch uses one at random.
        mix_prob: the fraction of the batches that are mixed.
        label_smoothing: the probability mass spread evenly over the classes.
        seed: the run's seed.
        stream: keeps these draws apart from another augmentation's.
    """

    def __init__(
        self,
        collate: Callable,
        num_labels: int,
        *,
        erasing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mix_prob: float = 1.0,
        label_smoothing: float = 0.0,
        seed: int = 0,
        stream: int = 13,
    ) -> None:
        for name, value in (("erasing", erasing), ("mix_prob", mix_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"Mixup and CutMix alphas must be >= 0, got {mixup}, {cutmix}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(collate, seed=seed, stream=stream)
        self.num_labels, self.erasing = num_labels, erasing
        self.mixup, self.cutmix, self.mix_prob = mixup, cutmix, mix_prob
        self.label_smoothing = label_smoothing
        self._ops: tuple[Any, Any] | None = None

    @property
    def active(self) -> bool:
        return bool(self.erasing or self.mixup or self.cutmix or self.label_smoothing)

    @property
    def soft(self) -> bool:
        """Whether the labels leave as soft targets (rather than class ids)."""
        return bool(self.mixup or self.cutmix or self.label_smoothing)

    def _build(self) -> tuple[Any, Any]:
        if not (self.erasing or self.mixup or self.cutmix):
            return None, None  # label smoothing alone needs no torchvision
        v2 = _v2()
        erase = v2.RandomErasing(p=1.0, value="random") if self.erasing else None
        mixes = [
            op(alpha=alpha, num_classes=self.num_labels)
            for op, alpha in ((v2.MixUp, self.mixup), (v2.CutMix, self.cutmix))
            if alpha
        ]
        mix = None if not mixes else mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
        return erase, mix

    def __getstate__(self) -> dict[str, Any]:  # spawned workers rebuild the transforms
        return {**self.__dict__, "_ops": None}

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> Any:
        kept = [it for it in items if it is not None]
        batch = self.collate(kept)
        if batch is None or not self.active:
            return batch
        if self._ops is None:
            self._ops = self._build()
        erase, mix = self._ops
        images, labels = batch["pixel_values"], batch["labels"]
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(self._seed(kept))  # the CPU one only
            if erase is not None:
                chosen = torch.rand(len(images)) < self.erasing
                images = torch.stack(
                    [erase(im) if c else im for im, c in zip(images, chosen.tolist(), strict=True)]
                )
            if self.soft:
                mixed = mix is not None and float(torch.rand(())) < self.mix_prob
                if mixed:
                    images, labels = mix(images, labels)
                else:
                    labels = torch.nn.functional.one_hot(labels, self.num_labels).float()
                eps = self.label_smoothing
                labels = labels * (1.0 - eps) + eps / self.num_labels
        return {**batch, "pixel_values": images, "labels": labels}


def add_flags(parser: Any) -> None:
    """The augmentation flags, off by default (a recipe preset turns them on).

    Args:
        parser: the parser or argument group to add them to.
    """
    parser.add_argument(
        "--crop-scale",
        type=float,
        default=None,
        metavar="MIN",
        help="random resized crop of each training image: keep MIN to 1 of its area, then "
        "resize back (default: off)",
    )
    parser.add_argument(
        "--randaugment",
        type=int,
        default=0,
        metavar="N",
        help="RandAugment: N of torchvision's operations on each training image "
        "(default: %(default)s, off)",
    )
    parser.add_argument(
        "--randaugment-magnitude",
        type=int,
        default=9,
        metavar="M",
        help="RandAugment's strength, 0-30 (default: %(default)s)",
    )
    parser.add_argument(
        "--trivialaugment",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="TrivialAugment: one operation at a random strength per training image "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--random-erasing",
        type=float,
        default=0.0,
        metavar="P",
        help="the probability that a training image gets a rectangle of noise "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="Mixup of training batches with Beta(ALPHA, ALPHA) weights (default: %(default)s, "
        "off)",
    )
    parser.add_argument(
        "--cutmix",
        type=float,
        default=0.0,
        metavar="ALPHA",
        help="CutMix of training batches; with --mixup, one of the two per batch "
        "(default: %(default)s, off)",
    )
    parser.add_argument(
        "--mixup-prob",
        type=float,
        default=1.0,
        metavar="P",
        help="the fraction of training batches that Mixup/CutMix mix (default: %(default)s)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        metavar="EPS",
        help="spread EPS of each target over every class (default: %(default)s)",
    )


def check_flags(args: argparse.Namespace) -> None:
    """A value the flags cannot take, or a missing torchvision, as a ValueError naming the
    flag (for the job's ``resolve`` hook: one error line before any data is read)."""
    if args.crop_scale is not None and not 0 < args.crop_scale <= 1:
        raise ValueError(f"--crop-scale must be in (0, 1], got {args.crop_scale}")
    if args.randaugment < 0:
        raise ValueError(f"--randaugment must be >= 0 operations, got {args.randaugment}")
    if not 0 <= args.randaugment_magnitude <= 30:
        raise ValueError(
            f"--randaugment-magnitude must be in [0, 30], got {args.randaugment_magnitude}"
        )
    if args.randaugment and args.trivialaugment:
        raise ValueError("--randaugment and --trivialaugment are alternatives: give one")
    for flag in ("random_erasing", "mixup_prob"):
        value = getattr(args, flag)
        if not 0 <= value <= 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be in [0, 1], got {value}")
    for flag in ("mixup", "cutmix"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if not 0 <= args.label_smoothing < 1:
        raise ValueError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")
    uses = [
        flag
        for flag, on in (
            ("--crop-scale", args.crop_scale is not None),
            ("--randaugment", args.randaugment > 0),
            ("--trivialaugment", args.trivialaugment),
            ("--random-erasing", args.random_erasing > 0),
            ("--mixup", args.mixup > 0),
            ("--cutmix", args.cutmix > 0),
        )
        if on
    ]
    if uses:
        try:
            _v2()
        except ImportError as err:
            raise ValueError(f"{uses[0]}: {err}") from None


def soft_targets(args: argparse.Namespace) -> bool:
    """Whether the flags make the training labels soft targets (Mixup, CutMix, smoothing)."""
    return bool(args.mixup or args.cutmix or args.label_smoothing)


def wrap(collate: Callable, args: argparse.Namespace, num_labels: int) -> Callable:
    """``collate`` with the flags' augmentations around it (itself when they are all off).

    Args:
        collate: the training collator (items -> batch of normalised images, class ids).
        args: the parsed flags (see :func:`add_flags`).
        num_labels: the number of classes (for soft targets).
    """
    images = ImageTransform(
        collate,
        crop_scale=args.crop_scale,
        randaugment=args.randaugment,
        magnitude=args.randaugment_magnitude,
        trivialaugment=args.trivialaugment,
        seed=args.seed,
    )
    out = images if images.active else collate
    batch = SoftTargets(
        out,
        num_labels,
        erasing=args.random_erasing,
        mixup=args.mixup,
        cutmix=args.cutmix,
        mix_prob=args.mixup_prob,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
    )
    return batch if batch.active else out
