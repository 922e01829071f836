"""Image-caption pairs in the Karpathy-split layout: the ``dataset_coco.json`` and
``dataset_flickr30k.json`` files that image-text retrieval results are reported on.

A file is a JSON object ``{"images": [...], "dataset": ...}``; each image has ``filename``,
``split`` ("train", "val", "test", and for COCO "restval"), ``sentences`` (each with its
``raw`` text) and, for COCO, ``filepath`` (its folder, "train2014" or "val2014"). An image
lies at ``image_dir / filepath / filename`` (``image_dir`` defaults to the JSON's folder).
A split name may join several with "+": ViLT trains COCO on "train+restval".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import DataError, SkipCounter, skip_or_raise

__all__ = ["is_karpathy_split", "load_karpathy_records"]


def is_karpathy_split(data: Any) -> bool:
    """Whether a parsed JSON file is in the Karpathy-split layout (images with sentences),
    rather than COCO's own captions layout (images and annotations).

    Args:
        data: the file's parsed JSON.
    """
    return (
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and "annotations" not in data
        and any(isinstance(im, dict) and "sentences" in im for im in data["images"][:10])
    )


def load_karpathy_records(
    path: str | os.PathLike,
    data: dict[str, Any],
    split: str = "train",
    *,
    image_dir: str | os.PathLike | None = None,
    skips: SkipCounter | None = None,
) -> list[Any]:
    """One pair per sentence of each image of ``split`` (``"a+b"``: either split).

    Args:
        path: the JSON file (named in errors; its folder is the default image root).
        data: its parsed content.
        split: the split(s) to read.
        image_dir: where the images (or their ``filepath`` folders) lie.
        skips: count malformed images and sentences here instead of raising.
    """
    from .pairs import PairRecord

    path = Path(path)
    root = Path(image_dir) if image_dir is not None else path.parent
    wanted = {s.strip() for s in split.split("+") if s.strip()}
    found: set[str] = set()
    records = []
    for n, image in enumerate(data["images"]):
        if not (
            isinstance(image, dict)
            and isinstance(image.get("filename"), str)
            and isinstance(image.get("split"), str)
            and isinstance(image.get("sentences"), list)
        ):
            skip_or_raise(
                DataError(f"{path}: images[{n}] needs 'filename', 'split' and a 'sentences' list"),
                skips,
            )
            continue
        found.add(image["split"])
        if image["split"] not in wanted:
            continue
        relative = Path(image.get("filepath") or "") / image["filename"]
        for k, sentence in enumerate(image["sentences"]):
            source = f"{path.name} images[{n}] ({relative}) sentence {k}"
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str):
                skip_or_raise(DataError(f"{source}: no 'raw' text"), skips)
                continue
            records.append(PairRecord(root / relative, str(relative), source, caption=raw))
    if not wanted & found:
        raise DataError(
            f"{path}: no images in split {split!r}; the file's splits are {sorted(found)}"
        )
    return records
