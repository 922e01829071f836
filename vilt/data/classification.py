"""Image classification data: any ``datasets`` source, or scikit-learn's digits offline.

``load_classification(source, split=...)`` takes
- ``None``: scikit-learn's bundled digits (1,797 8x8 grayscale images, 10 classes) split
  once, stratified, with a fixed seed: 1,437 train / 360 test (``train_test_split(
  test_size=0.2, stratify=labels, random_state=0)``);
- "easy-vqa": easy-VQA's 64x64 images, each labelled by its shape's colour and kind ("red
  circle": 8 x 3 = 24 classes) from the facts its questions state (3,542 of the 4,000
  train and 880 of the 1,000 test images; the others, whose colour or kind no question
  states, are left out and said so in ``notes``): a ViT to start ViLT from;
- a hub name (``datasets.load_dataset``), a local directory (an ``imagefolder``: class
  subfolders under train/ and test/ or validation/; or any layout ``load_dataset`` reads, or
  a ``save_to_disk`` directory), or an in-memory Dataset / DatasetDict.
The image column is the first ``Image`` feature and the label column the first
``ClassLabel`` (or one named label/labels), unless named; label names are kept as
``id2label``. Items are {"pixel_values": (3, H, W) tensor from ``transform``, "labels": int}.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import datasets
import numpy as np

from .base import ImageRecord, ImageTransform, RecordDataset
from .errors import DataError
from .hub import RowRecords, find_column, open_hf, undecoded
from .streaming import StreamingDataset

__all__ = [
    "ClassRecord",
    "ClassificationDataset",
    "load_classification",
    "load_digits_split",
    "load_easy_vqa_classes",
]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0


@dataclass
class ClassRecord(ImageRecord):
    """An image and its class id."""

    label: Any = None


class ClassificationDataset(RecordDataset):
    """Map-style classification data: {"pixel_values", "labels"} per item.

    Args:
        records: a sequence of :class:`ClassRecord` (a list, or rows read lazily).
        id2label: class id -> label name, for every class (sets ``num_labels``).
        notes: what a reader says about the records (e.g. those left out), kept as a list.
        **options: transform, skip_bad, skips, cache_images, max_pixels (see
            :class:`~vilt.data.base.RecordDataset`).
    """

    def __init__(
        self, records: Any, *, id2label: dict[int, str], notes: Any = (), **options: Any
    ) -> None:
        self.records = records
        self.id2label = dict(id2label)
        self.notes = list(notes)
        super().__init__(**options)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def encode(self, record: ClassRecord, index: int) -> dict[str, Any]:
        """One record -> {"pixel_values": transformed image, "labels": int}.

        Args:
            record: the image and its class id.
            index: its position (unused; part of the encoder interface).

        Raises:
            DataError: for a label that is not an int in ``0..num_labels - 1``, or an
                :class:`~vilt.data.errors.ImageError` for an image that cannot be read.
        """
        label = record.label
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise DataError(f"{record.source}: label {label!r} is not a class id")
        if not 0 <= int(label) < self.num_labels:
            raise DataError(
                f"{record.source}: label {int(label)} is outside 0..{self.num_labels - 1}"
            )
        return {"pixel_values": self.image_tensor(record), "labels": int(label)}


def load_digits_split(split: str = "train") -> tuple[list[ClassRecord], dict[int, str]]:
    """scikit-learn's digits as records of 8x8 uint8 arrays (0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    index = np.arange(len(images))
    train, test = train_test_split(
        index, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SEED
    )
    if split == "train":
        chosen = train
    elif split in ("test", "validation"):
        chosen = test
    else:
        raise DataError(f"digits: no split {split!r}; it has ['test', 'train']")
    records = [
        ClassRecord(images[i], int(i), f"digits image {i}", label=int(digits.target[i]))
        for i in chosen
    ]
    return records, {i: str(i) for i in range(10)}


def load_easy_vqa_classes(split: str = "train") -> tuple[list[ClassRecord], dict[int, str], int]:
    """easy-VQA's images of ``split`` labelled "colour shape" by what its questions state,
    the label names (every colour and shape, in a fixed order), and how many images were
    left out because no question states their colour or their shape."""
    from .easy_vqa import COLORS, SHAPES, easy_vqa_facts

    names = [f"{color} {shape}" for color in COLORS for shape in SHAPES]
    label = {name: i for i, name in enumerate(names)}
    facts, paths = easy_vqa_facts(split)
    records, left_out = [], 0
    for image_id in sorted(facts):
        color, shape = facts[image_id].get("color"), facts[image_id].get("shape")
        if color is None or shape is None:
            left_out += 1
            continue
        records.append(
            ClassRecord(
                paths[image_id], image_id, f"easy-VQA {split} image {image_id}",
                label=label[f"{color} {shape}"],
            )
        )  # fmt: skip
    return records, dict(enumerate(names)), left_out


def _row_record(row: dict, i: int, *, image_col: str, label_col: str, name: str) -> ClassRecord:
    return ClassRecord(row[image_col], i, f"row {i} of {name}", label=row[label_col])


def load_classification(
    source: Any = None,
    *,
    split: str = "train",
    image_column: str | None = None,
    label_column: str | None = None,
    transform: ImageTransform | None = None,
    streaming: bool = False,
    skip_bad: bool = False,
    cache_images: bool = False,
    max_pixels: int | None = None,
    **load_kwargs: Any,
) -> ClassificationDataset | StreamingDataset:
    """A classification data set of ``split`` (see the module docstring for sources).

    Args:
        source: None (scikit-learn's digits), "easy-vqa", a hub name, a local directory, or
            an in-memory ``datasets`` Dataset / DatasetDict.
        split: the split to read ("test" and "validation" stand in for each other).
        image_column: the image column (default: the first ``Image`` feature, else one
            named image/img).
        label_column: the label column (default: the first ``ClassLabel``, else one named
            label/labels); a column of other values is class-encoded (not when streaming).
        transform: RGB PIL image -> (3, H, W) tensor (e.g. the image processor's
            ``preprocess_one``); None: items hold the uint8 image.
        streaming: return an IterableDataset that reads rows as it goes (hub and
            ``datasets`` sources; the digits and easy-VQA are always in memory).
        skip_bad: skip and count bad images and labels instead of raising.
        cache_images: decode and transform each image once, up front (map-style only).
        max_pixels: refuse images larger than this many pixels (default: PIL's limit).
        **load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``cache_dir``, ``name``).

    Returns:
        A :class:`ClassificationDataset`, or a
        :class:`~vilt.data.streaming.StreamingDataset` when ``streaming``.

    Raises:
        DataError: for a missing split or column, or a streamed label column that is not a
            ``ClassLabel``.
    """
    options = {"transform": transform, "skip_bad": skip_bad, "max_pixels": max_pixels}
    if source is None:
        records, id2label = load_digits_split(split)
        return ClassificationDataset(
            records, id2label=id2label, cache_images=cache_images, **options
        )
    if isinstance(source, str) and source.lower() in ("easy-vqa", "easy_vqa"):
        records, id2label, left_out = load_easy_vqa_classes(split)
        note = (
            f"easy-VQA {split}: {len(records):,} images labelled by colour and shape, "
            f"{left_out:,} left out (no question states their colour or shape)"
        )
        return ClassificationDataset(
            records, id2label=id2label, notes=[note], cache_images=cache_images, **options
        )
    data, name = open_hf(source, split=split, streaming=streaming, **load_kwargs)
    features = data.features
    image_col = find_column(
        features, kind=datasets.Image, given=image_column, names=("image", "img"),
        what="image", source=name,
    )  # fmt: skip
    label_col = find_column(
        features, kind=datasets.ClassLabel, given=label_column, names=("label", "labels"),
        what="label", source=name,
    )  # fmt: skip
    label_feature = features.get(label_col) if features is not None else None
    if not isinstance(label_feature, datasets.ClassLabel):
        if isinstance(data, datasets.IterableDataset):
            raise DataError(
                f"{name}: label column {label_col!r} is not a ClassLabel; streaming needs the "
                "label names up front (cast it with datasets.ClassLabel(names=[...]))"
            )
        data = data.class_encode_column(label_col)
        label_feature = data.features[label_col]
    id2label = dict(enumerate(label_feature.names))
    data = undecoded(data.select_columns([image_col, label_col]), image_col)

    # a partial of a module function, not a closure: spawned DataLoader workers pickle it
    to_record = partial(_row_record, image_col=image_col, label_col=label_col, name=name)
    if isinstance(data, datasets.IterableDataset):
        encoder = ClassificationDataset([], id2label=id2label, **options)
        return StreamingDataset(data, to_record=to_record, encoder=encoder)
    return ClassificationDataset(
        RowRecords(data, to_record), id2label=id2label, cache_images=cache_images, **options
    )
