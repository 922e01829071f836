"""Several image-caption sources in one training run, mixed with weights.

A source is a ``--data`` of the pretraining job (:func:`vilt.data.load_pairs`: COCO captions,
Visual Genome, SBU, Conceptual Captions, JSONL/CSV, a ``datasets`` source) with a weight:
its share of the pairs drawn. On the command line ``SOURCE[:WEIGHT]``
(:func:`parse_source`); in a mixture file, with each source's own options::

    {"sources": [
      {"data": "coco/captions_train2017.json", "image_dir": "coco/train2017", "weight": 1},
      {"data": "vg/region_descriptions.json", "weight": 0.5},
      {"data": "laion-shards/", "streaming": true, "weight": 0.3}
    ]}

When every source is map-style, :class:`MixedDataset` is map-style: an epoch holds as many
pairs as the sources together, each source's share in proportion to its weight, drawn
without repetition while a source has pairs left (a small source with a large weight repeats,
in a new order each time), by a table that depends only on (seed, epoch): a resumed run
sees the epoch it would have. When a source is streamed, :class:`MixedStream` interleaves:
each pair comes from a source drawn by weight, and the epoch ends when one source runs out
(set ``max_steps``). Items keep their source's fields; ``meta["image_id"]`` becomes
(source, image id), so that images of two sources never count as the same for ITM.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from .errors import AllReduce, DataError, read_json

__all__ = [
    "MixedDataset",
    "MixedStream",
    "PairSource",
    "expand_sources",
    "load_pair_mixture",
    "parse_source",
    "read_mixture_file",
]


@dataclass(frozen=True)
class PairSource:
    """One source of a mixture.

    Args:
        data: what ``load_pairs`` reads (a file, directory or hub name).
        weight: its share of the pairs, relative to the other sources' weights.
        image_dir: where its images are (COCO captions and the web corpora; default: beside
            the file).
        split: its split (default: the run's, e.g. ``train``).
        streaming: read it as a stream (``datasets`` sources: hub names, parquet or
            webdataset directories), for a source too large to index.
    """

    data: str
    weight: float = 1.0
    image_dir: str | None = None
    split: str | None = None
    streaming: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.weight, int | float) and self.weight > 0):
            raise DataError(f"{self.data}: a source's weight must be > 0, got {self.weight!r}")


def parse_source(text: str) -> PairSource:
    """``SOURCE[:WEIGHT]`` -> a PairSource (a tail after the last ':' that is not a number is
    part of the source)."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return PairSource(text)
        return PairSource(head, weight=weight)
    return PairSource(text)


def expand_sources(specs: Sequence[str], *, streaming: bool = False) -> list[PairSource]:
    """``--data`` values (``SOURCE[:WEIGHT]``; a mixture file stands for its sources) as
    sources; ``streaming`` streams each source that ``datasets`` reads (not local files)."""
    out: list[PairSource] = []
    for spec in specs:
        source = parse_source(spec)
        path = Path(source.data)
        if path.suffix.lower() == ".json" and path.is_file() and _is_mixture(path):
            out += read_mixture_file(path)
            continue
        if streaming and not _local_layout(source.data):
            source = PairSource(source.data, weight=source.weight, streaming=True)
        out.append(source)
    return out


def _is_mixture(path: Path) -> bool:
    """A mixture file is small; a corpus file is not parsed twice to find out."""
    from .corpora import json_layout

    return path.stat().st_size < 1_000_000 and json_layout(read_json(path)) == "mixture"


def _local_layout(data: str) -> bool:
    """Whether ``load_pairs`` reads ``data`` itself (easy-VQA, a local file), not through
    ``datasets``."""
    suffix = Path(data).suffix.lower()
    return data.lower() in ("easy-vqa", "easy_vqa") or suffix in (
        ".json", ".jsonl", ".ndjson", ".csv", ".tsv"
    )  # fmt: skip


def read_mixture_file(path: str | os.PathLike) -> list[PairSource]:
    """The sources of a mixture file; relative paths are relative to the file."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        raise DataError(
            f'{path}: a mixture file is {{"sources": [{{"data": ..., "weight": ...}}]}}'
        )
    known = {"data", "weight", "image_dir", "split", "streaming"}
    sources = []
    for n, entry in enumerate(data["sources"]):
        where = f"{path}: sources[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("data"), str):
            raise DataError(f"{where} needs a 'data' string")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise DataError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        fields = dict(entry)
        for key in ("data", "image_dir"):
            value = fields.get(key)
            if isinstance(value, str) and (path.parent / value).exists():
                fields[key] = str(path.parent / value)
        try:
            sources.append(PairSource(**fields))
        except (DataError, TypeError) as err:
            raise DataError(f"{where}: {err}") from None
    if not sources:
        raise DataError(f"{path}: the mixture has no sources")
    return sources


def _shares(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders; each at least 1)."""
    raw = np.asarray(weights, dtype=float) / float(sum(weights)) * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: total - int(counts.sum())]:
        counts[i] += 1
    return [max(int(c), 1) for c in counts]


def _tagged(item: dict[str, Any] | None, source: int, index: int) -> dict[str, Any] | None:
    if item is None:
        return None
    meta = dict(item.get("meta") or {})
    meta["image_id"] = (source, meta.get("image_id"))
    meta["source"] = source
    meta["index"] = index
    return {**item, "meta": meta}


class MixedDataset(Dataset):
    """Map-style sources mixed by weight, epoch by epoch (see the module docstring).

    Args:
        sources: the map-style data sets.
        weights: each one's share of an epoch's pairs.
        names: each one's name (for reports).
        seed: seeds each epoch's draws, with the epoch.
        epoch_size: pairs per epoch (default: the sources' pairs together).
    """

    def __init__(
        self,
        sources: Sequence[Dataset],
        weights: Sequence[float],
        *,
        names: Sequence[str],
        seed: int = 0,
        epoch_size: int | None = None,
    ) -> None:
        if not sources or len(sources) != len(weights) or len(names) != len(sources):
            raise ValueError("one weight and one name per source")
        if any(len(s) == 0 for s in sources):
            empty = [n for n, s in zip(names, sources, strict=True) if len(s) == 0]
            raise DataError(f"mixture sources with no pairs: {empty}")
        self.sources, self.weights, self.names = list(sources), list(weights), list(names)
        self.seed = seed
        self.epoch_size = epoch_size or sum(len(s) for s in sources)
        self.counts = _shares(self.epoch_size, self.weights)
        self.epoch_size = sum(self.counts)
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self._table: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.epoch_size

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch
        for source in self.sources:
            if hasattr(source, "set_epoch"):
                source.set_epoch(epoch)

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(source, index in source) of each position of this epoch."""
        epoch = int(self._epoch[0])
        if self._table is None or self._table[0] != epoch:
            which, where = [], []
            for i, (source, count) in enumerate(zip(self.sources, self.counts, strict=True)):
                rng = np.random.default_rng([self.seed, epoch, i])
                rounds = -(-count // len(source))
                order = np.concatenate([rng.permutation(len(source)) for _ in range(rounds)])
                which.append(np.full(count, i, dtype=np.int32))
                where.append(order[:count])
            self._table = (epoch, np.concatenate(which), np.concatenate(where))
        return self._table[1], self._table[2]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        which, where = self.table()
        source = int(which[index])
        return _tagged(self.sources[source][int(where[index])], source, index)

    @property
    def records(self) -> list[Any]:
        """Every source's records (e.g. the captions to train a vocabulary on)."""
        return [r for s in self.sources for r in getattr(s, "records", [])]

    def describe(self) -> str:
        """One line: each source's pairs, weight and share of an epoch."""
        parts = [
            f"{name} ({len(s):,} pairs, weight {w:g}: {c:,} an epoch)"
            for name, s, w, c in zip(
                self.names, self.sources, self.weights, self.counts, strict=True
            )
        ]
        return (
            f"a mixture of {len(parts)} sources, {self.epoch_size:,} pairs an epoch: "
            + ", ".join(parts)
        )

    def skip_counts(self, all_reduce: AllReduce | None = None) -> dict[str, int]:
        """Records skipped by reason, over every source (see ``RecordDataset.skip_counts``)."""
        return _sum_skips(self.sources, all_reduce)


class MixedStream(IterableDataset):
    """Sources of which one or more stream, interleaved by weight (see the module docstring).

    Args:
        sources: the data sets, map-style or iterable.
        weights: each one's share of the pairs.
        names: each one's name (for reports).
        seed: seeds the draws, with the epoch and the DataLoader worker.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        weights: Sequence[float],
        *,
        names: Sequence[str],
        seed: int = 0,
    ) -> None:
        if not sources or len(sources) != len(weights) or len(names) != len(sources):
            raise ValueError("one weight and one name per source")
        self.sources, self.weights, self.names = list(sources), list(weights), list(names)
        self.seed = seed
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch
        for source in self.sources:
            if hasattr(source, "set_epoch"):
                source.set_epoch(epoch)

    def _items(self, i: int, worker: int, workers: int) -> Iterator[Any]:
        source = self.sources[i]
        if isinstance(source, IterableDataset):
            return iter(source)  # a stream hands each worker its own share itself
        rng = np.random.default_rng([self.seed, int(self._epoch[0]), i])
        order = rng.permutation(len(source))[worker::workers]
        return (source[int(j)] for j in order)

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch = int(self._epoch[0])
        rng = np.random.default_rng([self.seed, epoch, 1_000 + worker])
        p = np.asarray(self.weights, dtype=float) / float(sum(self.weights))
        streams = [self._items(i, worker, workers) for i in range(len(self.sources))]
        n = 0
        while True:
            i = int(rng.choice(len(streams), p=p))
            try:
                item = next(streams[i])
            except StopIteration:
                return  # the first source to run out ends the epoch: the weights hold
            yield _tagged(item, i, n * workers + worker)
            n += 1

    @property
    def records(self) -> list[Any]:
        """The map-style sources' records (a stream's are not known up front)."""
        return [r for s in self.sources for r in getattr(s, "records", [])]

    def describe(self) -> str:
        parts = [f"{name} (weight {w:g})" for name, w in zip(self.names, self.weights, strict=True)]
        return f"a streamed mixture of {len(parts)} sources: " + ", ".join(parts)

    def skip_counts(self, all_reduce: AllReduce | None = None) -> dict[str, int]:
        return _sum_skips(self.sources, all_reduce)


def _sum_skips(sources: Sequence[Any], all_reduce: AllReduce | None) -> dict[str, int]:
    total: dict[str, int] = {}
    for source in sources:
        if hasattr(source, "skip_counts"):
            for reason, n in source.skip_counts(all_reduce).items():
                total[reason] = total.get(reason, 0) + n
    return total


def load_pair_mixture(
    sources: Sequence[PairSource],
    *,
    split: str = "train",
    transform: Any = None,
    seed: int = 0,
    cache_images: bool = False,
    max_pixels: int | None = None,
    skip_bad: bool = False,
) -> MixedDataset | MixedStream:
    """Each source read with :func:`vilt.data.load_pairs` and mixed by weight: map-style
    when none streams, else interleaved as a stream."""
    from .pairs import load_pairs

    loaded = [
        load_pairs(
            s.data,
            split=s.split or split,
            transform=transform,
            image_dir=s.image_dir,
            streaming=s.streaming,
            cache_images=cache_images and not s.streaming,
            max_pixels=max_pixels,
            skip_bad=skip_bad,
        )
        for s in sources
    ]
    for source, data in zip(sources, loaded, strict=True):
        if source.streaming and not isinstance(data, IterableDataset):
            raise DataError(
                f"{source.data}: streaming applies to datasets sources (hub names, parquet or "
                "webdataset directories); this one is read into memory: drop 'streaming'"
            )
    weights = [s.weight for s in sources]
    names = [s.data for s in sources]
    if any(isinstance(d, IterableDataset) for d in loaded):
        return MixedStream(loaded, weights, names=names, seed=seed)
    return MixedDataset(loaded, weights, names=names, seed=seed)
