"""Batch conventions and the evaluation loop.

A batch is a dict of model inputs. Values that are not inputs (question ids, the human
answers of VQA, ...) travel under ``batch["meta"]`` (a dict) or under keys starting with
``meta_``; :func:`split_batch` takes them out before ``model(**inputs)`` and hands them to
the metrics (``meta_answers`` becomes ``meta["answers"]``). A collator may return None for
a batch whose every item was skipped; both loops skip it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .metrics import Metric, loss_rows

__all__ = ["batch_size_of", "evaluate", "split_batch"]


def split_batch(batch: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model inputs, meta) from a collated batch (see the module docstring)."""
    inputs = dict(batch)
    meta: dict[str, Any] = dict(inputs.pop("meta", None) or {})
    for key in [k for k in inputs if k.startswith("meta_")]:
        meta[key[len("meta_") :]] = inputs.pop(key)
    return inputs, meta


def batch_size_of(inputs: Mapping[str, Any]) -> int:
    """The number of samples in a batch: the first dimension of its first tensor."""
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    raise ValueError(f"batch holds no tensor to count samples from (keys: {sorted(inputs)})")


@torch.no_grad()
def evaluate(
    accelerator: Any,
    model: torch.nn.Module,
    loader: Iterable[Any],
    metrics: Mapping[str, Metric] | None = None,
    *,
    prefix: str = "eval_",
) -> dict[str, float]:
    """Run ``model`` over a prepared ``loader`` and return ``{prefix + name: value}`` for the
    output's losses (``loss``, ``itm_loss``, ...), each metric, and ``samples`` (how many
    samples were scored, across all processes, each once).

    Every metric's per-sample rows are gathered with ``accelerator.gather_for_metrics``,
    which drops the samples that even out the last batches of an uneven split, so metrics
    count each sample once. Losses are batch means weighted by batch size; on an uneven
    split the last padded batch's mean also covers its repeated samples. Every process must
    see the same number of batches (a collator's None batch on one process only would hang
    the gathering)."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    samples = 0
    try:
        for batch in loader:
            if batch is None:
                continue
            inputs, meta = split_batch(batch)
            output = model(**inputs)
            n = batch_size_of(inputs)
            rows = loss_rows(output, n)
            for name, metric in (metrics or {}).items():
                rows[name] = metric(output, inputs, meta)
            rows["_count"] = torch.ones(n, 2, device=accelerator.device)
            gathered = accelerator.gather_for_metrics(rows)
            samples += int(gathered.pop("_count").shape[0])
            for name, value in gathered.items():
                total = value.detach().double().sum(0).cpu()
                sums[name] = sums[name] + total if name in sums else total
    finally:
        model.train(was_training)
    out = {prefix + name: float(v[0] / v[1]) for name, v in sums.items() if v[1] > 0}
    out[prefix + "samples"] = samples
    return out
