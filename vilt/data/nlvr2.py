"""NLVR2: a statement about a pair of images, true or false.

Sources (``load_nlvr2``):
- ``None`` or "easy-vqa": statements about two easy-VQA images whose truth their facts
  decide ("both shapes are red", "the left image contains a circle", "the two images show
  the same shape"), offline: four statements per image of the split, half of them true,
  from a fixed seed (:func:`easy_vqa_nlvr2_records`);
- a directory laid out as the official release is, and as the original ViLT code reads it:
  ``nlvr2/data/{train,dev,test1}.json`` (JSON lines with ``identifier``, ``sentence``,
  ``label`` "True"/"False" and, for train, ``directory``), the train images at
  ``images/train/{directory}/{prefix}-img0.png`` and ``-img1.png`` and the others at
  ``{split}/{prefix}-img0.png``, where ``prefix`` is the identifier without its last
  ``-N`` (one image pair carries several statements).

Items are {"pixel_values": [left, right] (two (3, H, W) images, sizes may differ), "text",
"labels": 1 (true) or 0 (false; absent without a label), "meta": {"identifier", "index"}};
:class:`NLVR2Collator` pads both images of every pair into (B, 2, 3, H, W). A missing or bad
image raises an error naming the file and the statement, or is skipped and counted
(``skip_bad=True``), as in every vilt data set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ImageRecord, RecordDataset
from .collate import _meta, _TextImageCollator
from .easy_vqa import STATEMENTS, full_fact_images, statement
from .errors import DataError, SkipCounter, skip_or_raise

__all__ = ["NLVR2Collator", "NLVR2Dataset", "NLVR2Record", "easy_vqa_nlvr2_records", "load_nlvr2"]

LABELS = {0: "False", 1: "True"}


@dataclass
class NLVR2Record:
    """One statement about a left and a right image; ``label`` None when unknown.

    Args:
        identifier: the statement's identifier (NLVR2's ``train-10171-0-0``).
        sentence: the statement.
        label: whether it is true of the pair (None: unknown).
        images: the left and the right image.
        source: names the statement in errors.
    """

    identifier: str
    sentence: str
    label: bool | None
    images: tuple[ImageRecord, ImageRecord]
    source: str = ""


class NLVR2Dataset(RecordDataset):
    """Map-style NLVR2 statements; the image cache holds each image once however many
    statements share it.

    Args:
        records: the statements.
        **options: transform, skip_bad, skips, cache_images, max_pixels (see
            :class:`RecordDataset`).
    """

    def __init__(self, records: Sequence[NLVR2Record], **options: Any) -> None:
        self.records = records
        super().__init__(**options)

    def image_records(self, record: NLVR2Record) -> Sequence[ImageRecord]:
        """The statement's two images, left then right.

        Args:
            record: one statement.
        """
        return record.images

    def encode(self, record: NLVR2Record, index: int) -> dict[str, Any]:
        """One statement -> {"pixel_values": [left, right], "text", "labels"?, "meta"}.

        Args:
            record: the statement and its two images.
            index: its position, kept in ``meta["index"]``.

        Raises:
            DataError: for an empty sentence (reason "empty_text"), or an
                :class:`~vilt.data.errors.ImageError` for an image that cannot be read.
        """
        if not record.sentence.strip():
            raise DataError(f"{record.source}: empty sentence", reason="empty_text")
        item: dict[str, Any] = {
            "pixel_values": [self.image_tensor(image) for image in record.images],
            "text": record.sentence,
            "meta": {"identifier": record.identifier, "index": index},
        }
        if record.label is not None:
            item["labels"] = int(record.label)
        return item


class NLVR2Collator(_TextImageCollator):
    """NLVR2 batches: input_ids, attention_mask, token_type_ids (B, T), pixel_values
    (B, 2, 3, H, W) and pixel_mask (B, 2, H, W) (every image padded to the batch's largest;
    the mask left out when no image is padded, as every collator does), labels (B,) long
    when every item has one, and meta (identifier, index).

    Args:
        processor: a ViltProcessor (or pass ``tokenizer=`` and ``image_processor=``).
        tokenizer: the tokenizer, instead of the processor's.
        image_processor: the image processor, instead of the processor's.
        max_length: the longest text in tokens (default: the processor's, else 40).
    """

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        kept = [it for it in items if it is not None]
        if not kept:
            return None
        batch: dict[str, Any] = self.encode_text([it["text"] for it in kept])
        n = len(kept[0]["pixel_values"])
        if any(len(it["pixel_values"]) != n for it in kept):
            raise ValueError("every NLVR2 item of a batch needs the same number of images")
        padded = self.pad_images([image for it in kept for image in it["pixel_values"]])
        batch.update({k: v.view(len(kept), n, *v.shape[1:]) for k, v in padded.items()})
        if all("labels" in it for it in kept):
            batch["labels"] = torch.tensor([it["labels"] for it in kept], dtype=torch.long)
        batch["meta"] = _meta(kept)
        return batch


# ---- the official release --------------------------------------------------------------------


def _label(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DataError(f"{where}: label must be True or False, got {value!r}")


def load_nlvr2_records(
    root: str | os.PathLike, split: str = "train", *, skips: SkipCounter | None = None
) -> list[NLVR2Record]:
    """The statements of ``split`` (train, dev, test1, or another file in ``nlvr2/data/``)
    under an NLVR2 ``root`` (see the module docstring).

    Args:
        root: the release's root, holding ``nlvr2/data/`` and the image folders.
        split: the statements file's name without ``.json``.
        skips: counts bad lines and missing images instead of raising (``skip_bad``).
    """
    root = Path(root)
    path = root / "nlvr2" / "data" / f"{split}.json"
    if not path.is_file():
        present = sorted(p.stem for p in (root / "nlvr2" / "data").glob("*.json"))
        raise DataError(
            f"{path}: no such file (an NLVR2 root holds nlvr2/data/{{train,dev,test1}}.json; "
            f"found {present or 'none'})"
        )
    records = []
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{where}: malformed JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{where}: expected a JSON object")
                missing = [k for k in ("identifier", "sentence") if not isinstance(row.get(k), str)]
                if missing:
                    raise DataError(f"{where}: no {' or '.join(missing)}")
                identifier = row["identifier"]
                prefix = identifier.rsplit("-", 1)[0]
                if split == "train":
                    if row.get("directory") is None:
                        raise DataError(f"{where}: a train statement needs its 'directory'")
                    folder = root / "images" / "train" / str(row["directory"])
                else:
                    folder = root / split
                source = f"{path.name} line {n} ({identifier})"
                images = tuple(
                    ImageRecord(folder / f"{prefix}-img{i}.png", f"{prefix}-img{i}", source)
                    for i in (0, 1)
                )
                label = _label(row.get("label"), where)
                records.append(NLVR2Record(identifier, row["sentence"], label, images, source))
            except DataError as err:
                skip_or_raise(err, skips)
    return records


# ---- offline: statements about easy-VQA images ------------------------------------------------


def easy_vqa_nlvr2_records(
    split: str = "train", *, per_image: int = 4, seed: int = 0
) -> list[NLVR2Record]:
    """Statements about pairs of easy-VQA images whose colour and shape are known: each image
    is the left image of ``per_image`` statements; the labels alternate true and false; each
    statement's template is drawn at random, then right images (from the others) until the
    template can be made true (or false) of the pair (:func:`vilt.data.easy_vqa.statement`),
    so that every template is as often true as false and its words alone tell nothing.

    Args:
        split: easy-VQA's "train" or "test" images.
        per_image: statements per (left) image.
        seed: the draws' seed (the split's name is mixed in).
    """
    images = full_fact_images(split)
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    records = []
    for n in range(per_image * len(images)):
        left, truth = images[n % len(images)], n % 2 == 0
        template, text = int(rng.integers(STATEMENTS)), None
        while text is None:
            right = images[int(rng.integers(len(images) - 1))]
            if right[0] == left[0]:
                right = images[-1]
            text = statement(template, left[2:], right[2:], truth, rng)
        identifier = f"{split}-{n}-{left[0]}-{right[0]}"
        source = f"easy-VQA {split} statement {n} (images {left[0]}, {right[0]})"
        pair = tuple(ImageRecord(im[1], im[0], source) for im in (left, right))
        records.append(NLVR2Record(identifier, text, truth, pair, source))
    return records


def load_nlvr2(
    source: Any = None,
    *,
    split: str = "train",
    transform: Any = None,
    skip_bad: bool = False,
    cache_images: bool = False,
    max_pixels: int | None = None,
) -> NLVR2Dataset:
    """NLVR2 statements of ``split`` from ``source`` (see the module docstring).

    Args:
        source: None or "easy-vqa" (offline), or the root directory of the NLVR2 release.
        split: train, dev, test1 (easy-VQA: train or test).
        transform: a PIL image -> (3, H, W) tensor (the image processor's preprocess_one).
        skip_bad: skip and count bad statements and images instead of raising.
        cache_images: decode every image once, up front.
        max_pixels: refuse larger images (decompression bombs).
    """
    skips = SkipCounter() if skip_bad else None
    if source is None or (isinstance(source, str) and source.lower() in ("easy-vqa", "easy_vqa")):
        records = easy_vqa_nlvr2_records("test" if split in ("dev", "test1") else split)
    elif Path(source).is_dir():
        records = load_nlvr2_records(source, split, skips=skips)
    else:
        raise DataError(
            f"{source}: not an NLVR2 directory (nlvr2/data/*.json, images/train/, dev/, test1/) "
            "nor easy-vqa"
        )
    return NLVR2Dataset(
        records, transform=transform, skip_bad=skip_bad, skips=skips,
        cache_images=cache_images, max_pixels=max_pixels,
    )  # fmt: skip
