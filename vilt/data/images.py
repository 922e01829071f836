"""Decoding images to RGB with errors that name the file and the record.

``load_image`` accepts what data sets hold: a path, raw bytes, a ``datasets`` image dict
({"bytes", "path"}), a PIL image or a numpy array. Whatever goes wrong inside PIL comes out
as an :class:`ImageError` saying which file (and which question or caption, when the
caller passes ``source``) and why: missing, empty, truncated, corrupt, or larger than
``max_pixels`` (a decompression bomb). Every mode becomes RGB: grayscale is replicated,
transparency is composited over white, 16-bit and float images are scaled to 8 bits.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, describe

__all__ = ["ImageError", "load_image", "to_rgb"]


def load_image(
    image: Any, *, source: str | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Decode ``image`` to an RGB PIL image, fully loaded (no lazy file handle left open).

    ``source`` names the record (e.g. "question 42 of v2_..._questions.json") in errors.
    ``max_pixels`` defaults to PIL's ``Image.MAX_IMAGE_PIXELS``; larger images raise
    ``ImageError(reason="too_large_image")`` instead of PIL's bomb warning or error.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if image is None:
        raise ImageError(f"{describe(None, source)}: no image", reason="missing_image")
    if isinstance(image, Image.Image):
        _check_size(image, limit, "<in-memory image>", source)
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        return to_rgb(_from_array(image, source))
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
        "pass a path, bytes, a PIL image or a numpy array"
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
                return to_rgb(ImageOps.exif_transpose(im))
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


def _from_array(array: np.ndarray, source: str | None) -> Image.Image:
    """(H, W), (H, W, C) or channels-first (C, H, W) arrays, any numeric dtype."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(
            f"{describe(None, source)}: array of shape {a.shape} is not an image",
            reason="corrupt_image",
        )
    if a.size == 0:
        raise ImageError(
            f"{describe(None, source)}: image array has zero size {a.shape}", reason="empty_image"
        )
    if a.dtype != np.uint8:
        a = _to_uint8(a.astype(np.float64), bits16=a.dtype == np.uint16)
    return Image.fromarray(a, "RGBA" if a.ndim == 3 and a.shape[-1] == 4 else None)


def _to_uint8(a: np.ndarray, *, bits16: bool = False) -> np.ndarray:
    """16-bit data: divide by 257 (65535 -> 255). Floats in [0, 1]: times 255. Anything
    else outside [0, 255]: stretched to its own min..max."""
    lo, hi = float(a.min()), float(a.max())
    if bits16 or (hi > 255 and hi <= 65535 and lo >= 0 and np.all(a == np.round(a))):
        a = a / 257.0
    elif lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo < 0 or hi > 255:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: transparency over white, 16-bit/float scaled, CMYK/YCbCr converted."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    elif mode in ("LA", "PA", "La", "RGBa") or (mode == "L" and "transparency" in im.info):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im).astype(np.float64)
        bits16 = mode.startswith("I;16")
        return Image.fromarray(_to_uint8(a, bits16=bits16)).convert("RGB")
    return im.convert("RGB")
