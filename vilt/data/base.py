"""What every vilt data set shares: records that point at an image, decoding in the worker
through an image transform, skipping bad records when asked, and an optional cache of
transformed images for data sets small enough to hold in memory.

A record's image is decoded in ``__getitem__``, i.e. inside the DataLoader worker, once per
epoch. With ``cache_images=True`` every distinct image (by ``image_key``) is decoded and
transformed once, up front, in the constructor, and items share the cached tensors: a VQA
set that asks several questions of each image decodes it once, and never again after the
first epoch.

A bad record (see :mod:`vilt.data.errors`) raises an error naming its file and record, or
with ``skip_bad=True`` makes ``__getitem__`` return ``None``; the collators drop ``None``
items, and ``dataset.skips`` counts each skipped record once however many epochs meet it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import (
    SKIP_REASONS,
    AllReduce,
    DataError,
    ImageError,
    SkipCounter,
    counts_by_reason,
    skip_or_raise,
)
from .images import load_image

ImageTransform = Callable[[Image.Image], torch.Tensor]

__all__ = ["ImageRecord", "ImageTransform", "RecordDataset", "pil_to_tensor"]


@dataclass
class ImageRecord:
    """One example's image, as a data set's record holds it (decoded only when needed).

    Args:
        image: a path, bytes, a ``datasets`` image dict, a PIL image, an array, or a
            zero-argument callable returning one of these (a row of a large data set, read
            only when needed).
        image_key: names the image (its id or path): the key of the image cache, and what
            tells two images apart for ITM negatives; None: not cached.
        source: names the record in error messages (e.g. "question 42 of questions.json").
    """

    image: Any
    image_key: Hashable | None = None
    source: str = ""


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W): the transform used when none is given.

    Args:
        image: a PIL image of any mode; it is converted to RGB.

    Returns:
        A contiguous uint8 tensor of shape (3, H, W), values 0..255.
    """
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class RecordDataset(torch.utils.data.Dataset):
    """Map-style base: subclasses set ``self.records`` and implement ``encode(record, i)``,
    calling ``self.image_tensor(record)`` for the transformed image.

    ``self.records`` must be set before this constructor runs (it sizes the skip marks and
    fills the cache from them). ``__getitem__`` returns ``None`` for a skipped record.

    Args:
        transform: PIL image -> tensor, applied after decoding (default :func:`pil_to_tensor`:
            uint8 (3, H, W), left to the collator's processor to resize and normalise).
        skip_bad: skip records whose image or text cannot be used (counted in ``skips``)
            instead of raising a :class:`~vilt.data.errors.DataError`.
        skips: a counter to share with the loader that built the records (it may already
            hold load-time skips); default: a new one when ``skip_bad``, else None.
        cache_images: decode and transform every distinct image (by ``image_key``) once, in
            the constructor, and keep the tensors in memory.
        max_pixels: refuse images larger than this many pixels (default: PIL's
            ``Image.MAX_IMAGE_PIXELS``).
    """

    records: Sequence[Any]

    def __init__(
        self,
        *,
        transform: ImageTransform | None = None,
        skip_bad: bool = False,
        skips: SkipCounter | None = None,
        cache_images: bool = False,
        max_pixels: int | None = None,
    ) -> None:
        self.transform = transform or pil_to_tensor
        self.skips = skips if skips is not None else (SkipCounter() if skip_bad else None)
        self.max_pixels = max_pixels
        # image_key -> row of self._cache_rows (or the error decoding it gave)
        self._cache: dict[Hashable, int | ImageError] | None = None
        self._cache_rows: torch.Tensor | list[torch.Tensor] = []
        # 0 = not skipped, else 1 + reason index; shared so workers' marks reach every epoch
        self._skipped = torch.zeros(len(self.records), dtype=torch.uint8).share_memory_()
        if cache_images:
            self._fill_cache()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        if self._skipped[index]:
            return None
        record = self.records[index]
        try:
            return self.encode(record, index)
        except DataError as err:
            skip_or_raise(err, self.skips)
            self._skipped[index] = 1 + SKIP_REASONS.index(err.reason)
            return None

    def encode(self, record: Any, index: int) -> dict[str, Any]:
        """One record -> the item the collator takes (implemented by subclasses).

        Args:
            record: ``self.records[index]``.
            index: its position in the data set.

        Returns:
            The item: a dict holding the transformed image and the record's targets.

        Raises:
            DataError: for a record that cannot be used; ``__getitem__`` skips it or raises.
        """
        raise NotImplementedError

    def image_records(self, record: Any) -> Sequence[ImageRecord]:
        """The images a record holds (the record itself by default; NLVR2's two images).

        Args:
            record: one of ``self.records``.

        Returns:
            Its images (:class:`ImageRecord`), in order; the cache is filled from these.
        """
        return [record]

    def skip_counts(self, all_reduce: AllReduce | None = None) -> dict[str, int]:
        """Records skipped so far by reason, each counted once ({} without skip_bad).

        In a distributed run every process holds its own copy of the data set and may meet
        the same bad record in another epoch: pass ``all_reduce(tensor, op)`` ("sum" or "max"
        over the processes, e.g. accelerate's ``reduce``) and every process gets the run's
        counts. Records left out while loading are counted once, as every process loads them.

        Args:
            all_reduce: ``all_reduce(tensor, op)`` over the processes, op "sum" or "max";
                None: this process's counts only.

        Returns:
            ``{reason: count}`` for the reasons with at least one skip (see
            :data:`~vilt.data.errors.SKIP_REASONS`).
        """
        if self.skips is None:
            return {}
        totals = self.skips.as_tensor()
        if all_reduce is not None:
            # the counter holds load-time skips plus this process's marked records; swap the
            # latter for the records any process marked
            marks, n = self._skipped.long(), len(SKIP_REASONS) + 1
            merged = all_reduce(marks, "max").cpu()
            totals = totals - marks.bincount(minlength=n)[1:] + merged.bincount(minlength=n)[1:]
        return counts_by_reason(totals)

    def decode(self, record: ImageRecord) -> torch.Tensor:
        """Decode and transform one record's image (no cache).

        Args:
            record: the image to read; a callable ``record.image`` is called first.

        Returns:
            ``self.transform`` of the decoded RGB image.

        Raises:
            ImageError: for an image that is missing, empty, truncated, corrupt or too large.
        """
        payload = record.image() if callable(record.image) else record.image
        image = load_image(payload, source=record.source, max_pixels=self.max_pixels)
        return self.transform(image)

    def image_tensor(self, record: ImageRecord) -> torch.Tensor:
        """The transformed image of ``record``, from the cache when there is one.

        Args:
            record: the image; one whose ``image_key`` is None or was not cached is decoded.

        Returns:
            The transformed image tensor (shared with other items when cached).

        Raises:
            ImageError: for an image that cannot be decoded (also when the cache holds its
                error); the message names this record.
        """
        if self._cache is None or record.image_key is None:
            return self.decode(record)
        row = self._cache.get(record.image_key)
        if row is None:  # not seen when the cache was filled
            return self.decode(record)
        if isinstance(row, ImageError):
            # the cached error names the first record of this image; name this one too
            raise ImageError(f"{row} [for {record.source}]", reason=row.reason)
        return self._cache_rows[row]

    def _fill_cache(self) -> None:
        cache: dict[Hashable, int | ImageError] = {}
        rows: list[torch.Tensor] = []
        for image in (im for record in self.records for im in self.image_records(record)):
            key = image.image_key
            if key is None or key in cache:
                continue
            try:
                rows.append(self.decode(image))
                cache[key] = len(rows) - 1
            except ImageError as err:
                cache[key] = err
        # one tensor when shapes agree: a single storage to share with spawned workers
        same = rows and all(r.shape == rows[0].shape and r.dtype == rows[0].dtype for r in rows)
        self._cache_rows = torch.stack(rows) if same else rows
        self._cache = cache

    def cached_images(self) -> int:
        """How many distinct images the cache holds (0 without ``cache_images``)."""
        return 0 if self._cache is None else len(self._cache)
