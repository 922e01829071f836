"""What the benchmarks run on: easy-VQA pairs, one tokenizer for both libraries, and the same
weights in vilt and in the reference implementation (transformers' ViLT, timm's ViT).

Weights are made by vilt (seeded) and exported: ViLT through ``save_pretrained(...,
format="transformers")`` and transformers' own ``from_pretrained``; ViT by renaming vilt's
state dict into timm's names (both fuse q, k and v, so it is a rename).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

import vilt
import vilt.interop
from vilt.data.vqa.answers import build_answer_vocab
from vilt.data.vqa.records import load_easy_vqa_records
from vilt.processing import ImageProcessor, ViltProcessor, train_tokenizer


@dataclass
class Pairs:
    """easy-VQA image paths, their questions, and soft-score targets over the answer vocab."""

    images: list[str]
    questions: list[str]
    labels: torch.Tensor  # (N, num_answers)
    answers: list[str]


@functools.cache
def _records(split: str) -> list:
    return load_easy_vqa_records(split)


@functools.cache
def answer_vocab():
    """easy-VQA's 13 answers, in the order a model trained by vilt's recipe would use."""
    return build_answer_vocab([r.answers for r in _records("train")])


def easy_vqa_pairs(n: int, *, split: str = "test", distinct_images: bool = True) -> Pairs:
    """The first ``n`` questions of a split, one per image when ``distinct_images``."""
    vocab = answer_vocab()
    seen: set = set()
    picked = []
    for record in _records(split):
        if distinct_images and record.image_key in seen:
            continue
        seen.add(record.image_key)
        picked.append(record)
        if len(picked) == n:
            break
    if len(picked) < n:
        raise ValueError(f"easy-VQA {split} has fewer than {n} usable questions")
    return Pairs(
        images=[r.image for r in picked],
        questions=[r.question for r in picked],
        labels=torch.stack([vocab.targets(r.answers) for r in picked]),
        answers=[r.answers[0] for r in picked],
    )


@functools.cache
def tokenizer():
    """A WordPiece vocabulary trained on easy-VQA's training questions (no hub here)."""
    return train_tokenizer(sorted({r.question for r in _records("train")}), 1000)


def processors(config: vilt.ViltConfig, directory: Path, **image_options) -> tuple:
    """(vilt's ViltProcessor, transformers' ViltProcessor) with the same vocabulary and image
    settings; transformers reads the directory vilt writes. transformers' image side is its PIL
    pipeline (the one vilt reproduces): with torchvision installed transformers 5 defaults to a
    torchvision backend whose pixels differ by up to 2e-2 (benchmarked separately)."""
    import transformers

    ours = ViltProcessor(
        ImageProcessor(**image_options), tokenizer(), max_length=config.max_position_embeddings
    )
    ours.save_pretrained(directory)
    ref = transformers.ViltProcessor.from_pretrained(directory)
    pil = getattr(transformers, "ViltImageProcessorPil", None)
    if (
        pil is not None
    ):  # the PIL pipeline ViLT was trained with, whether or not torchvision is here
        ref.image_processor = pil.from_pretrained(directory)
    return ours, ref


def vilt_pair(config: vilt.ViltConfig, *, seed: int = 0) -> tuple:
    """(vilt, transformers) ViltForQuestionAnswering with the same weights."""
    import transformers

    torch.manual_seed(seed)
    ours = vilt.ViltForQuestionAnswering(config)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp, format="transformers")
        ref = transformers.ViltForQuestionAnswering.from_pretrained(tmp)
    return ours, ref


def grads_in_vilt_names(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers ViLT model's gradients under vilt's parameter names (q, k, v fused)."""
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    state, _ = vilt.interop.transformers_to_vilt(grads, family="vilt", source="gradients")
    return state


def max_grad_diff(ours: torch.nn.Module, ref_grads: dict[str, torch.Tensor]) -> float:
    """Largest |difference| between vilt's gradients and the reference's, relative to the
    largest gradient entry of that parameter (gradients span many orders of magnitude)."""
    worst = 0.0
    for name, param in ours.named_parameters():
        if param.grad is None or name not in ref_grads:
            continue
        scale = ref_grads[name].abs().max().clamp_min(1e-12)
        worst = max(worst, ((param.grad - ref_grads[name]).abs().max() / scale).item())
    return worst


def timm_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vilt's ViTForImageClassification state dict in timm VisionTransformer's names."""
    renames = {
        "vit.embeddings.cls_token": "cls_token",
        "vit.embeddings.position_embeddings": "pos_embed",
        "vit.embeddings.patch_embeddings.proj.": "patch_embed.proj.",
        "vit.encoder.blocks.": "blocks.",
        "vit.encoder.norm.": "norm.",
        "classifier.": "head.",
    }
    out = {}
    for key, tensor in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                out[new + key[len(old) :]] = tensor
                break
        else:
            raise KeyError(f"no timm name for vilt parameter {key}")
    return out


def vit_pair(preset: str, *, num_labels: int = 1000, seed: int = 0) -> tuple:
    """(vilt, timm) ViT image classifiers with the same weights (timm's LayerNorm eps 1e-6)."""
    import timm

    timm_names = {"vit-small/16": "vit_small_patch16_224", "vit-base/16": "vit_base_patch16_224"}
    torch.manual_seed(seed)
    config = vilt.ViTConfig.from_preset(preset, layer_norm_eps=1e-6, num_labels=num_labels)
    ours = vilt.ViTForImageClassification(config)
    ref = timm.create_model(timm_names[preset], pretrained=False, num_classes=num_labels)
    ref.load_state_dict(timm_state_dict(ours.state_dict()))
    return ours, ref


def timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except Exception:  # ImportError, or torchvision that does not match torch
        return False
    return True
