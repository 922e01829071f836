"""RandAugment for the vision-language recipes: torchvision's operations, restricted to the
ones asked for, on uint8 training images; seeded by (seed, epoch, item), so that DataLoader
workers and a second run draw the same, and the global random state is left alone."""

from __future__ import annotations

import builtins

import pytest
import torch
from torch.utils.data import DataLoader

from vilt.jobs.augment import (
    DEFAULT_RANDAUGMENT_OPS,
    RandAugment,
    add_randaugment_flags,
    check_randaugment_flags,
)


def _images(n: int = 32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8, generator=gen) for _ in range(n)]


def _items(images):
    return [{"pixel_values": im, "meta": {"index": i}} for i, im in enumerate(images)]


def _pixels(items):
    return [it["pixel_values"] for it in items]


def test_changes_images_keeps_their_shape_and_replays():
    images = _images()
    augment = RandAugment(_pixels, 2, 9, seed=3)
    state = torch.get_rng_state()
    first = augment(_items(images))
    assert torch.equal(torch.get_rng_state(), state)  # its own generator, not the global one
    assert all(
        o.shape == im.shape and o.dtype == torch.uint8 for o, im in zip(first, images, strict=True)
    )
    assert sum(not torch.equal(o, im) for o, im in zip(first, images, strict=True)) >= 24
    again = augment(_items(images))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    augment.set_epoch(1)  # a new epoch draws anew
    assert (
        sum(not torch.equal(a, b) for a, b in zip(first, augment(_items(images)), strict=True))
        >= 16
    )
    other_seed = RandAugment(_pixels, 2, 9, seed=4)(_items(images))
    assert any(not torch.equal(a, b) for a, b in zip(first, other_seed, strict=True))


def test_draws_only_the_operations_asked_for():
    images = _images(8)
    identity = RandAugment(_pixels, 3, 9, ops=["Identity"])(_items(images))
    assert all(torch.equal(a, b) for a, b in zip(identity, images, strict=True))
    # brightness changes values, never where they are: a constant image stays constant
    flat = [torch.full((3, 8, 8), 100, dtype=torch.uint8)] * 8
    brighter = RandAugment(_pixels, 1, 20, ops=["Brightness"])(_items(flat))
    assert all(len(o.unique()) == 1 for o in brighter)
    assert {int(o[0, 0, 0]) for o in brighter} - {100}
    assert "Solarize" not in DEFAULT_RANDAUGMENT_OPS and "TranslateX" not in DEFAULT_RANDAUGMENT_OPS


def test_each_image_of_an_item_gets_its_own_draws():
    pair = [torch.full((3, 16, 16), 90, dtype=torch.uint8)] * 2  # NLVR2: two images a text
    items = [{"pixel_values": list(pair), "meta": {"index": i}} for i in range(8)]
    out = RandAugment(_pixels, 2, 15, ops=["Brightness", "Contrast", "Posterize"])(items)
    assert all(isinstance(o, list) and len(o) == 2 for o in out)
    assert any(not torch.equal(a, b) for a, b in out)
    stacked = [{"pixel_values": torch.stack(pair), "meta": {"index": 0}}]
    assert RandAugment(_pixels, 1, 9)(stacked)[0].shape == (2, 3, 16, 16)
    # retrieval's negative images are augmented as the matched one is
    item = {"pixel_values": pair[0], "candidate_images": list(pair), "meta": {"index": 0}}
    out = RandAugment(lambda items: items, 2, 15, ops=["Brightness", "Contrast"])([item])[0]
    assert all(not torch.equal(im, pair[0]) for im in out["candidate_images"])


class _Items(torch.utils.data.Dataset):
    def __init__(self, images):
        self.items = _items(images)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_workers_draw_what_the_main_process_draws():
    data = _Items(_images(24))
    augment = RandAugment(_pixels, 2, 9, seed=1)
    main = [b for batch in DataLoader(data, batch_size=6, collate_fn=augment) for b in batch]
    workers = DataLoader(data, batch_size=6, collate_fn=augment, num_workers=2)
    assert all(
        torch.equal(a, b)
        for a, b in zip(main, [b for batch in workers for b in batch], strict=True)
    )


def test_bad_settings_and_a_missing_torchvision_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown; choose from"):
        RandAugment(_pixels, 2, 9, ops=["HorizontalFlip"])
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 30\]"):
        RandAugment(_pixels, 2, 31)
    with pytest.raises(TypeError, match="uint8 images"):
        RandAugment(_pixels, 1, 9)(_items([torch.zeros(3, 8, 8)]))
    import argparse

    parser = argparse.ArgumentParser()
    add_randaugment_flags(parser)
    args = parser.parse_args(["--randaugment", "2", "--randaugment-ops", "Rotate", "Invert"])
    with pytest.raises(ValueError, match=r"--randaugment-ops: unknown \['Invert'\]"):
        check_randaugment_flags(args)
    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    args = parser.parse_args(["--randaugment", "2"])
    with pytest.raises(ValueError, match=r"pip install 'vilt\[augment\]'"):
        check_randaugment_flags(args)
    assert parser.parse_args([]).randaugment == 0  # off unless asked: no import needed
    check_randaugment_flags(parser.parse_args([]))
