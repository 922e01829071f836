"""Errors that name the file and record at fault, a counter of skipped records, and a JSON
reader whose syntax errors say where they are.

Every data loader in vilt either raises one of these errors or, where the user passed
``skip_bad=True``, counts the record in a :class:`SkipCounter` and goes on. The counter lives
in shared memory so that skips counted inside DataLoader worker processes reach the main
process, where ``summary()`` reports them at the end of a run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..processing.images import ImageInputError
from ..textfiles import TextFileError, read_text

logger = logging.getLogger("vilt.data")

# Why a record was skipped. A fixed list so the counts fit one shared-memory tensor.
SKIP_REASONS: tuple[str, ...] = (
    "missing_image",
    "empty_image",
    "truncated_image",
    "corrupt_image",
    "too_large_image",
    "unknown_image_id",
    "empty_text",
    "invalid_text",
    "duplicate_id",
    "answer_not_in_vocab",
    "bad_record",
)
_REASON_TEXT = {
    "missing_image": "missing image file",
    "empty_image": "empty image",
    "truncated_image": "truncated image",
    "corrupt_image": "corrupt image",
    "too_large_image": "image too large",
    "unknown_image_id": "unknown image id",
    "empty_text": "empty question or caption",
    "invalid_text": "text that is not valid Unicode",
    "duplicate_id": "repeated id",
    "answer_not_in_vocab": "no answer in the vocabulary",
    "bad_record": "malformed record",
}
# all_reduce(tensor, op) over the processes of a distributed run, op "sum" or "max"
AllReduce = Callable[[torch.Tensor, str], torch.Tensor]
_MAX_WORKERS = 64  # one row of counts per DataLoader worker (row 0: the main process)
_LOGGED_PER_REASON = 5


class DataError(ValueError):
    """A data file or record that cannot be used; the message names the file and record.

    Args:
        message: what is wrong, naming the file and record (see :func:`describe`).
        reason: why, one of :data:`SKIP_REASONS` (the key a :class:`SkipCounter` counts it
            under when the record is skipped); default "bad_record".
    """

    def __init__(self, message: str, *, reason: str = "bad_record") -> None:
        super().__init__(message)
        self.reason = reason


class ImageError(DataError, ImageInputError):
    """An image that cannot be decoded: missing, empty, truncated, corrupt or too large, or
    whose values the image policy refuses. Also an ``ImageInputError``: one error family for
    images, whichever path reads them.

    Args:
        message: what is wrong, naming the file and record.
        reason: one of the ``*_image`` names in :data:`SKIP_REASONS` (e.g.
            "missing_image", "corrupt_image", "too_large_image").
    """


def describe(path: Any = None, source: str | None = None) -> str:
    """'file X (record Y)' for error messages; either part may be missing."""
    parts = []
    if path is not None:
        parts.append(f"{os.fspath(path)!s}" if isinstance(path, str | os.PathLike) else str(path))
    if source:
        parts.append(f"({source})" if parts else source)
    return " ".join(parts) or "<in-memory image>"


class SkipCounter:
    """Counts records skipped as bad, by reason; works across DataLoader worker processes.

    The counts live in a small shared-memory tensor with one row per worker, so each process
    writes only its own row (no lock needed) and the main process sums them. Create it before
    the DataLoader starts its workers (datasets do so when built with ``skip_bad=True``).
    """

    def __init__(self) -> None:
        self._counts = torch.zeros(_MAX_WORKERS + 1, len(SKIP_REASONS), dtype=torch.int64)
        self._counts.share_memory_()
        self._logged: dict[str, int] = {}

    def add(self, reason: str, message: str = "", count: int = 1) -> None:
        """Count ``count`` skipped records (e.g. every caption of a missing image); the first
        few of each reason are logged with ``message``.

        Args:
            reason: one of :data:`SKIP_REASONS`; any other is counted as "bad_record".
            message: the error text, logged for the first 5 skips of each reason.
            count: how many records this one skip stands for.
        """
        if reason not in SKIP_REASONS:
            reason = "bad_record"
        info = torch.utils.data.get_worker_info()
        row = 0 if info is None else 1 + info.id % _MAX_WORKERS
        self._counts[row, SKIP_REASONS.index(reason)] += count
        seen = self._logged.get(reason, 0)
        if seen < _LOGGED_PER_REASON:
            self._logged[reason] = seen + 1
            logger.warning("skipped (%s): %s", _REASON_TEXT[reason], message)

    def counts(self) -> dict[str, int]:
        """Skips so far by reason, summed over all processes; reasons with none are left out."""
        return counts_by_reason(self.as_tensor())

    def as_tensor(self) -> torch.Tensor:
        """(len(SKIP_REASONS),) counts, e.g. to sum over ranks with ``all_reduce``."""
        return self._counts.sum(dim=0)

    @property
    def total(self) -> int:
        return int(self._counts.sum())

    def summary(self) -> str:
        """One line for the end of a run, e.g. 'skipped 3 records: 2 missing image file, ...'."""
        return describe_skips(self.counts())

    def __repr__(self) -> str:
        return f"SkipCounter({self.counts()})"


def counts_by_reason(totals: torch.Tensor) -> dict[str, int]:
    """(len(SKIP_REASONS),) counts -> {reason: count}, reasons with none left out."""
    return {r: int(n) for r, n in zip(SKIP_REASONS, totals.tolist(), strict=True) if n}


def describe_skips(counts: dict[str, int]) -> str:
    """'skipped 3 records: 2 missing image file, 1 corrupt image' for ``counts`` by reason."""
    if not counts:
        return "skipped 0 records"
    parts = ", ".join(f"{n} {_REASON_TEXT[r]}" for r, n in counts.items())
    n = sum(counts.values())
    return f"skipped {n} record{'s' if n != 1 else ''}: {parts}"


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (UTF-8, a byte-order mark allowed); a syntax error names the file,
    line, column and character offset, and a file in another encoding the first bad byte."""
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except TextFileError as err:
        raise DataError(str(err)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno} "
            f"(character {err.pos}): {err.msg}"
        ) from None


def skip_or_raise(err: DataError, skips: SkipCounter | None) -> None:
    """Raise ``err``, or count it when the caller is skipping bad records (``skips`` given)."""
    if skips is None:
        raise err
    skips.add(err.reason, str(err))
