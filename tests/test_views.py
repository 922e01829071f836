"""Test-time views: shifted and mirrored images, and logits averaged over them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import vilt
from vilt.processing.views import AveragedViews, mirror, shift_image
from vilt.processing.views import test_time_views as time_views


def test_shift_moves_the_content_and_repeats_the_border():
    image = torch.arange(20.0).view(4, 5)
    down_right = shift_image(image, 1, 2)
    assert torch.equal(down_right[1:, 2:], image[:-1, :-2])  # the content, moved
    assert torch.equal(down_right[0, 2:], image[0, :-2])  # the top row repeated above it
    assert torch.equal(down_right[:, 0], down_right[:, 2])  # the left column repeated
    up_left = shift_image(image, -1, -2)
    assert torch.equal(up_left[:-1, :-2], image[1:, 2:])
    assert torch.equal(shift_image(image, 0, 0), image)
    # leading dimensions (batch, channels, images per sample) ride along
    stack = torch.rand(2, 3, 3, 4, 5)
    assert torch.equal(shift_image(stack, 1, -1)[1, 2, 0], shift_image(stack[1, 2, 0], 1, -1))


def test_shift_is_each_pixel_read_from_the_nearest_one_inside():
    """Every shift of every dtype equals its definition: output (y, x) reads input
    (clamp(y - dy), clamp(x - dx)); the result never shares memory with the input."""
    image = torch.randint(0, 255, (2, 3, 7, 6), dtype=torch.uint8)
    for dy in range(-6, 7):
        for dx in range(-5, 6):
            rows = (torch.arange(7) - dy).clamp(0, 6)
            cols = (torch.arange(6) - dx).clamp(0, 5)
            moved = shift_image(image, dy, dx)
            assert torch.equal(moved, image[..., rows, :][..., cols]), (dy, dx)
            assert moved.data_ptr() != image.data_ptr()


def test_views_are_the_mirror_and_four_shifts():
    image = torch.rand(3, 6, 6)
    assert time_views() == []
    assert time_views(flip=True) == [mirror]
    views = time_views(flip=True, shift=2)
    assert len(views) == 5 and torch.equal(views[0](image), image.flip(-1))
    moved = [v(image) for v in views[1:]]
    assert torch.equal(moved[0], shift_image(image, -2, 0))
    assert torch.equal(moved[3], shift_image(image, 0, 2))
    assert len({tuple(m.flatten().tolist()) for m in moved}) == 4
    with pytest.raises(ValueError, match="test-time shift must be >= 0 pixels, got -1"):
        time_views(shift=-1)


def test_averaged_logits_are_the_mean_of_each_views_logits():
    torch.manual_seed(0)
    model = vilt.ViltForQuestionAnswering(
        vilt.ViltConfig.from_preset("vilt-test", vocab_size=50, num_labels=5)
    ).eval()
    inputs = {
        "input_ids": torch.randint(1, 50, (3, 6)),
        "attention_mask": torch.ones(3, 6, dtype=torch.long),
        "pixel_values": torch.randn(3, 3, 32, 32),
        "pixel_mask": torch.ones(3, 32, 32, dtype=torch.long),
    }
    labels = torch.zeros(3, 5)
    views = time_views(flip=True, shift=2)
    with torch.no_grad():
        plain = model(**inputs, labels=labels)
        out = AveragedViews(model, views)(**inputs, labels=labels)
        each = [plain.logits] + [
            model(
                **{
                    **inputs,
                    "pixel_values": v(inputs["pixel_values"]),
                    "pixel_mask": v(inputs["pixel_mask"]),
                }
            ).logits
            for v in views
        ]
    torch.testing.assert_close(out.logits, torch.stack(each).mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.logits, plain.logits)  # the views did change the answer scores
    assert torch.equal(out.loss, plain.loss)  # the loss stays the plain images'
    assert torch.equal(out.pooler_output, plain.pooler_output)
    # no views, or no image: the model's output as it is
    with torch.no_grad():
        assert torch.equal(AveragedViews(model, [])(**inputs).logits, plain.logits)


def test_views_are_inference_code_that_loads_no_training_stack():
    """vilt.predict uses the views at import: importing vilt must not pull in accelerate."""
    code = (
        "import sys, vilt, vilt.processing.views; "
        "from vilt.processing import AveragedViews, test_time_views; "
        "print('accelerate' in sys.modules, 'vilt.training' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
