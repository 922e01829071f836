"""The two image processors: ViLT's (shorter side to ``size``, padded, with a pixel mask) and
ViT's (a fixed square or rectangle). Both equal transformers' ViltImageProcessor and
ViTImageProcessor on the same images; see :mod:`vilt.processing.image_base` for why fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ..config import to_pair
from .image_base import BaseImageProcessor

__all__ = ["ImageProcessor", "ViTImageProcessor"]

_HALF = (0.5, 0.5, 0.5)
# transformers keeps ViLT's longer side at most 1333/800 of the shorter (COCO's detection sizes)
DEFAULT_MAX_SIZE_RATIO = 1333 / 800


def _common_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The settings both processors share, from a transformers-style dict."""
    keys = (
        "do_resize",
        "resample",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "image_mean",
        "image_std",
        "jpeg_draft",
    )
    return {k: data[k] for k in keys if data.get(k) is not None}


def _check_type(data: dict[str, Any], expected: str, other: str, other_class: str) -> None:
    kind = str(data.get("image_processor_type") or data.get("feature_extractor_type") or "")
    if kind.startswith(other):
        raise ValueError(
            f"describes a {kind}, not a {expected} processor; load it with {other_class}"
        )


class ImageProcessor(BaseImageProcessor):
    """ViLT's image pipeline, equal to transformers' ViltImageProcessor.

    Each image: the shorter side to ``size`` and the longer at most ``max_size_ratio`` times
    that (aspect kept), both rounded and then floored to multiples of ``size_divisor``;
    ``resample`` (bicubic); times ``rescale_factor``; minus ``image_mean``, over
    ``image_std``. The batch is padded bottom/right to its largest image and ``pixel_mask``
    marks the real pixels. An image so thin that a side would floor to 0 keeps one
    ``size_divisor`` there (transformers fails on it).

    ``jpeg_draft=True`` lets libjpeg decode JPEG files at a reduced scale when the output is
    at most a quarter of the source's side: libjpeg then skips most of the decoding of a
    large photo, but the pixels differ slightly from a full decode's, hence off by default.
    ``num_threads`` (default: torch's) decodes and resizes a batch's images in parallel.

    Args:
        size: the shorter side of each resized image, in pixels.
        size_divisor: both sides are floored to a multiple of this (the model's patch size).
        max_size_ratio: the longer side is at most this times ``size`` (at least 1).
        do_resize: resize each image (False: keep the decoded size).
        resample: PIL filter for the resize, by name or PIL number.
        do_rescale: multiply the 0..255 pixel values by ``rescale_factor``.
        rescale_factor: the rescale multiplier.
        do_normalize: subtract ``image_mean`` and divide by ``image_std``, per channel.
        image_mean: per-channel (R, G, B) mean, or one value for all three.
        image_std: per-channel (R, G, B) standard deviation (no zero), or one value.
        do_pad: pad a batch to its largest image and return ``pixel_mask``; without it,
            images of different sizes in one batch raise ValueError.
        jpeg_draft: decode JPEG files at a reduced scale when resizing (see above).
        num_threads: threads that decode and resize a batch's images (None: torch's count).

    Raises:
        ValueError: for ``size`` or ``size_divisor`` below 1, ``max_size_ratio`` below 1, or a
            setting that :class:`~vilt.processing.image_base.BaseImageProcessor` rejects.
    """

    processor_type: ClassVar[str] = "ViltImageProcessor"

    def __init__(
        self,
        *,
        size: int = 384,
        size_divisor: int = 32,
        max_size_ratio: float = DEFAULT_MAX_SIZE_RATIO,
        do_resize: bool = True,
        resample: str | int = "bicubic",
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = _HALF,
        image_std: Sequence[float] = _HALF,
        do_pad: bool = True,
        jpeg_draft: bool = False,
        num_threads: int | None = None,
    ) -> None:
        super().__init__(
            do_resize=do_resize,
            resample=resample,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            do_normalize=do_normalize,
            image_mean=image_mean,
            image_std=image_std,
            jpeg_draft=jpeg_draft,
            num_threads=num_threads,
        )
        if size < 1 or size_divisor < 1:
            raise ValueError(f"size and size_divisor must be >= 1, got {size}, {size_divisor}")
        if max_size_ratio < 1:
            raise ValueError(f"max_size_ratio must be >= 1, got {max_size_ratio}")
        self.size = int(size)
        self.size_divisor = int(size_divisor)
        self.max_size_ratio = float(max_size_ratio)
        self.do_pad = bool(do_pad)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize: the shorter side ``size``, the longer capped at
        ``max_size_ratio`` x ``size``, both floored to multiples of ``size_divisor``.

        Args:
            width: the input image's width in pixels.
            height: the input image's height in pixels.
        """
        # transformers' arithmetic, step for step, so the sizes agree to the pixel
        shorter = self.size
        longer = int(self.max_size_ratio * shorter)
        scale = shorter / min(height, width)
        if height < width:
            new_h, new_w = float(shorter), scale * width
        else:
            new_h, new_w = scale * height, float(shorter)
        if max(new_h, new_w) > longer:
            scale = longer / max(new_h, new_w)
            new_h, new_w = scale * new_h, scale * new_w
        d = self.size_divisor
        h, w = int(new_h + 0.5) // d * d, int(new_w + 0.5) // d * d
        return max(w, d), max(h, d)

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> ImageProcessor:
        """The processor for a ViLT model config: ``size`` its (shorter) ``image_size``,
        ``size_divisor`` its patch size (384 and 32 for ViLT-B/32, as transformers).

        Args:
            config: a ViLT model config (anything with ``image_size`` and ``patch_size``, each
                an int or a (height, width) pair).
            **overrides: constructor arguments that replace those taken from the config.
        """
        image = config.image_size
        patch = config.patch_size
        size = min(to_pair(image))
        divisor = max(to_pair(patch))
        return cls(**{"size": size, "size_divisor": divisor, **overrides})

    def _own_fields(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "size": {"shortest_edge": self.size},
            "size_divisor": self.size_divisor,
            "do_pad": self.do_pad,
        }
        if self.max_size_ratio != DEFAULT_MAX_SIZE_RATIO:  # vilt's own key; transformers fixes it
            data["max_size_ratio"] = self.max_size_ratio
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> ImageProcessor:
        """From transformers' layouts: ``size`` as 384 or {"shortest_edge": 384}.

        Args:
            data: a ``preprocessor_config.json`` dict (keys it does not know are ignored).
            **overrides: constructor arguments that replace the dict's settings.

        Raises:
            ValueError: when ``data`` describes a ViT processor (its type, or a ``size`` with
                no ``shortest_edge``), or holds a setting the constructor rejects.
        """
        _check_type(data, "ViLT", "ViT", "ViTImageProcessor")
        size = data.get("size", 384)
        if isinstance(size, dict):
            if "shortest_edge" not in size:
                raise ValueError(
                    f"size {size} has no shortest_edge: not a ViLT processor (a fixed "
                    "height/width is ViTImageProcessor's)"
                )
            size = size["shortest_edge"]
        fields = _common_fields(data)
        for key in ("size_divisor", "max_size_ratio", "do_pad"):
            if data.get(key) is not None:
                fields[key] = data[key]
        return cls(**{"size": int(size), **fields, **overrides})


class ViTImageProcessor(BaseImageProcessor):
    """ViT's image pipeline, equal to transformers' ViTImageProcessor: every image resized
    to ``size`` (an int for a square, or (height, width)) with ``resample`` (bilinear),
    rescaled and normalised (mean = std = 0.5 as google/vit-*; pass a checkpoint's own).

    All outputs share one size, so there is no padding and no ``pixel_mask``: ``__call__``
    and ``pad`` return ``pixel_values`` only.

    Args:
        size: the output size: an int for a square, or (height, width).
        do_resize: resize each image to ``size`` (False: images must already share one size).
        resample: PIL filter for the resize, by name or PIL number.
        do_rescale: multiply the 0..255 pixel values by ``rescale_factor``.
        rescale_factor: the rescale multiplier.
        do_normalize: subtract ``image_mean`` and divide by ``image_std``, per channel.
        image_mean: per-channel (R, G, B) mean, or one value for all three.
        image_std: per-channel (R, G, B) standard deviation (no zero), or one value.
        jpeg_draft: let libjpeg decode JPEG files at a reduced scale when resizing (faster;
            pixels differ slightly from a full decode).
        num_threads: threads that decode and resize a batch's images (None: torch's count).

    Raises:
        ValueError: for a ``size`` below 1 or a sequence not two long, or a setting that
            :class:`~vilt.processing.image_base.BaseImageProcessor` rejects.
    """

    processor_type: ClassVar[str] = "ViTImageProcessor"

    def __init__(
        self,
        *,
        size: int | Sequence[int] = 224,
        do_resize: bool = True,
        resample: str | int = "bilinear",
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Sequence[float] = _HALF,
        image_std: Sequence[float] = _HALF,
        jpeg_draft: bool = False,
        num_threads: int | None = None,
    ) -> None:
        super().__init__(
            do_resize=do_resize,
            resample=resample,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            do_normalize=do_normalize,
            image_mean=image_mean,
            image_std=image_std,
            jpeg_draft=jpeg_draft,
            num_threads=num_threads,
        )
        self.height, self.width = to_pair(size)
        if self.height < 1 or self.width < 1:
            raise ValueError(f"size must be positive, got {size!r}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every output image."""
        return self.height, self.width

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize: always ``size``, whatever the input.

        Args:
            width: the input image's width in pixels (unused).
            height: the input image's height in pixels (unused).
        """
        return self.width, self.height

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> ViTImageProcessor:
        """The processor for a ViT model config: ``size`` its ``image_size``.

        Args:
            config: a ViT model config (anything with ``image_size``, an int or a pair).
            **overrides: constructor arguments that replace those taken from the config.
        """
        return cls(**{"size": to_pair(config.image_size), **overrides})

    def _own_fields(self) -> dict[str, Any]:
        return {"size": {"height": self.height, "width": self.width}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> ViTImageProcessor:
        """From transformers' layouts: ``size`` as 224 or {"height": 224, "width": 224}.

        Args:
            data: a ``preprocessor_config.json`` dict (keys it does not know are ignored).
            **overrides: constructor arguments that replace the dict's settings.

        Raises:
            ValueError: when ``data`` describes a ViLT processor (its type, or a ``size``
                without both height and width), or holds a setting the constructor rejects.
        """
        _check_type(data, "ViT", "Vilt", "ImageProcessor")
        size = data.get("size", 224)
        if isinstance(size, dict):
            if "height" not in size or "width" not in size:
                raise ValueError(
                    f"size {size} is not a fixed height and width; ViTImageProcessor resizes "
                    "every image to one size"
                )
            size = (size["height"], size["width"])
        return cls(**{"size": size, **_common_fields(data), **overrides})
