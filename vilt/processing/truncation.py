"""Counting the texts cut at ``max_length``: truncation is never silent.

The tokenizer cuts every text to the model's text positions; a caption or question longer
than that loses its end. :class:`TruncationCounter` counts, where texts are tokenized (the
processor, the collators), how many texts were encoded, how many were cut and how long the
longest was before the cut, so that a run can say so at its end and a user can pick
``--max-text-length``. With ``shared=True`` the counts live in shared memory, one row per
DataLoader worker (as :class:`vilt.data.errors.SkipCounter` keeps its counts), so collators
running in worker processes report to the main one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["TruncationCounter", "describe_truncation", "text_lengths"]

_MAX_WORKERS = 64  # one row per DataLoader worker (row 0: the main process)
# columns: texts encoded, texts cut (sums); longest text in tokens, the cut (maxima)
_SUMS, _MAXIMA = slice(0, 2), slice(2, 4)


def text_lengths(encoding: Any) -> list[int] | None:
    """Each text's length in tokens before truncation, [CLS] and [SEP] included, from a
    tokenizer's output (vilt's or a transformers fast tokenizer's: their ``encodings`` keep
    the cut-off tokens as ``overflowing``); None when the output does not say."""
    encodings = getattr(encoding, "encodings", None)
    if not encodings:
        return None
    lengths = []
    for e in encodings:
        pieces = [e, *e.overflowing]
        content = sum(
            sum(
                1
                for a, s in zip(p.attention_mask, p.special_tokens_mask, strict=True)
                if a and not s
            )
            for p in pieces
        )
        specials = sum(
            1 for a, s in zip(e.attention_mask, e.special_tokens_mask, strict=True) if a and s
        )
        lengths.append(content + specials)
    return lengths


class TruncationCounter:
    """Texts encoded, texts cut at ``max_length``, the longest text (in tokens).

    Args:
        shared: keep the counts in shared memory, one row per DataLoader worker, so that a
            collator's counts made in worker processes reach the main process (create the
            counter before the workers start, as a collator's constructor does).
    """

    def __init__(self, *, shared: bool = False) -> None:
        rows = _MAX_WORKERS + 1 if shared else 1
        self._counts = torch.zeros(rows, 4, dtype=torch.int64)
        if shared:
            self._counts.share_memory_()

    def add(self, encoding: Any, max_length: int) -> None:
        """Count the texts of one tokenizer output made with truncation at ``max_length``.

        Args:
            encoding: what the tokenizer returned (with ``encodings``; else each text that
                fills all ``max_length`` positions counts as cut, as it may have been).
            max_length: the length the texts were cut to.
        """
        lengths = text_lengths(encoding)
        if lengths is None:
            mask = encoding["attention_mask"]
            lengths = [int(n) for n in torch.as_tensor(mask).sum(-1).tolist()]
            cut = sum(n >= max_length for n in lengths)
        else:
            cut = sum(n > max_length for n in lengths)
        if not lengths:
            return
        info = torch.utils.data.get_worker_info()
        row = self._counts[
            0 if info is None or len(self._counts) == 1 else 1 + info.id % _MAX_WORKERS
        ]
        row[0] += len(lengths)
        row[1] += cut
        row[2] = max(int(row[2]), max(lengths))
        row[3] = max(int(row[3]), int(max_length))

    def counts(
        self, all_reduce: Callable[[torch.Tensor, str], torch.Tensor] | None = None
    ) -> dict[str, int]:
        """{"texts", "truncated", "longest", "max_length"} over every worker and, with
        ``all_reduce(tensor, op)`` ("sum" or "max" over the processes of a distributed run),
        over every process. Every process must call it then."""
        sums = self._counts[:, _SUMS].sum(0)
        maxima = self._counts[:, _MAXIMA].amax(0)
        if all_reduce is not None:
            sums = all_reduce(sums, "sum").cpu()
            maxima = all_reduce(maxima, "max").cpu()
        texts, cut = (int(v) for v in sums.tolist())
        longest, limit = (int(v) for v in maxima.tolist())
        return {"texts": texts, "truncated": cut, "longest": longest, "max_length": limit}

    @property
    def truncated(self) -> int:
        """Texts cut so far (this process)."""
        return int(self._counts[:, 1].sum())

    def __repr__(self) -> str:
        return f"TruncationCounter({self.counts()})"


def describe_truncation(counts: dict[str, int]) -> str:
    """'12 of 4,096 texts (0.29%) cut at 40 tokens, the longest had 57' for
    :meth:`TruncationCounter.counts`."""
    texts, cut = counts.get("texts", 0), counts.get("truncated", 0)
    share = f" ({100 * cut / texts:.2f}%)" if cut and texts else ""
    return (
        f"{cut:,} of {texts:,} texts{share} cut at {counts.get('max_length', 0)} tokens, "
        f"the longest had {counts.get('longest', 0)}"
    )
