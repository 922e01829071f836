"""Image-text pairs for image-text matching (ITM) and masked language modelling (MLM).

Sources (``load_pairs``):
- ``None`` or "easy-vqa": captions made from easy-VQA's question/answer facts ("a blue
  circle", "the shape is a circle"); train = easy-VQA's train images, test = its held-out
  test images;
- a COCO-captions JSON ({"images": [{"id", "file_name"}], "annotations": [{"image_id",
  "caption"}]}), images under ``image_dir`` (default: the JSON's directory);
- a JSON file in the Karpathy-split layout (``dataset_coco.json``, ``dataset_flickr30k.json``:
  images with ``filename``, ``split`` and ``sentences``; :mod:`vilt.data.karpathy`), the
  images of ``split`` under ``image_dir``;
- Visual Genome's region_descriptions.json, SBU Captions' JSON and Conceptual Captions'
  TSV, with their images downloaded beside them (:mod:`vilt.data.corpora`: an absent or
  unreadable image is a counted skip);
- a mixture file ({"sources": [{"data", "weight", ...}]}): several sources mixed with
  weights (:mod:`vilt.data.mixture`);
- a JSONL file ({"image": path, "caption": text} a line) or a CSV file with image and
  caption columns (also accepted: image_path/file_name/filepath, text); relative paths are
  relative to the file;
- otherwise a ``datasets`` source with an image column and a caption/text column (a list
  of captions makes one pair each; webdataset shards' jpg/txt too), streamed with
  ``streaming=True``.
Items are {"pixel_values", "text", "meta": {"image_id", "index"}}; ITM negatives and MLM
masks are made per batch by :class:`vilt.data.collate.PretrainingCollator`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import datasets

from ..textfiles import TextFileError, read_text
from . import fields
from .base import ImageRecord, RecordDataset
from .corpora import corpus_records, is_conceptual_captions, json_layout
from .easy_vqa import easy_vqa_facts
from .errors import DataError, SkipCounter, read_json, skip_or_raise
from .hub import RowImage, find_column, open_hf, undecoded
from .karpathy import is_karpathy_split, load_karpathy_records
from .streaming import StreamingDataset

__all__ = ["PairRecord", "PairsDataset", "easy_vqa_captions", "load_pairs"]

_IMAGE_KEYS = ("image", "image_path", "file_name", "filepath", "path")
_CAPTION_KEYS = ("caption", "text", "captions", "sentence", "txt")  # txt: webdataset shards


@dataclass
class PairRecord(ImageRecord):
    """An image and one caption of it."""

    caption: str = ""


def check_caption(record: PairRecord) -> None:
    """A caption that is not text, not valid Unicode or empty is an error naming the record
    (:func:`vilt.data.fields.text`)."""
    fields.text(record.caption, "caption", record.source)


class PairsDataset(RecordDataset):
    """Map-style image-caption pairs: {"pixel_values", "text", "meta"} per item.

    Args:
        records: the pairs (a list, or records read lazily).
        **options: transform, skip_bad, skips, cache_images, max_pixels (see
            :class:`~vilt.data.base.RecordDataset`).
    """

    def __init__(self, records: Sequence[PairRecord], **options: Any) -> None:
        self.records = records
        super().__init__(**options)

    def encode(self, record: PairRecord, index: int) -> dict[str, Any]:
        """One pair -> {"pixel_values", "text", "meta": {"image_id", "index"}}.

        Args:
            record: the image and its caption; ``image_key`` becomes ``meta["image_id"]``.
            index: its position, kept in ``meta["index"]`` (it seeds the collator's draws).

        Raises:
            DataError: for a caption that is not text, not valid Unicode or empty, or an
                :class:`~vilt.data.errors.ImageError` for an image that cannot be read.
        """
        check_caption(record)
        return {
            "pixel_values": self.image_tensor(record),
            "text": record.caption,
            "meta": {"image_id": record.image_key, "index": index},
        }


# ---- easy-VQA facts -> captions ----------------------------------------------------------


def easy_vqa_captions(
    color: str | None, shape: str | None, *, no_color: str | None = None,
    no_shape: str | None = None,
) -> list[str]:  # fmt: skip
    """Captions for a shape of ``color`` and ``shape`` (either may be unknown); an image
    with neither known is described by what it lacks."""
    if color and shape:
        return [
            f"a {color} {shape}",
            f"the {shape} is {color}",
            f"there is a {color} {shape} in the image",
            f"the shape is a {shape}",
            f"the color of the shape is {color}",
        ]
    if shape:
        return [f"the shape is a {shape}", f"there is a {shape} in the image", f"a {shape}"]
    if color:
        return [f"a {color} shape", f"the color of the shape is {color}"]
    absent = []
    if no_color:
        absent.append(f"there is no {no_color} shape")
    if no_shape:
        absent.append(f"the image does not contain a {no_shape}")
    return absent


def load_easy_vqa_pairs(split: str = "train") -> list[PairRecord]:
    """Pairs for easy-VQA's train or (held-out) test images, ~5 captions an image."""
    facts, paths = easy_vqa_facts(split)
    records = []
    for image_id in sorted(facts):
        f = facts[image_id]
        captions = easy_vqa_captions(
            f.get("color"), f.get("shape"), no_color=f.get("no color"), no_shape=f.get("no shape")
        )
        for n, caption in enumerate(captions):
            source = f"easy-VQA {split} image {image_id} caption {n}"
            records.append(PairRecord(paths[image_id], image_id, source, caption=caption))
    return records


# ---- files: COCO captions JSON, JSONL, CSV -----------------------------------------------


def load_coco_captions(
    path: str | os.PathLike, *, image_dir: str | os.PathLike | None = None,
    skips: SkipCounter | None = None,
) -> list[PairRecord]:  # fmt: skip
    """COCO-captions JSON: each annotation's caption paired with its image's file."""
    path = Path(path)
    return coco_records(read_json(path), path, image_dir=image_dir, skips=skips)


def coco_records(
    data: Any, path: Path, *, image_dir: str | os.PathLike | None = None,
    skips: SkipCounter | None = None,
) -> list[PairRecord]:  # fmt: skip
    """The pairs of a COCO-captions JSON already parsed from ``path``."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise DataError(f"{path}: expected a JSON object with 'images' and 'annotations' lists")
    root = Path(image_dir) if image_dir is not None else path.parent
    files: dict[Any, Path | DataError] = {}
    seen = fields.IdRegistry("image id")
    for n, image in enumerate(data["images"]):
        where = f"{path.name} images[{n}]"
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{path}: images[{n}] needs 'id' and 'file_name'")
        image_id = fields.identifier(image["id"], "id", where)
        try:
            seen.add(image_id, where)
            files[image_id] = root / fields.text(image["file_name"], "file_name", where)
        except DataError as err:
            files[image_id] = err  # a repeated id names two files: neither is used
    records = []
    for n, ann in enumerate(data["annotations"]):
        source = f"{path.name} annotations[{n}]"
        try:
            if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
                raise DataError(f"{path}: annotations[{n}] needs 'image_id' and 'caption'")
            image_id = fields.identifier(ann["image_id"], "image_id", source)
            if image_id not in files:
                raise DataError(
                    f"{source}: image id {image_id} is not among the file's images",
                    reason="unknown_image_id",
                )
            if isinstance(files[image_id], DataError):
                raise files[image_id]
            caption = fields.text(ann["caption"], "caption", f"{source} (image {image_id})")
        except DataError as err:
            skip_or_raise(err, skips)
            continue
        records.append(
            PairRecord(files[image_id], image_id, f"{source} (image {image_id})", caption=caption)
        )
    return records


def _pick(row: dict, keys: Sequence[str], what: str, where: str) -> Any:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return row[k]
    raise DataError(f"{where}: no {what} (expected one of {list(keys)})")


def _text_of(path: Path) -> str:
    """A pair file's text (UTF-8, a byte-order mark allowed), or a DataError naming the
    line and column where it is not UTF-8."""
    try:
        return read_text(path)
    except TextFileError as err:
        raise DataError(str(err)) from None


def _rows_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    for n, line in enumerate(io.StringIO(_text_of(path)), 1):  # lines end at \n only
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: malformed JSON at line {n} column {err.colno}: {err.msg}"
            ) from None
    return rows


def _rows_csv(path: Path) -> list[tuple[int, Any]]:
    with io.StringIO(_text_of(path), newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        if not reader.fieldnames:
            raise DataError(f"{path}: no header row (expected image and caption columns)")
        return list(enumerate(reader, 2))  # line 1 is the header


def load_pair_file(
    path: str | os.PathLike, *, skips: SkipCounter | None = None
) -> list[PairRecord]:
    """Pairs from a JSONL, CSV or TSV file of (image path, caption) rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    records = []
    for n, row in _rows_jsonl(path) if jsonl else _rows_csv(path):
        where = f"{path}: line {n}"
        try:
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected an object with image and caption")
            image = Path(fields.text(_pick(row, _IMAGE_KEYS, "image path", where), "image", where))
            caption = fields.text(_pick(row, _CAPTION_KEYS, "caption", where), "caption", where)
        except DataError as err:
            skip_or_raise(err, skips)
            continue
        image = image if image.is_absolute() else path.parent / image
        records.append(PairRecord(image, str(image), f"{path.name} line {n}", caption=caption))
    return records


# ---- datasets ----------------------------------------------------------------------------


def _captions_of(value: Any, where: str) -> list[str]:
    """A row's captions: a string, a list of them, or a dict with "raw", "caption" or
    "text"; each must be text (:func:`vilt.data.fields.text`)."""
    if isinstance(value, dict):  # e.g. {"raw": "...", ...} or datasets' dict of lists
        return _captions_of(value.get("raw", value.get("caption", value.get("text"))), where)
    if isinstance(value, list | tuple):
        return [c for v in value for c in _captions_of(v, where)]
    return [fields.text(value, "caption", where)]


def _stream_record(
    row: dict, i: int, *, image_col: str, caption_col: str, iid_col: str | None, name: str
) -> PairRecord:
    """A streamed row's first caption with its image (a partial of it is picklable)."""
    where = f"row {i} of {name}"
    captions = _captions_of(row[caption_col], where)
    key = fields.identifier(row[iid_col], "image_id", where) if iid_col else i
    return PairRecord(row[image_col], key, where, caption=captions[0] if captions else "")


def load_pairs(
    source: Any = None,
    *,
    split: str = "train",
    transform: Any = None,
    image_dir: str | os.PathLike | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    streaming: bool = False,
    skip_bad: bool = False,
    cache_images: bool = False,
    max_pixels: int | None = None,
    **load_kwargs: Any,
) -> PairsDataset | StreamingDataset:
    """Image-caption pairs of ``split`` from ``source`` (see the module docstring).

    Args:
        source: None or "easy-vqa", a COCO-captions, Karpathy-split, corpus or mixture JSON
            file, a Conceptual Captions TSV, a JSONL/CSV/TSV pair file, or a ``datasets``
            source (hub name, directory, Dataset / DatasetDict).
        split: the split to read (easy-VQA, Karpathy-split files, ``datasets`` sources and a
            mixture's default; the other files hold one split).
        transform: RGB PIL image -> (3, H, W) tensor (e.g. the image processor's
            ``preprocess_one``); None: items hold the uint8 image.
        image_dir: where a COCO, Karpathy-split or corpus file's images are (default: the
            file's directory).
        image_column: a ``datasets`` source's image column (default: the first ``Image``
            feature, else image/image_path/file_name/filepath/path).
        caption_column: its caption column (default: caption/text/captions/sentence/txt).
        streaming: read a ``datasets`` source as a stream (its rows' first captions only).
        skip_bad: skip and count bad records and images instead of raising (web and region
            corpora always skip absent images).
        cache_images: decode and transform each distinct image once, up front (map-style).
        max_pixels: refuse images larger than this many pixels (default: PIL's limit).
        **load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``cache_dir``).

    Returns:
        A :class:`PairsDataset`, a :class:`~vilt.data.streaming.StreamingDataset` when
        streaming, or a mixed data set (:mod:`vilt.data.mixture`) for a mixture file.

    Raises:
        DataError: for a file that cannot be read or parsed, a missing split or column, or
            (without ``skip_bad``) a bad record.
    """
    skips = SkipCounter() if skip_bad else None
    options = {
        "transform": transform,
        "skip_bad": skip_bad,
        "skips": skips,
        "max_pixels": max_pixels,
    }
    suffix = Path(source).suffix.lower() if isinstance(source, str | os.PathLike) else ""
    if source is None or (isinstance(source, str) and source.lower() in ("easy-vqa", "easy_vqa")):
        records: Any = load_easy_vqa_pairs(split)
    elif suffix == ".json" and Path(source).is_file():
        data = read_json(source)
        layout = "karpathy" if is_karpathy_split(data) else json_layout(data)
        if layout == "mixture":
            from .mixture import load_pair_mixture, read_mixture_file

            return load_pair_mixture(
                read_mixture_file(source), split=split, transform=transform,
                cache_images=cache_images, max_pixels=max_pixels, skip_bad=skip_bad,
            )  # fmt: skip
        if layout == "karpathy":
            records = load_karpathy_records(source, data, split, image_dir=image_dir, skips=skips)
        elif layout == "coco":
            records = coco_records(data, Path(source), image_dir=image_dir, skips=skips)
        else:  # web and region corpora: an image that is absent is a counted skip
            options["skips"] = skips = skips or SkipCounter()
            records = corpus_records(layout, data, Path(source), image_dir=image_dir, skips=skips)
    elif suffix == ".tsv" and is_conceptual_captions(source):
        options["skips"] = skips = skips or SkipCounter()
        records = corpus_records("conceptual-captions", None, Path(source), image_dir=image_dir,
                                 skips=skips)  # fmt: skip
    elif suffix in (".jsonl", ".ndjson", ".csv", ".tsv"):
        records = load_pair_file(source, skips=skips)
    else:
        data, name = open_hf(source, split=split, streaming=streaming, **load_kwargs)
        features = data.features
        image_col = find_column(
            features,
            kind=datasets.Image,
            given=image_column,
            names=_IMAGE_KEYS,
            what="image",
            source=name,
        )
        caption_col = find_column(
            features,
            kind=None,
            given=caption_column,
            names=_CAPTION_KEYS,
            what="caption",
            source=name,
        )
        iid_col = "image_id" if "image_id" in (features or {}) else None

        if isinstance(data, datasets.IterableDataset):
            to_record = partial(
                _stream_record, image_col=image_col, caption_col=caption_col, iid_col=iid_col,
                name=name,
            )  # fmt: skip
            encoder = PairsDataset([], **options)
            return StreamingDataset(
                undecoded(data, image_col), to_record=to_record, encoder=encoder
            )
        images = undecoded(data.select_columns([image_col]), image_col)
        text = data.select_columns([c for c in (caption_col, iid_col) if c]).to_list()
        records = []
        for i, row in enumerate(text):
            try:
                where = f"row {i} of {name}"
                key = fields.identifier(row[iid_col], "image_id", where) if iid_col else i
                captions = _captions_of(row[caption_col], where)
            except DataError as err:
                skip_or_raise(err, skips)
                continue
            for n, caption in enumerate(captions or [""]):
                records.append(
                    PairRecord(
                        RowImage(images, i), key, f"row {i} of {name} caption {n}", caption=caption
                    )
                )
    return PairsDataset(records, cache_images=cache_images, **options)
