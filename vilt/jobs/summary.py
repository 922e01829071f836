"""What a job leaves behind when it ends: the PNG curves of its metrics.csv and the lines it
prints (the headline metric, how the run went, what it wrote)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["percent", "summary", "write_curves"]


def write_curves(out: Path, metric_keys: Sequence[str]) -> list[str]:
    """loss.png (training and evaluation loss) and metrics.png (the eval metrics) from
    ``out/metrics.csv``, for the columns it holds."""
    from ..viz import plot_training_curves

    with open(out / "metrics.csv", newline="", encoding="utf-8") as handle:
        present = set(next(csv.reader(handle), []))
    written = []
    for name, keys in (("loss.png", ("loss", "eval_loss")), ("metrics.png", metric_keys)):
        keys = [k for k in keys if k in present]
        if keys:
            plot_training_curves(out / "metrics.csv", out / name, keys=keys)
            written.append(name)
    return written


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def summary(results: Mapping[str, Any], *, headline: str, out: Path, written: Sequence[str]) -> str:
    """The lines a job prints at the end: the headline metric, then how the run went."""
    parts = []
    if results.get("steps"):
        parts.append(f"{results['steps']:,} steps ({results.get('epochs', 0):g} epochs)")
    parts.append(f"total {_duration(results['total_time_s'])}")
    if results.get("steps") and results.get("session_time_s"):
        rate = results.get("samples_seen", 0) / max(results["wall_time_s"], 1e-9)
        parts.append(f"training {_duration(results['wall_time_s'])}, {rate:,.0f} samples/s")
    parts.append(f"{results.get('world_size', 1)} process(es) on {results.get('device', '?')}")
    params = results.get("num_parameters")
    if params:
        parts.append(f"{params / 1e6:.2f}M parameters")
    return "\n".join([headline, " | ".join(parts), f"wrote to {out}: {', '.join(written)}"])


def percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"
