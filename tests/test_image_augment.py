"""Augmentation for image classification on torchvision: Mixup/CutMix soft targets (rows
that sum to one, images mixed as the labels say), label smoothing, random erasing, the
per-image transforms, their seeding, and the flags' checks."""

from __future__ import annotations

import argparse
import pickle
import sys

import pytest
import torch

from vilt.data import ClassificationCollator
from vilt.jobs import image_augment
from vilt.jobs.image_augment import ImageTransform, SoftTargets

C = 5


def items(n: int = 8, size: int = 16, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % C  # neighbours differ: every mixed row names two classes
    return [
        {"pixel_values": images[i], "labels": int(labels[i]), "meta": {"index": i}}
        for i in range(n)
    ]


def floats(batch: list[dict]) -> dict:
    """A collator of float images (as normalised ones) and class ids."""
    return ClassificationCollator()(
        [{**it, "pixel_values": it["pixel_values"].float() / 255} for it in batch]
    )


def test_mixup_targets_sum_to_one_and_mix_the_images_as_the_labels_say():
    mix = SoftTargets(floats, C, mixup=0.8, seed=3)
    plain = floats(items())
    for epoch in range(4):
        mix.set_epoch(epoch)
        batch = mix(items())
        labels, images = batch["labels"], batch["pixel_values"]
        assert labels.shape == (8, C) and labels.dtype == torch.float32
        torch.testing.assert_close(labels.sum(-1), torch.ones(8))
        ids = plain["labels"]
        lam = labels[torch.arange(8), ids]  # each image's own share
        torch.testing.assert_close(labels[torch.arange(8), ids.roll(1)], 1 - lam)
        expected = lam.view(-1, 1, 1, 1) * plain["pixel_values"] + (1 - lam).view(
            -1, 1, 1, 1
        ) * plain["pixel_values"].roll(1, 0)
        torch.testing.assert_close(images, expected)


def test_cutmix_targets_are_the_pasted_area():
    mix = SoftTargets(floats, C, cutmix=1.0, seed=0)
    plain = floats(items())
    for epoch in range(4):
        mix.set_epoch(epoch)
        batch = mix(items())
        torch.testing.assert_close(batch["labels"].sum(-1), torch.ones(8))
        pasted = (batch["pixel_values"] != plain["pixel_values"]).any(1).float().mean((1, 2))
        other = batch["labels"][torch.arange(8), plain["labels"].roll(1)]
        # pixels from the neighbour: the box (where its pixels differ, almost everywhere)
        assert torch.all(pasted <= other + 1e-6) and torch.allclose(pasted, other, atol=0.02)


@pytest.mark.parametrize(
    "options", [dict(mixup=0.8, cutmix=1.0), dict(mixup=0.8, mix_prob=0.5), dict()]
)
def test_label_smoothing_composes_and_rows_still_sum_to_one(options):
    eps = 0.1
    mix = SoftTargets(floats, C, label_smoothing=eps, seed=1, **options)
    for epoch in range(6):
        mix.set_epoch(epoch)
        labels = mix(items())["labels"]
        torch.testing.assert_close(labels.sum(-1), torch.ones(8))
        assert labels.min() >= eps / C - 1e-7 and labels.max() <= 1 - eps + eps / C + 1e-7
    if not options:  # smoothing alone: one class per row at 1 - eps + eps / C
        expected = torch.full((8, C), eps / C)
        expected[torch.arange(8), torch.arange(8) % C] += 1 - eps
        torch.testing.assert_close(labels, expected)


def test_draws_are_seeded_by_seed_epoch_and_items_and_leave_the_global_state():
    build = lambda seed: SoftTargets(floats, C, mixup=0.8, cutmix=1.0, erasing=0.5, seed=seed)  # noqa: E731
    state = torch.get_rng_state()
    a, b, c = build(0)(items()), build(0)(items()), build(1)(items())
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])
    later = build(0)
    later.set_epoch(1)
    assert not torch.equal(later(items())["pixel_values"], a["pixel_values"])
    # a worker (a pickled copy) draws what the main process draws
    copy = pickle.loads(pickle.dumps(build(0)))
    assert torch.equal(copy(items())["pixel_values"], a["pixel_values"])


def test_random_erasing_fills_a_rectangle_with_noise_and_keeps_class_ids():
    plain = floats(items())
    never = SoftTargets(floats, C, erasing=0.0, seed=0)
    assert not never.active and not never.soft
    always = SoftTargets(floats, C, erasing=1.0, seed=0)(items())
    assert torch.equal(always["labels"], plain["labels"])  # no soft targets from erasing
    changed = (always["pixel_values"] != plain["pixel_values"]).any(1)  # (B, H, W)
    assert changed.flatten(1).any(1).all()  # every image erased somewhere
    rows, cols = changed.any(2), changed.any(1)
    assert torch.equal(changed, rows[:, :, None] & cols[:, None, :])  # one rectangle each


def test_per_image_transforms_keep_uint8_images_and_their_size():
    collate = lambda batch: batch  # noqa: E731
    for options in (dict(crop_scale=0.5), dict(randaugment=2), dict(trivialaugment=True)):
        transform = ImageTransform(collate, seed=0, **options)
        out = transform(items())
        assert all(o["pixel_values"].dtype == torch.uint8 for o in out)
        assert all(o["pixel_values"].shape == (3, 16, 16) for o in out)
        assert any(not torch.equal(o["pixel_values"], i["pixel_values"]) for o, i in zip(
            out, items(), strict=True))  # fmt: skip
        again = ImageTransform(collate, seed=0, **options)(items())
        assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(
            out, again, strict=True))  # fmt: skip
    with pytest.raises(TypeError, match="uint8"):
        ImageTransform(collate, crop_scale=0.5)([{"pixel_values": torch.zeros(3, 8, 8)}])
    with pytest.raises(ValueError, match="choose one"):
        ImageTransform(collate, randaugment=2, trivialaugment=True)


def flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    image_augment.add_flags(parser)
    return parser.parse_args(argv)


def test_wrap_builds_what_the_flags_ask_and_nothing_when_off():
    assert image_augment.wrap(floats, flags([]), C) is floats
    assert not image_augment.soft_targets(flags(["--random-erasing", "0.25"]))
    args = flags(["--crop-scale", "0.5", "--mixup", "0.8", "--label-smoothing", "0.1"])
    wrapped = image_augment.wrap(floats, args, C)
    assert isinstance(wrapped, SoftTargets) and isinstance(wrapped.collate, ImageTransform)
    assert image_augment.soft_targets(args)
    image_augment.check_flags(args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--randaugment", "2", "--trivialaugment"], "alternatives"),
        (["--crop-scale", "0"], "--crop-scale must be in"),
        (["--randaugment-magnitude", "31"], "--randaugment-magnitude"),
        (["--mixup", "-1"], "--mixup must be >= 0"),
        (["--random-erasing", "1.5"], "--random-erasing must be in"),
        (["--label-smoothing", "1"], "--label-smoothing must be in"),
    ],
)
def test_bad_flag_values_name_the_flag(argv, message):
    with pytest.raises(ValueError, match=message):
        image_augment.check_flags(flags(argv))


def test_a_missing_torchvision_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision.transforms", None)
    with pytest.raises(ValueError, match=r"--mixup: .*pip install 'vilt\[augment\]'"):
        image_augment.check_flags(flags(["--mixup", "0.8"]))
    smoothing = flags(["--label-smoothing", "0.1"])  # needs no torchvision
    image_augment.check_flags(smoothing)
    labels = image_augment.wrap(floats, smoothing, C)(items())["labels"]
    torch.testing.assert_close(labels.sum(-1), torch.ones(8))
