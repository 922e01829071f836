"""One-off inference from a checkpoint directory: answer a question, draw an attention map."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .modeling import PreTrainedModel, ViltForQuestionAnswering, load_model
from .modeling.vit import ViTForImageClassification, ViTModel


def _open_image(image: Any):
    from .data.images import load_image

    return load_image(image)


@torch.inference_mode()
def answer_question(
    model: str | os.PathLike | ViltForQuestionAnswering,
    image: Any,
    question: str,
    *,
    top_k: int = 3,
    processor: Any = None,
) -> list[tuple[str, float]]:
    """The ``top_k`` answers with their probabilities (sigmoid of the VQA logits)."""
    from .processing import ViltProcessor

    if isinstance(model, str | os.PathLike):
        processor = processor or ViltProcessor.from_pretrained(model)
        model = load_model(model)
    if not isinstance(model, ViltForQuestionAnswering):
        raise TypeError(f"answering questions needs a VQA checkpoint, got {type(model).__name__}")
    if processor is None:
        raise ValueError("pass the model's processor with a loaded model")
    model.eval()
    inputs = processor(images=[_open_image(image)], text=[question], return_tensors="pt")
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits[0]
    probs = torch.sigmoid(logits.float())
    k = min(top_k, probs.numel())
    values, ids = probs.topk(k)
    names = model.config.id2label or {}
    return [(names.get(int(i), str(int(i))), float(v)) for v, i in zip(values, ids, strict=True)]


@torch.inference_mode()
def attention_map(
    model: str | os.PathLike | PreTrainedModel,
    image: Any,
    out_path: str | os.PathLike,
    *,
    text: str | None = None,
    query: int = 0,
    processor: Any = None,
) -> Path:
    """Attention rollout from token ``query`` over the image patches, saved as a PNG."""
    from .viz import patch_heatmaps, save_attention_figure

    if isinstance(model, str | os.PathLike):
        path = model
        model = load_model(path)
        if processor is None:
            from .processing import ViltProcessor, ViTImageProcessor

            is_vit = isinstance(model, ViTModel | ViTForImageClassification)
            processor = (ViTImageProcessor if is_vit else ViltProcessor).from_pretrained(path)
    if processor is None:
        raise ValueError("pass the model's processor with a loaded model")
    model.eval()
    picture = _open_image(image)
    if isinstance(model, ViTModel | ViTForImageClassification):
        inputs = processor([picture], return_tensors="pt")
        inputs = {"pixel_values": inputs["pixel_values"]}
        title = None
    else:
        if text is None:
            raise ValueError("a ViLT model needs --text to pair with the image")
        inputs = processor(images=[picture], text=[text], return_tensors="pt")
        title = text
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in inputs.items()}, output_attentions=True)
    heat = patch_heatmaps(out, query=query)[0]
    if "pixel_mask" in inputs:  # crop the padded grid to the image's own patches
        gh, gw = heat.shape
        mask = inputs["pixel_mask"][0]
        ph, pw = mask.shape[0] // gh, mask.shape[1] // gw
        rows = int(mask[:, 0].sum()) // ph
        cols = int(mask[0, :].sum()) // pw
        heat = heat[: max(rows, 1), : max(cols, 1)]
    return save_attention_figure(picture, heat, out_path, title=title)
