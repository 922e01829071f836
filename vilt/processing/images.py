"""Image inputs -> 8-bit PIL images (RGB or L), with errors that name the file or batch item.

Accepted: a path (str or os.PathLike), a PIL image of any mode, a numpy array or torch tensor
(H, W), (H, W, C) or (C, H, W) with C in 1..4. Colour follows transformers' ``convert_rgb``
rule, so outputs are comparable: transparency (an alpha band or a ``transparency`` entry) is
composited over white, other modes go through PIL's ``convert("RGB")``. Grayscale stays a
single L band here (resized once, repeated to three channels later: the same numbers as
resizing three equal bands). Deeper images are scaled to 8 bits instead of clipped at 255
as PIL would: 16-bit data divide by 257 (65535 -> 255), floats in [0, 1] multiply by 255.

This is the one policy for image values, which the data sets' ``vilt.data.load_image`` (and
so ``answer_question`` and ``attention_map``) applies too: NaN or infinite values, values
outside [0, 1] (floats), [0, 255] or [0, 65535] (16-bit), and dtypes that are not bool,
integer or real floating point (object, complex, strings) are refused with an
:class:`ImageInputError` naming the image, never clipped, stretched or turned black. Tensors of
any floating dtype (bfloat16 and float16 included) are read as their float32 values.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageInputError", "describe_input", "open_image", "to_8bit"]

_EXIF_ORIENTATION = 0x0112
_GRAY_MODES = frozenset({"1", "L"})


class ImageInputError(ValueError):
    """An image that cannot be used; the message names the file or the batch item.

    Args:
        message: what is wrong, and where.
        reason: the kind of problem, by the data sets' skip reasons: "missing_image",
            "empty_image", "truncated_image", "too_large_image" or "corrupt_image".
    """

    def __init__(self, message: str, *, reason: str = "corrupt_image") -> None:
        super().__init__(message)
        self.reason = reason


def describe_input(image: Any, index: int | None = None) -> str:
    """What an error message calls ``image``: its path, or its kind and batch position."""
    if isinstance(image, str | os.PathLike):
        return os.fspath(image)
    where = f"image {index} of the batch" if index is not None else "image"
    if isinstance(image, Image.Image):
        return f"{where} (PIL {image.mode} {image.width}x{image.height})"
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"{where} ({type(image).__name__} of shape {tuple(shape)})"
    return f"{where} ({type(image).__name__})"


def open_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> Image.Image:
    """Open ``path`` lazily (header only) and check it; the caller loads the pixels.

    ``max_pixels`` defaults to PIL's ``Image.MAX_IMAGE_PIXELS``: a larger image is refused
    as a likely decompression bomb, with the file named."""
    name = os.fspath(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    file = Path(path)
    if not file.is_file():
        reason = "is a directory, not an image file" if file.is_dir() else "image file not found"
        raise ImageInputError(f"{name}: {reason}", reason="missing_image")
    if file.stat().st_size == 0:
        raise ImageInputError(f"{name}: image file is empty (0 bytes)", reason="empty_image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides
        try:
            image = Image.open(file)
        except UnidentifiedImageError:
            raise ImageInputError(
                f"{name}: not an image PIL can read (corrupt or unknown format)"
            ) from None
        except Image.DecompressionBombError as err:
            raise ImageInputError(
                f"{name}: {err}; raise PIL.Image.MAX_IMAGE_PIXELS to allow it",
                reason="too_large_image",
            ) from None
        except OSError as err:
            raise ImageInputError(f"{name}: cannot read image file ({err})") from None
    w, h = image.size
    if w == 0 or h == 0:
        image.close()
        raise ImageInputError(f"{name}: image has zero size {w}x{h}", reason="empty_image")
    if limit is not None and w * h > limit:
        image.close()
        raise ImageInputError(
            f"{name}: image is {w}x{h} = {w * h} pixels, more than the limit of {limit} "
            "(a decompression bomb?); raise PIL.Image.MAX_IMAGE_PIXELS to allow it",
            reason="too_large_image",
        )
    return image


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied (read from the header only)."""
    w, h = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is ignored, as exif_transpose ignores it
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_file_image(image: Image.Image, name: str) -> Image.Image:
    """Decode an image opened by :func:`open_image` and turn it upright (EXIF orientation)."""
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy when there is nothing to turn
        return image
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        text = str(err)
        kind = (
            "truncated" if "truncated" in text.lower() or isinstance(err, EOFError) else "corrupt"
        )
        raise ImageInputError(
            f"{name}: image file is {kind} (PIL: {text})", reason=f"{kind}_image"
        ) from None


def to_8bit(image: Any, name: str) -> Image.Image:
    """An in-memory image (PIL, numpy, torch) -> an 8-bit PIL image in mode RGB or L."""
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # bfloat16 has no numpy dtype; float16 is read as float32
        if tensor.is_complex():
            raise ImageInputError(f"{name}: image tensor has complex dtype {tensor.dtype}")
        image = tensor.numpy()
    if isinstance(image, np.ndarray):
        image = _array_to_image(image, name)
    elif not isinstance(image, Image.Image):
        raise TypeError(
            f"{name}: cannot read an image from {type(image).__name__}; pass a path, a PIL "
            "image, a numpy array or a torch tensor"
        )
    if image.width == 0 or image.height == 0:
        raise ImageInputError(
            f"{name}: image has zero size {image.width}x{image.height}", reason="empty_image"
        )
    return _pil_to_8bit(image, name)


def _pil_to_8bit(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in _GRAY_MODES:
        return image if mode == "L" else image.convert("L")
    if mode.startswith("I") or mode == "F":
        # PIL would clip these at 255; scale them instead (16-bit by 257, [0, 1] floats by 255)
        array = np.asarray(image)
        return Image.fromarray(
            _scale_to_uint8(array, sixteen_bit=mode.startswith("I;16"), name=name)
        )
    return image.convert("RGB")


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first -> channels last
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)):
        raise ImageInputError(
            f"{name}: an array image must be (H, W), (H, W, C) or (C, H, W) with 1 to 4 "
            f"channels, got shape {tuple(np.shape(array))}"
        )
    if a.size == 0:
        raise ImageInputError(
            f"{name}: image array has zero size, shape {tuple(a.shape)}", reason="empty_image"
        )
    a = _scale_to_uint8(a, sixteen_bit=a.dtype == np.uint16, name=name)
    return Image.fromarray(np.ascontiguousarray(a))  # L, LA, RGB or RGBA from the shape


def _scale_to_uint8(a: np.ndarray, *, sixteen_bit: bool, name: str) -> np.ndarray:
    """8-bit values from any numeric array: uint8 as is; 16-bit divided by 257; floats in
    [0, 1] times 255, floats or integers in [0, 255] as they are (rounded)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ImageInputError(
            f"{name}: image array has dtype {a.dtype}; expected bool, integers or real floats"
        )
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageInputError(f"{name}: image array holds NaN or infinite values")
    if sixteen_bit or (np.issubdtype(a.dtype, np.integer) and 255 < hi <= 65535 and lo >= 0):
        scaled = a / 257.0
    elif np.issubdtype(a.dtype, np.floating) and lo >= 0 and hi <= 1:
        scaled = a * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = a
    else:
        raise ImageInputError(
            f"{name}: image values span [{lo:g}, {hi:g}]; expected floats in [0, 1], "
            "8-bit values in [0, 255] or 16-bit values in [0, 65535]"
        )
    return np.rint(scaled).astype(np.uint8)
