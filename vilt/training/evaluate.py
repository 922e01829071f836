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
from accelerate.utils import gather_object
from torch.nn.parallel import DistributedDataParallel

from .metrics import Metric, loss_rows

__all__ = ["batch_size_of", "evaluate", "split_batch"]


def split_batch(batch: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model inputs, meta) from a collated batch (see the module docstring).

    Args:
        batch: a collated batch; not modified. ``batch["meta"]`` and the ``meta_*`` keys go
            to meta (``meta_answers`` as ``meta["answers"]``), everything else to the inputs.
    """
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

    Under DDP each process scores its own share of a map-style data set, read without the
    repeated samples that would even out the last batches, and the sums are added up once at
    the end: every sample counts once (losses too: batch means weighted by batch size), and
    the processes' batches may differ in size or number (items skipped as bad). Elsewhere
    (FSDP, DeepSpeed, streams dispatched from the main process) the rows are gathered batch
    by batch with ``gather_for_metrics``, which drops the repeated samples but needs every
    process to see batches of the same size, and one row per data set item in the last.

    Args:
        accelerator: the run's ``accelerate.Accelerator``, which prepared ``model`` and
            ``loader``.
        model: the model; put in eval mode for the loop, then back in its former mode.
        loader: the prepared evaluation batches; a None batch (all of its items skipped) is
            left out.
        metrics: name -> :data:`~vilt.training.metrics.Metric`, called as
            ``metric(output, inputs, meta)``; None: losses only.
        prefix: put before every name in the result.

    Returns:
        ``{prefix + name: mean}`` over the samples, and ``prefix + "samples"``: their count.
    """
    was_training = model.training
    model.eval()
    sampler = getattr(loader, "batch_sampler", None)
    uneven = (
        accelerator.num_processes > 1
        and hasattr(sampler, "even_batches")
        and accelerator.distributed_type.value.startswith("MULTI_")
    )
    # the module inside DDP: no collective (buffer sync) in a forward that other processes,
    # whose shares hold fewer batches, do not make
    forward = model.module if uneven and isinstance(model, DistributedDataParallel) else model
    sums: dict[str, torch.Tensor] = {}
    try:
        if uneven:
            even, sampler.even_batches = sampler.even_batches, False
        for batch in loader:
            if batch is None:
                continue
            inputs, meta = split_batch(batch)
            output = forward(**inputs)
            n = batch_size_of(inputs)
            rows = loss_rows(output, n)
            for name, metric in (metrics or {}).items():
                rows[name] = metric(output, inputs, meta)
            rows["_count"] = torch.ones(n, 2, device=accelerator.device)
            # one process: nothing to gather, nothing repeated; gather_for_metrics would cut
            # the last batch to the items left over, too few rows where a collator makes
            # several of one item (retrieval's ITM pairs)
            if not uneven and accelerator.num_processes > 1:
                rows = accelerator.gather_for_metrics(rows)
            for name, value in rows.items():
                total = value.detach().double().sum(0).cpu()
                sums[name] = sums[name] + total if name in sums else total
    finally:
        if uneven:
            sampler.even_batches = even
        model.train(was_training)
    if uneven:
        sums = _sum_over_processes(accelerator, sums)
    samples = int(sums.pop("_count")[0]) if "_count" in sums else 0
    out = {prefix + name: float(v[0] / v[1]) for name, v in sums.items() if v[1] > 0}
    out[prefix + "samples"] = samples
    return out


def _sum_over_processes(accelerator: Any, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each name's (value, weight) sums added up over the processes (a process whose share
    had no batch knows no names: the names are gathered first)."""
    names = sorted(set(gather_object(sorted(sums))))
    local = torch.stack([sums.get(n, torch.zeros(2, dtype=torch.float64)) for n in names])
    total = accelerator.reduce(local.to(accelerator.device), reduction="sum").cpu()
    return dict(zip(names, total, strict=True))
