"""Test-time augmentation: a model's logits averaged over views of each batch's images.

A small model trained from scratch on few images answers a question about a shape a little
differently when the shape sits a few pixels over or is mirrored; averaging the logits of
such views (the image itself, mirrored, shifted by a few pixels each way) cancels part of
that noise. Inference, not training: prediction code and evaluation both use it.

Views act on the last two dimensions (H, W) of ``pixel_values`` and of ``pixel_mask`` alike,
so they serve ViT and ViLT, one image or several per sample. Shifts repeat the border pixels
into the gap rather than filling it with black.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["AveragedViews", "mirror", "shift_image", "test_time_views"]

ImageView = Callable[[torch.Tensor], torch.Tensor]

# inputs that ask for more than logits: the extra views are scored for their logits alone
_PLAIN_ONLY = ("labels", "output_attentions", "output_hidden_states")


def shift_image(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (..., H, W) moved down ``dy`` and right ``dx`` pixels (negative: up, left),
    each output pixel read from the nearest pixel inside the image (the border repeated).

    Args:
        image: (..., H, W) tensor (an image batch or a pixel mask).
        dy: rows to move down (negative: up).
        dx: columns to move right (negative: left).

    Raises:
        ValueError: a shift as large as the image (it would leave only the repeated border:
            no view of the image at all).
    """
    h, w = image.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(
            f"a shift of ({dy}, {dx}) pixels does not fit an image of {h}x{w}: a shift must "
            "be smaller than the image"
        )
    if not dy and not dx:
        return image.clone()  # a new tensor, as for any other shift
    return _shift_along(_shift_along(image, dy, image.ndim - 2), dx, image.ndim - 1)


def _shift_along(image: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """``image`` moved ``d`` places along ``dim``, the edge repeated into the gap: slices and
    one concatenation (gathering rows and columns by index is 5-50x slower on a 64x64 image,
    and worse when threads contend, in every training step's data)."""
    if not d:
        return image
    n, k = image.shape[dim], abs(d)
    shape = list(image.shape)
    shape[dim] = k
    edge = image.narrow(dim, 0 if d > 0 else n - 1, 1).expand(shape)
    kept = image.narrow(dim, 0 if d > 0 else k, n - k)
    return torch.cat([edge, kept] if d > 0 else [kept, edge], dim)


def mirror(image: torch.Tensor) -> torch.Tensor:
    """``image`` (..., H, W) mirrored left-right.

    Args:
        image: (..., H, W) tensor (an image batch or a pixel mask).
    """
    return image.flip(-1)


def test_time_views(*, flip: bool = False, shift: int = 0) -> list[ImageView]:
    """The extra views to average with the image itself.

    Args:
        flip: add the image mirrored left-right.
        shift: when > 0, add the image moved this many pixels up, down, left and right.

    Returns:
        The view functions, each taking and returning a (..., H, W) tensor; empty without
        ``flip`` or ``shift``.

    Raises:
        ValueError: for a negative ``shift``.
    """
    if shift < 0:
        raise ValueError(f"test-time shift must be >= 0 pixels, got {shift}")
    views: list[ImageView] = [mirror] if flip else []
    for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)) if shift else ():
        views.append(lambda image, dy=dy, dx=dx: shift_image(image, dy, dx))
    return views


class AveragedViews:
    """Calls ``model`` like the model itself: the output is the plain view's (its loss, its
    hidden states) with ``logits`` replaced by the mean over the image and its ``views``.
    Without views, or for inputs without ``pixel_values``, it is the model's output as is.

    Args:
        model: the model (any callable taking keyword inputs and returning a dataclass output
            with ``logits``).
        views: the extra views (see :func:`test_time_views`); each applies to
            ``pixel_values`` and ``pixel_mask`` alike.
    """

    def __init__(self, model: Callable[..., Any], views: Sequence[ImageView]) -> None:
        self.model = model
        self.views = list(views)

    def __call__(self, **inputs: Any) -> Any:
        out = self.model(**inputs)
        pixels = inputs.get("pixel_values")
        if not self.views or pixels is None:
            return out
        mask = inputs.get("pixel_mask")
        rest = {k: v for k, v in inputs.items() if k not in _PLAIN_ONLY}
        total = out.logits
        for view in self.views:
            moved = {**rest, "pixel_values": view(pixels)}
            if mask is not None:
                moved["pixel_mask"] = view(mask)
            total = total + self.model(**moved).logits
        return dataclasses.replace(out, logits=total / (len(self.views) + 1))
