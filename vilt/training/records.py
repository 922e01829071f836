"""What a run leaves behind besides checkpoints: ``metrics.csv`` (one row per logged step,
flushed at each write), ``results.json`` (written atomically at the end), the report of the
records its data sets skipped and of the texts its collators cut."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..data.errors import describe_skips
from ..processing.truncation import TruncationCounter, describe_truncation

__all__ = ["MetricsLog", "data_skips", "text_truncation", "write_json_atomic"]


class MetricsLog:
    """``metrics.csv``: one row per ``step`` (a second row for the same step is merged into
    the first); columns are added as new names appear (the file is then rewritten with the
    wider header, atomically).

    ``resume_step``: keep the rows of steps up to it from an existing file and drop the rest
    (steps that a resumed run will log again), so the file never holds a step twice. None
    starts a new file."""

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] = ["step"]
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or ["step"])
                for row in reader:
                    try:
                        step = int(float(row["step"]))
                    except (KeyError, TypeError, ValueError):
                        continue  # a line cut short by a crash
                    if step <= resume_step:
                        self.rows.append(row)
        self._rewrite()

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row (must hold ``step``)."""
        if "step" not in row:
            raise ValueError("a metrics row needs a 'step'")
        row = {k: _cell(v) for k, v in row.items()}
        new = [k for k in row if k not in self.columns]
        self.columns.extend(new)
        if self.rows and str(self.rows[-1]["step"]) == str(row["step"]):
            self.rows[-1] = {**self.rows[-1], **row}  # one row per step
            self._rewrite()
            return
        self.rows.append(row)
        if new:
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, self.columns, restval="").writerow(row)
            handle.flush()

    def _rewrite(self) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, self.columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.path, buffer.getvalue())


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically; values JSON has no type for are
    written as their ``str``."""
    atomic.write_json(path, data, default=str)


def data_skips(accelerator: Any, **datasets: Any) -> dict[str, dict[str, int]]:
    """The records each data set skipped (``skip_bad``), by reason, over all processes, and a
    line for each on the main process: the report at the end that skipping promises. Every
    process must call this (it reduces across them)."""

    def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
        return accelerator.reduce(tensor.to(accelerator.device), reduction=op)

    out = {}
    for name, data in datasets.items():
        if not hasattr(data, "skip_counts"):
            continue
        counts = data.skip_counts(all_reduce if accelerator.num_processes > 1 else None)
        if counts:
            out[name] = counts
            accelerator.print(f"{name} data: {describe_skips(counts)}")
    return out


def _truncation_counter(collate: Any) -> TruncationCounter | None:
    """The counter of ``collate`` or of the collator it wraps (augmentations wrap one)."""
    while collate is not None:
        counter = getattr(collate, "truncation", None)
        if isinstance(counter, TruncationCounter):
            return counter
        collate = getattr(collate, "collate", None)
    return None


def text_truncation(accelerator: Any, **collators: Any) -> dict[str, dict[str, int]]:
    """The texts each collator encoded and cut at its ``max_length``, over all processes,
    and one line on the main process (truncation is never silent). A collator serving two
    names (training and evaluation) is reported once, as "train+eval". Every process must
    call this (it reduces across them)."""

    def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
        return accelerator.reduce(tensor.to(accelerator.device), reduction=op)

    names: dict[int, list[str]] = {}
    counters: dict[int, TruncationCounter] = {}
    for name, collate in collators.items():
        counter = _truncation_counter(collate)
        if counter is not None:
            names.setdefault(id(counter), []).append(name)
            counters[id(counter)] = counter
    out: dict[str, dict[str, int]] = {}
    for key, counter in counters.items():
        counts = counter.counts(all_reduce if accelerator.num_processes > 1 else None)
        if counts["texts"]:
            out["+".join(names[key])] = counts
    if out:
        parts = [f"{name} {describe_truncation(c)}" for name, c in out.items()]
        accelerator.print("text truncation: " + "; ".join(parts))
    return out
