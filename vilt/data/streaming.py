"""Streaming: items from a ``datasets`` IterableDataset (or any iterable of rows) without
loading the source into memory.

Each DataLoader worker reads its own share: whole shards when the source has at least as
many shards as there are workers, otherwise every n-th row. For several processes
(DDP), pass ``rank`` and ``world_size`` (``datasets.distributed.split_dataset_by_node``).
``set_epoch`` reshuffles sources that shuffle (``IterableDataset.shuffle``) differently
each epoch. Bad rows raise or, with the encoder's ``skip_bad``, are skipped and counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import datasets
import torch

from .base import RecordDataset
from .errors import DataError, skip_or_raise

__all__ = ["StreamingDataset"]


class StreamingDataset(torch.utils.data.IterableDataset):
    """Rows -> records (``to_record(row, n)``) -> items (``encoder.encode``), lazily.

    ``encoder`` is a map-style vilt dataset built with no records; it holds the image
    transform, the task's targets (labels, answer vocabulary) and the skip counter."""

    def __init__(
        self,
        rows: Iterable[dict],
        *,
        to_record: Callable[[dict, int], Any],
        encoder: RecordDataset,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size > 1:
            if not isinstance(rows, datasets.IterableDataset):
                raise TypeError("rank/world_size need a datasets.IterableDataset source")
            from datasets.distributed import split_dataset_by_node

            rows = split_dataset_by_node(rows, rank=rank, world_size=world_size)
        self.rows = rows
        self.to_record = to_record
        self.encoder = encoder

    def __getattr__(self, name: str) -> Any:
        # task attributes (id2label, vocab, skips, ...) come from the encoder
        if name in ("rows", "to_record", "encoder"):
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.rows, "set_epoch"):
            self.rows.set_epoch(epoch)

    def _worker_rows(self) -> Iterator[tuple[int, dict]]:
        info = torch.utils.data.get_worker_info()
        rows: Iterable[dict] = self.rows
        if info is None or info.num_workers == 1:
            return enumerate(rows)
        n_shards = getattr(rows, "n_shards", 0)
        if isinstance(rows, datasets.IterableDataset) and n_shards >= info.num_workers:
            shard = rows.shard(num_shards=info.num_workers, index=info.id)
            return enumerate(shard)  # row numbers count within the worker's shards
        numbered = enumerate(rows)
        return itertools.islice(numbered, info.id, None, info.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skips = self.encoder.skips
        for n, row in self._worker_rows():
            try:
                yield self.encoder.encode(self.to_record(row, n), n)
            except DataError as err:
                skip_or_raise(err, skips)
