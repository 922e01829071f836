"""What the VQA job writes besides metrics: the official results file and example images.

``predictions.json`` follows the VQA evaluation server's format, ``[{"question_id": ...,
"answer": ...}]``, one entry per question of the evaluated split (test splits without
annotations too). ``examples/`` holds a few questions drawn over their image: the predicted
answer, the true one when known, and where the [CLS] token looked (attention rollout).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..data import load_image, vqa_accuracy, write_vqa_predictions
from ..processing.views import AveragedViews, ImageView
from ..training import Metric, TrainingConfig, make_loader, metrics_for, split_batch
from ..training.metrics import vqa_accuracy as vqa_accuracy_metric
from ..viz import patch_heatmaps, save_attention_figure
from .common import WithIndex

__all__ = [
    "accuracy_by_answer_type",
    "answer_type_metrics",
    "predict_labels",
    "save_examples",
    "write_predictions",
]


def answer_types(records: Sequence[Any]) -> list[str]:
    """The answer types the records' annotations give (VQAv2: yes/no, number, other), sorted."""
    return sorted({r.answer_type for r in records if getattr(r, "answer_type", None) is not None})


def answer_type_metrics(model: torch.nn.Module, records: Sequence[Any]) -> dict[str, Metric] | None:
    """The model's metrics plus the VQA accuracy of each answer type the evaluated records
    carry (``vqa_accuracy_yes_no``, ...: metrics.csv's eval rows); None when they carry none
    (the model's own metrics then)."""
    types = answer_types(records)
    if not types:
        return None
    metrics = dict(metrics_for(model))
    id2label = model.config.id2label
    for answer_type in types:
        name = "vqa_accuracy_" + (re.sub(r"[^0-9A-Za-z]+", "_", answer_type).strip("_") or "none")
        metrics[name] = vqa_accuracy_metric(id2label, answer_type=answer_type)
    return metrics


def accuracy_by_answer_type(
    records: Sequence[Any], predictions: torch.Tensor, id2label: dict[int, str]
) -> dict[str, float]:
    """The official evaluation's per-type accuracy of ``predictions`` (label ids, -1 for
    skipped items): the mean VQA accuracy of the answered questions of each answer type."""
    sums: dict[str, list[float]] = {}
    for record, label in zip(records, predictions.tolist(), strict=True):
        kind = getattr(record, "answer_type", None)
        if label < 0 or kind is None or not record.answers:
            continue
        sums.setdefault(kind, []).append(vqa_accuracy(id2label[label], record.answers))
    return {kind: sum(scores) / len(scores) for kind, scores in sorted(sums.items())}


@torch.no_grad()
def predict_labels(
    accelerator: Any,
    model: torch.nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    config: TrainingConfig,
    views: Sequence[ImageView] = (),
) -> torch.Tensor:
    """The argmax label of every item of ``dataset`` (-1 for items skipped as bad), in
    dataset order, on every process; with ``views``, of the logits averaged over them."""
    loader = make_loader(WithIndex(dataset), config, train=False, collate_fn=collate_fn)
    loader = accelerator.prepare(loader)
    predictions = torch.full((len(dataset),), -1, dtype=torch.long)
    was_training = model.training
    model.eval()
    forward = AveragedViews(model, views)
    try:
        for batch in loader:
            if batch is None:
                continue
            inputs, meta = split_batch(batch)
            inputs.pop("labels", None)
            logits = forward(**inputs).logits
            index = torch.as_tensor(meta["index"], device=logits.device)
            rows = accelerator.gather_for_metrics(torch.stack([index, logits.argmax(-1)], 1))
            predictions[rows[:, 0].cpu()] = rows[:, 1].cpu()
    finally:
        model.train(was_training)
    return predictions


def write_predictions(
    path: Path, records: Sequence[Any], predictions: torch.Tensor, id2label: dict[int, str]
) -> int:
    """The official results file for the predicted questions; returns how many it holds."""
    chosen = [(r, int(p)) for r, p in zip(records, predictions.tolist(), strict=True) if p >= 0]
    write_vqa_predictions(
        path, [r.question_id for r, _ in chosen], [id2label[p] for _, p in chosen]
    )
    return len(chosen)


@torch.no_grad()
def save_examples(
    model: torch.nn.Module,
    processor: Any,
    records: Sequence[Any],
    out_dir: Path,
    count: int,
    views: Sequence[ImageView] = (),
) -> list[Path]:
    """``count`` questions spread over ``records``, each a PNG of the image, its attention
    heatmap, the question and the predicted (and true) answer; with ``views``, the answer
    predictions.json gives (logits averaged over them), the heatmap the image's own."""
    if count <= 0 or not records:
        return []
    device = next(model.parameters()).device
    names = model.config.id2label or {}
    was_training = model.training
    model.eval()
    forward = AveragedViews(model, views)
    written = []
    try:
        step = max(len(records) // count, 1)
        for n, record in enumerate(records[::step][:count]):
            payload = record.image() if callable(record.image) else record.image
            image = load_image(payload, source=record.source)
            inputs = processor(images=[image], text=[record.question], return_tensors="pt")
            out = forward(**{k: v.to(device) for k, v in inputs.items()}, output_attentions=True)
            answer = names.get(int(out.logits[0].argmax()), "?")
            title = f"Q: {record.question}\npredicted: {answer}"
            if record.answers:
                title += f"   (answer: {max(set(record.answers), key=record.answers.count)})"
            path = out_dir / f"example_{n}.png"
            written.append(save_attention_figure(image, patch_heatmaps(out)[0], path, title=title))
    finally:
        model.train(was_training)
    return written
