"""The pretraining corpora of the ViLT paper in their published layouts, read from local
files: Visual Genome's region descriptions, SBU Captions and Conceptual Captions (COCO
captions are read by :func:`vilt.data.pairs.load_coco_captions`).

SBU and Conceptual Captions publish image URLs with captions; vilt never downloads, it reads
the images from a directory beside the file (``image_dir``, default: the file's own), as a
downloader such as img2dataset leaves them. An image that is absent (a dead URL, a partial
download) is a counted skip (reason ``missing_image``), as is one that cannot be decoded:
web corpora always hold some.

Layouts:
- Visual Genome: ``region_descriptions.json`` (``[{"id": image id, "regions": [{"image_id",
  "phrase", ...}]}]``); each region's phrase is a caption of the whole image, as ViLT trains
  on it. Each image's file: the ``url`` of ``image_data.json`` beside it (its last folder and
  name: ``VG_100K_2/1.jpg``); without that file, ``VG_100K/{id}.jpg`` or
  ``VG_100K_2/{id}.jpg`` under ``image_dir``.
- SBU Captions: the JSON ``{"image_urls": [...], "captions": [...]}``.
- Conceptual Captions: the TSV, ``caption<TAB>url`` a line, no header.
Row ``n`` of SBU or Conceptual Captions finds its image at ``{n // 10000:05d}/{n:09d}.jpg``
(img2dataset's layout), ``{n:09d}.jpg`` or the URL's file name, under ``image_dir``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import DataError, SkipCounter, read_json

__all__ = ["CaptionRecords", "corpus_records", "is_conceptual_captions", "json_layout"]

LAYOUTS = ("coco", "visual-genome", "sbu", "conceptual-captions", "mixture")
_SHARD = 10_000  # img2dataset's default number of samples per shard folder


def json_layout(data: Any) -> str | None:
    """Which layout a parsed JSON file has: "coco", "visual-genome", "sbu", "mixture", or
    None (none of them)."""
    if isinstance(data, dict):
        if isinstance(data.get("sources"), list):
            return "mixture"
        if isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list):
            return "coco"
        if isinstance(data.get("image_urls"), list) and isinstance(data.get("captions"), list):
            return "sbu"
    if isinstance(data, list) and data and isinstance(data[0], dict) and "regions" in data[0]:
        return "visual-genome"
    return None


def is_conceptual_captions(path: str | os.PathLike) -> bool:
    """Whether a TSV file is Conceptual Captions' (``caption<TAB>url``, no header)."""
    with open(path, encoding="utf-8", newline="") as handle:
        for line in handle:
            if line.strip():
                fields = line.rstrip("\r\n").split("\t")
                return len(fields) == 2 and fields[1].startswith(("http://", "https://"))
    return False


class CaptionRecords(Sequence):
    """Pair records made on demand from compact lists (millions of captions stay a few
    lists of strings, not millions of objects): caption ``i`` belongs to image
    ``owner[i]``.

    Args:
        name: the corpus file's name, for the records' ``source``.
        images: each image's (path, key).
        captions: every caption.
        owner: for each caption, its image's position in ``images``.
    """

    def __init__(
        self, name: str, images: list[tuple[Path, Any]], captions: list[str], owner: list[int]
    ) -> None:
        self.name, self.images, self.captions, self.owner = name, images, captions, owner

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> Any:  # a PairRecord
        from .pairs import PairRecord

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        path, key = self.images[self.owner[i]]
        source = f"{self.name} image {key} caption {i}"
        return PairRecord(path, key, source, caption=self.captions[i])


def corpus_records(
    layout: str | None,
    data: Any,
    path: Path,
    *,
    image_dir: str | os.PathLike | None,
    skips: SkipCounter,
) -> CaptionRecords:
    """The pairs of a corpus file in ``layout`` (``data``: the file already parsed, for the
    JSON layouts). Rows whose image file is absent are counted in ``skips``."""
    root = Path(image_dir) if image_dir is not None else path.parent
    if layout == "visual-genome":
        return _visual_genome(data, path, root, skips)
    if layout == "sbu":
        urls, captions = data["image_urls"], data["captions"]
        if len(urls) != len(captions):
            raise DataError(
                f"{path}: {len(urls)} image_urls but {len(captions)} captions; SBU's lists "
                "pair up by position"
            )
        return _web_rows(zip(captions, urls, strict=True), path, root, skips)
    if layout == "conceptual-captions":
        return _web_rows(_tsv_rows(path), path, root, skips)
    raise DataError(
        f"{path}: not a layout vilt reads: COCO captions ({{'images', 'annotations'}}), "
        "Visual Genome region descriptions ([{'id', 'regions'}]), SBU ({'image_urls', "
        "'captions'}) or a mixture file ({'sources': [...]})"
    )


def _tsv_rows(path: Path) -> list[tuple[str, str]]:
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for n, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not fields:
                continue
            if len(fields) != 2:
                raise DataError(f"{path}: line {n}: expected caption<TAB>url, got {len(fields)} "
                                "fields")  # fmt: skip
            rows.append((fields[0], fields[1]))
    return rows


def _web_rows(rows: Any, path: Path, root: Path, skips: SkipCounter) -> CaptionRecords:
    """SBU / Conceptual Captions rows (caption, url) whose image is found under ``root``."""
    images: list[tuple[Path, Any]] = []
    captions: list[str] = []
    for n, (caption, url) in enumerate(rows):
        name = Path(urlparse(str(url)).path).name
        candidates = [root / f"{n // _SHARD:05d}" / f"{n:09d}.jpg", root / f"{n:09d}.jpg"]
        if name:
            candidates.append(root / name)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            skips.add("missing_image", f"{path.name} row {n}: no image file for {url}")
            continue
        images.append((found, n))
        captions.append(str(caption))
    return CaptionRecords(path.name, images, captions, list(range(len(images))))


def _vg_files(path: Path, root: Path) -> dict[Any, Path] | None:
    """image id -> file from image_data.json beside the region descriptions, if there."""
    listing = path.parent / "image_data.json"
    if not listing.is_file():
        return None
    data = read_json(listing)
    if not isinstance(data, list):
        raise DataError(f"{listing}: expected a list of {{'image_id', 'url'}} objects")
    files = {}
    for n, entry in enumerate(data):
        key = entry.get("image_id", entry.get("id")) if isinstance(entry, dict) else None
        url = entry.get("url") if isinstance(entry, dict) else None
        if key is None or not url:
            raise DataError(f"{listing}: entry {n} needs 'image_id' and 'url'")
        parts = Path(urlparse(str(url)).path).parts
        files[key] = root.joinpath(*parts[-2:])
    return files


def _visual_genome(data: Any, path: Path, root: Path, skips: SkipCounter) -> CaptionRecords:
    files = _vg_files(path, root)
    images: list[tuple[Path, Any]] = []
    captions: list[str] = []
    owner: list[int] = []
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("regions"), list):
            raise DataError(f"{path}: entry {n} needs a 'regions' list")
        regions = entry["regions"]
        key = entry.get("id", entry.get("image_id"))
        if key is None and regions:
            key = regions[0].get("image_id")
        if key is None:
            raise DataError(f"{path}: entry {n} has no image id ('id')")
        phrases = [r.get("phrase") for r in regions if isinstance(r, dict)]
        phrases = [p for p in phrases if isinstance(p, str) and p.strip()]
        if not phrases:
            continue
        if files is not None:
            candidates = [files[key]] if key in files else []
        else:
            candidates = [root / "VG_100K" / f"{key}.jpg", root / "VG_100K_2" / f"{key}.jpg"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            where = candidates[0] if candidates else "image_data.json"
            skips.add(
                "missing_image", f"{path.name} image {key}: no file ({where})", count=len(phrases)
            )
            continue
        images.append((found, key))
        owner.extend([len(images) - 1] * len(phrases))
        captions.extend(phrases)
    return CaptionRecords(path.name, images, captions, owner)
