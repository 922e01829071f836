"""One-off inference from a checkpoint: answer a question about an image, and draw where a
ViT or ViLT model looks (attention rollout over the image patches, as a PNG)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .embedding import image_processor_for, vilt_backbone
from .modeling import PreTrainedModel, ViltForQuestionAnswering, load_model
from .modeling.vit import ViTForImageClassification, ViTModel
from .processing.views import AveragedViews, test_time_views

__all__ = ["answer_question", "attention_map"]


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, no patch sampling) for the call, then the mode it came in."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _is_vit(model: Any) -> bool:
    return isinstance(model, ViTModel | ViTForImageClassification)


def _open_image(image: Any):
    from .data.images import load_image

    return load_image(image)


@torch.no_grad()
def answer_question(
    model: str | os.PathLike | ViltForQuestionAnswering,
    image: Any,
    question: str,
    *,
    top_k: int = 3,
    processor: Any = None,
    tta_flip: bool = False,
    tta_shift: int = 0,
) -> list[tuple[str, float]]:
    """The ``top_k`` answers with their probabilities (sigmoid of the VQA logits), best first.

    With ``tta_flip`` / ``tta_shift`` the answer comes from the logits averaged over test-time
    views of the image, as ``vilt vqa --tta-flip --tta-shift`` scores.

    Args:
        model: a VQA checkpoint path (its processor loads with it) or a loaded
            ViltForQuestionAnswering.
        image: a file path, encoded bytes, a PIL image or an array (decoded to RGB).
        question: the question about the image (not empty).
        top_k: how many answers to return (>= 1).
        processor: the model's ViltProcessor; needed with a loaded model, else read from
            the checkpoint.
        tta_flip: also score the image mirrored left-right.
        tta_shift: also score the image moved this many pixels up, down, left and right.

    Returns:
        ``(answer, probability)`` pairs; an answer without a label name is its class index.

    Raises:
        TypeError: for a question that is not a string, or a model that is not a VQA model.
        ValueError: for an empty question, ``top_k`` < 1, a negative ``tta_shift``, or a
            loaded model without its processor (or a processor that does not fit it).
        CheckpointError: when the checkpoint cannot be loaded.
        ImageError: when the image cannot be read.
    """
    if not isinstance(question, str):
        raise TypeError(f"question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("the question is empty: ask something about the image")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    views = test_time_views(flip=tta_flip, shift=tta_shift)
    path = model if isinstance(model, str | os.PathLike) else None
    if path is not None:
        model = load_model(path)
    if not isinstance(model, ViltForQuestionAnswering):
        raise TypeError(
            f"answering questions needs a VQA checkpoint (ViltForQuestionAnswering), got "
            f"{type(model).__name__}"
        )
    if path is not None and processor is None:
        from .processing import ViltProcessor

        processor = ViltProcessor.from_pretrained(path)
    if processor is None:
        raise ValueError("pass the model's processor with a loaded model")
    processor.check_model(model.config, str(path or type(model).__name__))
    inputs = processor(images=[_open_image(image)], text=[question], return_tensors="pt")
    device = next(model.parameters()).device
    with _evaluating(model):
        forward = AveragedViews(model, views)
        logits = forward(**{k: v.to(device) for k, v in inputs.items()}).logits[0]
    probs = torch.sigmoid(logits.float())
    values, ids = probs.topk(min(top_k, probs.numel()))
    names = model.config.id2label or {}
    return [(names.get(int(i), str(int(i))), float(v)) for v, i in zip(values, ids, strict=True)]


@torch.no_grad()
def attention_map(
    model: str | os.PathLike | PreTrainedModel,
    image: Any,
    out_path: str | os.PathLike,
    *,
    text: str | None = None,
    query: int = 0,
    per_token: bool = False,
    processor: Any = None,
) -> Path:
    """Attention rollout from token ``query`` over the image patches, saved as a PNG.

    Args:
        model: a ViT or ViLT checkpoint path (any class; its processor loads with it) or a
            loaded model.
        image: a file path, encoded bytes, a PIL image or an array (decoded to RGB).
        out_path: the PNG file to write (must end in .png).
        text: the text paired with the image; required for ViLT, refused for ViT.
        query: the token whose attention is drawn: a position in the text for ViLT
            (0 = [CLS]); for ViT only 0, the class token.
        per_token: ViLT only: draw one map for every text token instead.
        processor: the model's processor; needed with a loaded model, else read from the
            checkpoint.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ValueError: for a path not ending in .png, a loaded model without its processor,
            text for a ViT or none for a ViLT, or a ``query`` outside the tokens.
        CheckpointError: when the checkpoint cannot be loaded.
        ImageError: when the image cannot be read.
    """
    from .viz import crop_to_image, patch_heatmaps, save_attention_figure
    from .viz import save_token_attention_figure as save_tokens

    if Path(out_path).suffix.lower() != ".png":
        raise ValueError(f"the attention map is written as PNG; {out_path} does not end in .png")
    path = None
    if isinstance(model, str | os.PathLike):
        path, model = model, load_model(model)
        processor = processor or image_processor_for(path, model)
    if processor is None:
        raise ValueError("pass the model's processor with a loaded model")
    picture = _open_image(image)
    if _is_vit(model):
        if text is not None or per_token:
            raise ValueError(f"{type(model).__name__} is image-only: it takes no text")
        backbone = model if isinstance(model, ViTModel) else model.vit
        inputs = {"pixel_values": processor([picture], return_tensors="pt")["pixel_values"]}
        options = {"interpolate_pos_encoding": True}  # a processor may resize to other sizes
    else:
        backbone = vilt_backbone(model)
        if text is None:
            raise ValueError("a ViLT model looks at an image with a text: pass the text")
        processor.check_model(model.config, str(path or type(model).__name__))
        inputs = processor(images=[picture], text=[text], return_tensors="pt")
        options = {}
    device = next(backbone.parameters()).device
    with _evaluating(backbone):
        out = backbone(
            **{k: v.to(device) for k, v in inputs.items()}, output_attentions=True, **options
        )

    def heatmap(q: int) -> torch.Tensor:
        heat = patch_heatmaps(out, query=q)[0]
        return crop_to_image(heat, inputs["pixel_mask"][0]) if "pixel_mask" in inputs else heat

    if _is_vit(model):
        if query != 0:
            raise ValueError(f"ViT draws attention from its class token (query 0), got {query}")
        return save_attention_figure(picture, heatmap(0), out_path, title="class token")
    ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    if per_token:
        keep = [q for q, t in enumerate(tokens) if t not in ("[SEP]", "[PAD]")]
        maps = [heatmap(q) for q in keep]
        return save_tokens(picture, maps, [tokens[q] for q in keep], out_path, title=text)
    if not 0 <= query < len(tokens):
        raise ValueError(
            f"token {query} is outside the text's {len(tokens)} tokens: {' '.join(tokens)}"
        )
    return save_attention_figure(
        picture, heatmap(query), out_path, title=f"{text}  (from {tokens[query]})"
    )
