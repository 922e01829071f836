"""Decoding images to RGB with errors that name the file and the record.

``load_image`` accepts what data sets hold: a path, raw bytes, a ``datasets`` image dict
({"bytes", "path"}), a PIL image, a numpy array or a torch tensor. Whatever goes wrong inside
PIL comes out as an :class:`ImageError` saying which file (and which question or caption,
when the caller passes ``source``) and why: missing, empty, truncated, corrupt, or larger
than ``max_pixels`` (a decompression bomb). Every mode becomes RGB: grayscale is replicated,
transparency is composited over white, 16-bit and float images are scaled to 8 bits.

Pixel values follow the processor's one policy (:mod:`vilt.processing.images`): NaN,
values out of range and odd dtypes are refused with the same message, as an ImageError
(which is also an ``ImageInputError``), where this path used to turn NaN black and stretch
out-of-range values.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..processing.images import ImageInputError, describe_input, to_8bit
from .errors import ImageError, describe

__all__ = ["ImageError", "load_image", "to_rgb"]


def load_image(
    image: Any, *, source: str | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Decode ``image`` to an RGB PIL image, fully loaded (no lazy file handle left open).

    Args:
        image: a path, bytes, a ``datasets`` image dict ({"bytes", "path"}), a PIL image, a
            numpy array or a torch tensor; a file is turned upright by its EXIF orientation.
        source: names the record (e.g. "question 42 of v2_..._questions.json") in errors.
        max_pixels: the largest width * height accepted (default PIL's
            ``Image.MAX_IMAGE_PIXELS``); larger images raise instead of PIL's bomb warning.

    Returns:
        The image in RGB mode (grayscale replicated, transparency over white, 16-bit and
        float scaled to 8 bits).

    Raises:
        ImageError: for an image that is missing, empty, truncated, corrupt, too large, or
            whose values the image policy refuses; ``reason`` says which.
        TypeError: for an ``image`` of a type that holds no image.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if image is None:
        raise ImageError(f"{describe(None, source)}: no image", reason="missing_image")
    if isinstance(image, Image.Image):
        _check_size(image, limit, "<in-memory image>", source)
        return to_rgb(image, source=source)
    if isinstance(image, np.ndarray | torch.Tensor):
        return to_rgb(image, source=source)
    if isinstance(image, dict):  # datasets.Image(decode=False) rows
        data, path = image.get("bytes"), image.get("path")
        if data is not None:
            return _decode(io.BytesIO(data), path or "<image bytes>", source, limit)
        if path is None:
            raise ImageError(
                f"{describe(None, source)}: image has neither bytes nor path",
                reason="missing_image",
            )
        image = path
    if isinstance(image, bytes | bytearray | memoryview):
        return _decode(io.BytesIO(bytes(image)), "<image bytes>", source, limit)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageError(
                f"{describe(path, source)}: image file not found", reason="missing_image"
            ) from None
        except OSError as err:
            raise ImageError(
                f"{describe(path, source)}: cannot read image file ({err})", reason="missing_image"
            ) from None
        if size == 0:
            raise ImageError(
                f"{describe(path, source)}: image file is empty (0 bytes)", reason="empty_image"
            )
        return _decode(path, path, source, limit)
    raise TypeError(
        f"{describe(None, source)}: cannot read an image from {type(image).__name__}; "
        "pass a path, bytes, a PIL image, a numpy array or a torch tensor"
    )


def _check_size(im: Image.Image, limit: int | None, name: Any, source: str | None) -> None:
    w, h = im.size
    if w == 0 or h == 0:
        raise ImageError(
            f"{describe(name, source)}: image has zero size {w}x{h}", reason="empty_image"
        )
    if limit is not None and w * h > limit:
        raise ImageError(
            f"{describe(name, source)}: image is {w}x{h} = {w * h} pixels, more than the "
            f"limit of {limit} (a decompression bomb?); raise max_pixels to allow it",
            reason="too_large_image",
        )


def _decode(fp: Any, name: Any, source: str | None, limit: int | None) -> Image.Image:
    where = describe(name, source)
    with warnings.catch_warnings():
        # PIL warns between MAX_IMAGE_PIXELS and twice that; our own limit decides instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(fp) as im:
                _check_size(im, limit, name, source)
                im.load()
                # a copy (turned upright by its EXIF orientation) that outlives the file
                return to_rgb(ImageOps.exif_transpose(im), source=describe(name, source))
        except ImageError:
            raise
        except Image.DecompressionBombError as err:
            raise ImageError(f"{where}: {err}", reason="too_large_image") from None
        except UnidentifiedImageError:
            raise ImageError(
                f"{where}: not an image file PIL can read (corrupt or unknown format)",
                reason="corrupt_image",
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            text = str(err)
            if "truncated" in text.lower() or isinstance(err, EOFError):
                raise ImageError(
                    f"{where}: image file is truncated (PIL: {text})", reason="truncated_image"
                ) from None
            raise ImageError(
                f"{where}: corrupt image data (PIL: {text})", reason="corrupt_image"
            ) from None


def to_rgb(
    image: Image.Image | np.ndarray | torch.Tensor, *, source: str | None = None
) -> Image.Image:
    """Any PIL mode, array or tensor to an RGB PIL image, by the processor's policy
    (:func:`vilt.processing.images.to_8bit`): transparency over white, 16-bit and float
    scaled, grayscale replicated; a value it refuses is an :class:`ImageError`.

    Args:
        image: the image.
        source: the record, for messages.
    """
    name = source if source else describe_input(image)
    try:
        eight_bit = to_8bit(image, name)
    except ImageInputError as err:
        raise ImageError(str(err), reason=err.reason) from None
    return eight_bit if eight_bit.mode == "RGB" else eight_bit.convert("RGB")
