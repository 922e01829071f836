"""Streaming: items from a ``datasets`` IterableDataset (or any iterable of rows) without
loading the source into memory.

Each DataLoader worker reads its own share: a ``datasets`` IterableDataset gives each
worker whole shards (workers beyond its ``n_shards`` stay idle); any other iterable is
read by every worker, each keeping every n-th row. For several processes
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
from .errors import AllReduce, DataError, counts_by_reason, skip_or_raise

__all__ = ["StreamingDataset"]


class StreamingDataset(torch.utils.data.IterableDataset):
    """Rows -> records (``to_record(row, n)``) -> items (``encoder.encode``), lazily.

    ``encoder`` is a map-style vilt dataset built with no records; it holds the image
    transform, the task's targets (labels, answer vocabulary) and the skip counter.

    Args:
        rows: the source rows: a ``datasets.IterableDataset`` or any re-iterable of dicts.
        to_record: ``to_record(row, n)`` turns a row into the encoder's record (``n``
            numbers the rows as read, for error messages); raises DataError for a bad row.
        encoder: the task's map-style dataset; its ``encode(record, n)`` makes each item.
        rank: this process's index among ``world_size`` processes.
        world_size: the number of processes splitting the source (above 1: ``rows`` must be
            a ``datasets.IterableDataset``).

    Raises:
        TypeError: for ``world_size`` above 1 with a source that is not a
            ``datasets.IterableDataset``.
    """

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
        # shared with DataLoader workers: only the first pass counts the rows it skips
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    def __getattr__(self, name: str) -> Any:
        # task attributes (id2label, vocab, skips, ...) come from the encoder
        if name in ("rows", "to_record", "encoder", "_epoch"):
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: the source reshuffles (when it can), and bad rows met after
        epoch 0 are skipped without being counted again.

        Args:
            epoch: the epoch number, from 0.
        """
        self._epoch[0] = epoch
        if hasattr(self.rows, "set_epoch"):
            self.rows.set_epoch(epoch)

    def skip_counts(self, all_reduce: AllReduce | None = None) -> dict[str, int]:
        """Rows skipped by reason, counted on the first pass over the stream (later epochs
        meet the same rows). ``all_reduce``: sums the processes' counts in a distributed run,
        where each process reads its own rows.

        Args:
            all_reduce: ``all_reduce(tensor, "sum")`` over the processes (e.g. accelerate's
                ``reduce``); None counts this process's rows only.
        """
        if self.encoder.skips is None:
            return {}
        totals = self.encoder.skips.as_tensor()
        return counts_by_reason(totals if all_reduce is None else all_reduce(totals, "sum").cpu())

    def _worker_rows(self) -> Iterator[tuple[int, dict]]:
        info = torch.utils.data.get_worker_info()
        if isinstance(self.rows, datasets.IterableDataset) or info is None:
            # a datasets IterableDataset hands each worker its own shards by itself
            return enumerate(self.rows)
        return itertools.islice(enumerate(self.rows), info.id, None, info.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skips = self.encoder.skips
        first_pass = int(self._epoch[0]) == 0
        for n, row in self._worker_rows():
            try:
                yield self.encoder.encode(self.to_record(row, n), n)
            except DataError as err:
                if skips is None or first_pass:
                    skip_or_raise(err, skips)
