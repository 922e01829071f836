"""The image pipeline shared by the ViLT and ViT processors: decode, resize, normalise, pad.

Why it is fast and still equal to transformers: the resize is PIL's own, on the 8-bit image
(what transformers' PIL backend does too, after a round trip through float arrays); the
resized uint8 image becomes a torch tensor and one fused multiply-add does rescale and
normalise, written straight into the padded batch. Decoding and resizing run on a small
thread pool (PIL releases the GIL there) sized by ``torch.get_num_threads()``, so a
DataLoader worker (torch sets 1 thread there) stays single-threaded.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from .files import (
    PREPROCESSOR_CONFIG,
    read_image_processor_dict,
    read_json,
    resolve_directory,
    write_json,
)
from .images import describe_input, load_file_image, open_image, oriented_size, to_8bit

__all__ = ["RESAMPLE", "BaseImageProcessor"]

RESAMPLE: dict[str, int] = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_RESAMPLE_NAMES = {int(v): k for k, v in RESAMPLE.items()}

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_pid = os.getpid()
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads (made anew in a forked child, whose copy of
    the parent's pool has no threads behind it)."""
    global _pools_pid
    with _pools_lock:
        if os.getpid() != _pools_pid:
            _pools.clear()
            _pools_pid = os.getpid()
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="vilt-image")
        return _pools[workers]


def resample_name(value: str | int) -> str:
    """A resampling filter by name ("bicubic") or PIL number (3) -> its name."""
    if isinstance(value, str) and value.lower() in RESAMPLE:
        return value.lower()
    if isinstance(value, int) and not isinstance(value, bool) and value in _RESAMPLE_NAMES:
        return _RESAMPLE_NAMES[value]
    raise ValueError(
        f"unknown resample {value!r}; use one of {', '.join(RESAMPLE)} or a PIL filter number"
    )


class BaseImageProcessor:
    """Shared pipeline; subclasses say the output size (``output_size``) and the file layout
    (``to_dict``/``from_dict``). ``pixel_mask`` is returned only by those with ``do_pad``.

    Args:
        do_resize: resize each image to ``output_size`` (False: keep the decoded size).
        resample: PIL filter for the resize, by name ("bicubic") or PIL number (3).
        do_rescale: multiply the 0..255 pixel values by ``rescale_factor``.
        rescale_factor: the rescale multiplier (1/255 maps to 0..1).
        do_normalize: subtract ``image_mean`` and divide by ``image_std``, per channel.
        image_mean: per-channel (R, G, B) mean; one value is used for all three.
        image_std: per-channel (R, G, B) standard deviation, no zero; one value for all three.
        jpeg_draft: let libjpeg decode JPEG files at a reduced scale when resizing (faster;
            pixels differ slightly from a full decode).
        num_threads: threads that decode and resize a batch's images (None: torch's count).

    Raises:
        ValueError: for an unknown ``resample``, a mean or std that is not 1 or 3 values, a
            zero in ``image_std``, or ``num_threads`` below 1.
    """

    processor_type: ClassVar[str] = ""
    do_pad: bool = False

    def __init__(
        self,
        *,
        do_resize: bool,
        resample: str | int,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        jpeg_draft: bool = False,
        num_threads: int | None = None,
    ) -> None:
        self.do_resize = bool(do_resize)
        self.resample = resample_name(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = _triple(image_mean, "image_mean")
        self.image_std = _triple(image_std, "image_std")
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}")
        self.jpeg_draft = bool(jpeg_draft)
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        self.num_threads = num_threads
        scale = torch.full((3,), self.rescale_factor if self.do_rescale else 1.0)
        bias = torch.zeros(3)
        if self.do_normalize:
            std = torch.tensor(self.image_std, dtype=torch.float64)
            scale = (scale.double() / std).float()
            bias = (-torch.tensor(self.image_mean, dtype=torch.float64) / std).float()
        self._scale = scale.view(3, 1, 1)
        self._bias = bias.view(3, 1, 1)

    # -- what subclasses define ---------------------------------------------------------------
    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the resized image for an input of ``width`` x ``height``.

        Args:
            width: the input image's width in pixels.
            height: the input image's height in pixels.
        """
        raise NotImplementedError

    def _own_fields(self) -> dict[str, Any]:
        """The subclass's settings in transformers' preprocessor_config.json layout."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The settings as transformers' preprocessor_config.json holds them."""
        data: dict[str, Any] = {
            "image_processor_type": self.processor_type,
            "do_resize": self.do_resize,
            "resample": int(RESAMPLE[self.resample]),
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            **self._own_fields(),
        }
        if self.jpeg_draft:  # vilt's own key: it changes pixels, so it travels with the model
            data["jpeg_draft"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> BaseImageProcessor:
        """A processor from a transformers-style ``preprocessor_config.json`` dict.

        Args:
            data: the settings as ``to_dict`` writes them (unknown keys are ignored).
            **overrides: constructor arguments that replace the file's settings.
        """
        raise NotImplementedError

    # -- one image --------------------------------------------------------------------------
    def preprocess_one(self, image: Any, *, normalize: bool = True) -> torch.Tensor:
        """One image (path, PIL image, array) -> a (3, h, w) tensor at its own resized size.

        ``normalize=True``: float32, rescaled and normalised, ready for :meth:`pad`.
        ``normalize=False``: the resized uint8 image; :meth:`pad` normalises it while padding,
        so DataLoader workers can send a quarter of the bytes to the main process.

        Args:
            image: a file path, PIL image, numpy array or tensor.
            normalize: rescale and normalise now (float32) rather than in :meth:`pad` (uint8).

        Raises:
            ImageInputError: for an image that cannot be used (a missing or unreadable file,
                zero size, an array of unusable shape or dtype); the message names it.
            TypeError: for an input that is not an image at all.
        """
        pixels = self._resize_uint8(image, None)
        if not normalize:
            return pixels.contiguous()
        return torch.addcmul(self._bias, pixels, self._scale)

    def _resize_uint8(self, image: Any, index: int | None) -> torch.Tensor:
        """Decode, convert to 8-bit RGB/L and resize: a uint8 (3, h, w) view."""
        name = describe_input(image, index)
        if isinstance(image, str | os.PathLike):
            with open_image(image) as opened:
                if self.jpeg_draft and opened.format == "JPEG" and self.do_resize:
                    self._draft(opened)
                return self._resize_pil(to_8bit(load_file_image(opened, name), name))
        return self._resize_pil(to_8bit(image, name))

    def _draft(self, image: Image.Image) -> None:
        """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, keeping at least twice the output
        size (PIL picks the largest reduction that stays at or above the request)."""
        width, height = oriented_size(image)
        out_w, out_h = self.output_size(width, height)
        if (width, height) != image.size:  # EXIF rotates by 90 degrees: ask in file axes
            out_w, out_h = out_h, out_w
        image.draft(image.mode, (2 * out_w, 2 * out_h))

    def _resize_pil(self, image: Image.Image) -> torch.Tensor:
        if self.do_resize:
            size = self.output_size(image.width, image.height)
            if size != image.size:
                image = image.resize(size, RESAMPLE[self.resample])
        array = torch.from_numpy(np.array(image))
        if array.ndim == 2:  # grayscale: one band resized, the same numbers in all three
            return array.unsqueeze(0).expand(3, -1, -1)
        return array.permute(2, 0, 1)

    # -- batches ----------------------------------------------------------------------------
    def __call__(self, images: Any, return_tensors: str | None = "pt") -> dict[str, Any]:
        """A batch: ``pixel_values`` (B, 3, H, W) float32 and, for padding processors,
        ``pixel_mask`` (B, H, W) long (1 = image, 0 = padding). ``images`` is one image or a
        list (path, PIL image, numpy array or tensor each); a list of equal-length lists (e.g.
        NLVR2 pairs) gives (B, n, 3, H, W) and (B, n, H, W). ``return_tensors="np"`` gives
        numpy arrays instead of torch tensors (None: torch, as "pt")."""
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        flat, per_item = _flatten(images)
        resized = self._map(flat)
        batch = self.pad(resized)
        if per_item is not None:
            batch = {k: v.reshape(-1, per_item, *v.shape[1:]) for k, v in batch.items()}
        if return_tensors == "np":
            batch = {k: v.numpy() for k, v in batch.items()}
        return batch

    def _map(self, images: list[Any]) -> list[torch.Tensor]:
        workers = min(len(images), self.num_threads or torch.get_num_threads())
        if workers <= 1:
            return [self._resize_uint8(im, i) for i, im in enumerate(images)]
        return list(_pool(workers).map(self._resize_uint8, images, range(len(images))))

    def pad(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pad (3, h, w) tensors at the bottom and right to the largest in the list.

        float tensors are taken as already normalised (``preprocess_one``); uint8 tensors are
        normalised on the way (``preprocess_one(normalize=False)``). Padding is 0 after
        normalisation, as in transformers. Returns ``pixel_values`` (B, 3, H, W) and, for
        processors that pad, ``pixel_mask`` (B, H, W) long.

        Args:
            images: (3, h, w) tensors, float (normalised) or uint8 (not yet normalised).

        Raises:
            ValueError: for an empty list, an item that is not a (3, h, w) tensor, or images of
                different sizes for a processor without ``do_pad``.
        """
        if len(images) == 0:
            raise ValueError("pad needs at least one image")
        for i, im in enumerate(images):
            if not isinstance(im, torch.Tensor) or im.ndim != 3 or im.shape[0] not in (1, 3):
                what = tuple(im.shape) if isinstance(im, torch.Tensor) else type(im).__name__
                raise ValueError(f"pad: image {i} must be a (3, h, w) tensor, got {what}")
        height = max(im.shape[1] for im in images)
        width = max(im.shape[2] for im in images)
        if not self.do_pad and any(im.shape[1:] != (height, width) for im in images):
            sizes = sorted({tuple(im.shape[1:]) for im in images})
            raise ValueError(f"images of different sizes {sizes} and do_pad=False; pad them")
        # numpy allocates large arrays on transparent huge pages, which a fresh batch faults in
        # with fewer page faults than torch.empty's memory; every element is written once.
        values = torch.from_numpy(np.empty((len(images), 3, height, width), np.float32))
        mask = None
        if self.do_pad:
            mask = torch.from_numpy(np.empty((len(images), height, width), np.int64))
        for i, im in enumerate(images):
            h, w = im.shape[1:]
            if im.dtype == torch.uint8:
                torch.addcmul(self._bias, im, self._scale, out=values[i, :, :h, :w])
            else:
                values[i, :, :h, :w] = im
            values[i, :, h:, :] = 0
            values[i, :, :h, w:] = 0
            if mask is not None:
                mask[i, :h, :w] = 1
                mask[i, h:, :] = 0
                mask[i, :h, w:] = 0
        if mask is None:
            return {"pixel_values": values}
        return {"pixel_values": values, "pixel_mask": mask}

    # -- files -------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``preprocessor_config.json`` (transformers' layout) into ``directory``.

        Args:
            directory: where to write (made when missing); the file is written atomically.

        Returns:
            The path of the file written.
        """
        return write_json(Path(directory) / PREPROCESSOR_CONFIG, self.to_dict())

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, **overrides: Any):
        """Read a vilt or transformers processor directory (``preprocessor_config.json``, or
        ``processor_config.json`` with an ``image_processor`` entry), a JSON file, or a hub
        name. ``overrides`` replace settings (e.g. ``num_threads=1``).

        Args:
            path_or_name: a directory, a JSON file, or a hub name (taken from the local
                huggingface_hub cache, or the hub when online).
            **overrides: constructor arguments that replace the file's settings.

        Raises:
            FileNotFoundError: when the path does not exist and cannot be resolved as a hub
                name, or the directory has no processor config.
            ValueError: for a file that is not a JSON object, or settings that the processor
                rejects; the message names the file.
        """
        path = resolve_directory(path_or_name)
        if path.is_file():
            data, source = read_json(path), path
        else:
            found = read_image_processor_dict(path)
            if found is None:
                raise FileNotFoundError(
                    f"{path}: no {PREPROCESSOR_CONFIG} (or processor_config.json with an "
                    "image_processor entry) in this directory"
                )
            data, source = found
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None

    def options(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this processor (``num_threads`` aside)."""
        names = inspect.signature(type(self).__init__).parameters
        return {n: getattr(self, n) for n in names if n not in ("self", "num_threads")}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return self.options() == other.options()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


def _triple(values: Sequence[float] | float, name: str) -> tuple[float, float, float]:
    if isinstance(values, int | float):
        return (float(values),) * 3
    out = tuple(float(v) for v in values)
    if len(out) == 1:
        return out * 3  # type: ignore[return-value]
    if len(out) != 3:
        raise ValueError(f"{name} needs 1 or 3 values (one per RGB channel), got {len(out)}")
    return out  # type: ignore[return-value]


def _flatten(images: Any) -> tuple[list[Any], int | None]:
    """A batch as a flat list, and the group size when it was a list of equal-length lists."""
    if not isinstance(images, list | tuple):
        return [images], None
    if len(images) == 0:
        raise ValueError("no images given (an empty list)")
    if all(isinstance(item, list | tuple) for item in images):
        sizes = {len(item) for item in images}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                f"nested image lists must all have the same, non-zero length; got {sorted(sizes)}"
            )
        return [im for item in images for im in item], sizes.pop()
    return list(images), None
