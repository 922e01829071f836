"""Evaluation metrics as per-sample scores, so that distributed gathering stays exact.

A metric is any callable ``metric(output, batch, meta) -> Tensor (B, 2)``: for each sample
of the (local) batch, a value and a weight. The evaluation loop gathers these rows from all
processes with ``accelerator.gather_for_metrics`` (which drops the samples repeated to even
out the last batches) and reports ``sum(values) / sum(weights)``. Accuracy has weight 1 per
sample; MLM accuracy counts masked tokens (value = correct tokens, weight = masked tokens).

``output`` is the model's output, ``batch`` the model inputs (labels included) and ``meta``
the values the collator put aside (``batch["meta"]`` and ``meta_*`` keys; a dict, possibly
empty). Pass metrics to the Trainer as a dict name -> callable, or let :func:`metrics_for`
choose them by the task the model's class declares (``task = "vqa"``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "Metric",
    "accuracy",
    "itm_accuracy",
    "metrics_for",
    "mlm_accuracy",
    "rank_accuracy",
    "register_task_metrics",
    "top_k_accuracy",
    "vqa_accuracy",
]

Metric = Callable[[Any, Mapping[str, Any], Mapping[str, Any]], torch.Tensor]


def _rows(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    values = values.detach().float()
    weights = torch.ones_like(values) if weights is None else weights.detach().float()
    return torch.stack([values, weights], dim=1)


def _field(output: Any, *names: str) -> torch.Tensor:
    for name in names:
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise KeyError(f"model output has none of {names}")


def _labels(batch: Mapping[str, Any], *names: str) -> torch.Tensor:
    for name in names:
        if batch.get(name) is not None:
            return batch[name]
    raise KeyError(f"batch has none of {names} (the metric needs labels)")


def _class_ids(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class ids (B,) from class ids, or from soft targets (B, C) (Mixup, CutMix, label
    smoothing): the class each row weighs most. Decided by shape, not by values."""
    if labels.is_floating_point() and labels.shape == logits.shape:
        return labels.argmax(-1)
    return labels


def accuracy(output: Any, batch: Mapping[str, Any], meta: Mapping[str, Any]) -> torch.Tensor:
    """Top-1 accuracy of ``logits`` (B, C) against class-index ``labels`` (B,), or against
    the argmax of soft targets (B, C).

    Args:
        output: the model's output, with ``logits`` (B, C).
        batch: the model inputs, with ``labels``.
        meta: the values the collator put aside (unused).

    Returns:
        (B, 2) float rows (value, weight): (1 if the argmax is the label else 0, 1).

    Raises:
        KeyError: when the batch has no ``labels`` (the data set carries no labels).
    """
    labels = _class_ids(_labels(batch, "labels"), output.logits)
    return _rows(output.logits.argmax(-1) == labels)


def top_k_accuracy(k: int = 5) -> Metric:
    """Whether the label (or the argmax of soft targets) is among the ``k`` highest logits
    (all classes when C <= k).

    Args:
        k: how many of the highest logits count as right.

    Returns:
        A :data:`Metric` named ``top<k>_accuracy``, called as :func:`accuracy` is.
    """

    def metric(output: Any, batch: Mapping[str, Any], meta: Mapping[str, Any]) -> torch.Tensor:
        logits = output.logits
        labels = _class_ids(_labels(batch, "labels"), logits)
        top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
        return _rows((top == labels.unsqueeze(-1)).any(-1))

    metric.__name__ = f"top{k}_accuracy"
    return metric


def itm_accuracy(output: Any, batch: Mapping[str, Any], meta: Mapping[str, Any]) -> torch.Tensor:
    """Image-text matching accuracy: ``itm_logits`` (pretraining) or ``logits`` (B, 2)
    against ``itm_labels`` or ``labels`` (B,), 1 = match.

    Args:
        output: the model's output, with ``itm_logits`` or ``logits`` (B, 2).
        batch: the model inputs, with ``itm_labels`` or ``labels``.
        meta: the values the collator put aside (unused).

    Returns:
        (B, 2) float rows (value, weight): (1 if the argmax is the label else 0, 1).

    Raises:
        KeyError: when the batch has neither ``itm_labels`` nor ``labels``.
    """
    logits = _field(output, "itm_logits", "logits")
    return _rows(logits.argmax(-1) == _labels(batch, "itm_labels", "labels"))


def rank_accuracy(output: Any, batch: Mapping[str, Any], meta: Mapping[str, Any]) -> torch.Tensor:
    """Retrieval: whether the matched candidate of each group (``labels`` (B,), its
    position) has the highest of the group's ``scores`` (B, G).

    Args:
        output: the model's output, with ``scores`` (B, G).
        batch: the model inputs, with ``labels``: the matched candidate's position (B,).
        meta: the values the collator put aside (unused).

    Returns:
        (B, 2) float rows (value, weight): (1 if the matched candidate scores
        highest else 0, 1).

    Raises:
        KeyError: when the batch has no ``labels`` (the data set carries no labels).
    """
    return _rows(output.scores.argmax(-1) == _labels(batch, "labels"))


def mlm_accuracy(output: Any, batch: Mapping[str, Any], meta: Mapping[str, Any]) -> torch.Tensor:
    """Masked-token accuracy over the positions whose label is not -100; a sample weighs as
    many masked tokens as it has.

    Args:
        output: the model's output, with ``mlm_logits`` or ``logits`` (B, T, V).
        batch: the model inputs, with ``mlm_labels`` or ``labels`` (B, T).
        meta: the values the collator put aside (unused).

    Returns:
        (B, 2) float rows (value, weight): (the sample's correctly predicted masked
        tokens, its masked tokens).

    Raises:
        KeyError: when the batch has neither ``mlm_labels`` nor ``labels``.
    """
    logits = _field(output, "mlm_logits", "logits")
    labels = _labels(batch, "mlm_labels", "labels")
    masked = labels != -100
    correct = (logits.argmax(-1) == labels) & masked
    return _rows(correct.sum(-1), masked.sum(-1))


def vqa_accuracy(
    id2label: Mapping[int | str, str] | Sequence[str] | None = None,
    *,
    answer_type: str | None = None,
) -> Metric:
    """VQA accuracy of the argmax answer.

    With ``id2label`` (or the answer list) and the human answers in ``meta["answers"]``: the
    official VQA accuracy (``vilt.data.vqa_accuracy``: leave-one-out min(matches / 3, 1)).
    Otherwise: the soft target of the predicted answer, ``labels[b, argmax]`` — ViLT's VQA
    score, which equals the official accuracy for answers in the vocabulary.

    Args:
        id2label: the answer of each label id (a mapping or a list).
        answer_type: score only the questions whose ``meta["answer_type"]`` is this (the
            official evaluation's per-type accuracy: the mean over the questions of the
            type); the others weigh 0.
    """
    if id2label is None:
        names = None
    elif isinstance(id2label, Mapping):
        names = {int(k): v for k, v in id2label.items()}
    else:
        names = dict(enumerate(id2label))

    def metric(output: Any, batch: Mapping[str, Any], meta: Mapping[str, Any]) -> torch.Tensor:
        pred = output.logits.argmax(-1)
        answers = meta.get("answers")
        chosen = None
        if answer_type is not None:
            types = meta.get("answer_type") or [None] * len(pred)
            chosen = torch.tensor([t == answer_type for t in types], device=pred.device)
        if names is not None and answers is not None:
            from vilt.data import vqa_accuracy as official

            pairs = list(zip(pred.tolist(), answers, strict=True))
            scores = [official(names.get(int(p), ""), list(a)) if a else 0.0 for p, a in pairs]
            weights = torch.tensor([1.0 if a else 0.0 for _, a in pairs])  # unanswered: none
            weights = weights.to(pred.device) * (1.0 if chosen is None else chosen)
            return _rows(torch.tensor(scores).to(pred.device) * weights, weights)
        labels = _labels(batch, "labels")
        scores = labels.float().gather(1, pred.unsqueeze(1)).squeeze(1)
        if chosen is None:
            return _rows(scores)
        return _rows(scores * chosen, chosen.float())

    metric.__name__ = "vqa_accuracy" if answer_type is None else f"vqa_accuracy[{answer_type}]"
    return metric


def _classification(config: Any) -> dict[str, Metric]:
    out: dict[str, Metric] = {"accuracy": accuracy}
    if getattr(config, "num_labels", 0) > 5:
        out["top5_accuracy"] = top_k_accuracy(5)
    return out


# task (a model class's ``task``) -> the metrics for a model of that config
TASK_METRICS: dict[str, Callable[[Any], dict[str, Metric]]] = {
    "image-classification": _classification,
    "images-and-text-classification": _classification,
    "vqa": lambda config: {"vqa_accuracy": vqa_accuracy(getattr(config, "id2label", None))},
    "image-text-matching": lambda config: {"itm_accuracy": itm_accuracy},
    "image-text-retrieval": lambda config: {"rank_accuracy": rank_accuracy},
    "masked-lm": lambda config: {"mlm_accuracy": mlm_accuracy},
    "pretraining": lambda config: {"itm_accuracy": itm_accuracy, "mlm_accuracy": mlm_accuracy},
}


def register_task_metrics(task: str, make: Callable[[Any], dict[str, Metric]]) -> None:
    """Say which metrics a model whose class declares ``task = task`` is evaluated with.

    Args:
        task: the name a model class gives in its ``task`` class attribute.
        make: ``make(model.config)`` returns the metrics, name -> :data:`Metric`.
    """
    TASK_METRICS[task] = make


def metrics_for(model: Any) -> dict[str, Metric]:
    """The metrics of the task a model declares (its class's ``task``; see
    :data:`TASK_METRICS` and :func:`register_task_metrics`). A model without a registered
    task gets none: the evaluation loop always reports the loss. Wrapped models (DDP's
    ``module``, ``torch.compile``'s ``_orig_mod``) are read through.

    Args:
        model: a vilt model, possibly wrapped for distributed training or compiled.
    """
    for attribute in ("module", "_orig_mod"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, torch.nn.Module):
            return metrics_for(inner)
    make = TASK_METRICS.get(getattr(type(model), "task", ""))
    return {} if make is None else make(getattr(model, "config", None))


def loss_rows(output: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """The output's scalar losses (``loss``, ``itm_loss``, ...) as per-sample rows: each
    sample carries its batch's mean, so the result is a sample-weighted mean."""
    rows = {}
    for name in ("loss", *sorted(k for k in _names(output) if k.endswith("_loss"))):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor) and value.ndim == 0:
            rows[name] = _rows(value.expand(batch_size))
    return rows


def _names(output: Any) -> list[str]:
    if hasattr(output, "keys"):
        return list(output.keys())
    return [k for k in vars(output) if not k.startswith("_")]
