"""ViLT cases: vilt against transformers' ViltForQuestionAnswering with the same weights.

- ``vqa-b32-infer``: processor + model end to end on easy-VQA images and questions.
- ``vqa-b32-train`` and ``vqa-small-train``: one training step (forward, backward, AdamW) on
  a batch prepared once.
Each case first runs both implementations on the same inputs and compares their outputs
(logits; for training also the loss and every gradient); then times them alternately.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from harness import Case, count_flops, measure
from PIL import Image
from workloads import (
    easy_vqa_pairs,
    grads_in_vilt_names,
    max_grad_diff,
    processors,
    vilt_pair,
)

import vilt
from vilt.training import TrainingConfig, build_optimizer

ATOL = 1e-4  # fp32 logits of a 12-layer model on different kernels (SDPA vs bmm, fused qkv)


def small_preset() -> str:
    """The model preset recipes/vqa.py trains by default: its recipe preset's."""
    preset = Path(__file__).resolve().parents[1] / "recipes" / "presets" / "easy-vqa.json"
    return json.loads(preset.read_text(encoding="utf-8"))["flags"]["preset"]


def _logit_check(ours: torch.Tensor, ref: torch.Tensor, atol: float) -> dict:
    diff = (ours - ref).abs().max().item()
    agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    return {"max_abs_logit_diff": diff, "argmax_agreement": agree, "atol": atol}


def vqa_infer(*, repeats: int, n: int = 64, batch_size: int = 32) -> Case:
    """ViLT-B/32 VQA inference, processor + model, ``n`` easy-VQA pairs in batches."""
    config = vilt.ViltConfig.from_preset("vilt-b32", num_labels=13)
    ours, ref = (m.eval() for m in vilt_pair(config))
    pairs = easy_vqa_pairs(n)
    chunks = [
        (pairs.images[i : i + batch_size], pairs.questions[i : i + batch_size])
        for i in range(0, n, batch_size)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ours_proc, ref_proc = processors(config, Path(tmp))

    def run_vilt() -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([ours(**ours_proc(images=i, text=q)).logits for i, q in chunks])

    def run_ref() -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for paths, questions in chunks:
                images = [Image.open(p).convert("RGB") for p in paths]
                batch = ref_proc(
                    images=images,
                    text=questions,
                    padding=True,
                    truncation=True,
                    max_length=40,
                    return_tensors="pt",
                )
                out.append(ref(**batch).logits)
        return torch.cat(out)

    check = _logit_check(run_vilt(), run_ref(), ATOL)
    case = Case(
        name="ViLT-B/32 VQA inference, processor + model",
        unit="pairs",
        items=n,
        target=">= 1.5x transformers",
        goal=1.5,
        outputs=check | {"summary": f"logits within {check['max_abs_logit_diff']:.1e}"},
        same_output=check["max_abs_logit_diff"] <= ATOL,
    )
    case.seconds, case.spread = measure(
        {"vilt": run_vilt, "transformers": run_ref}, repeats=repeats, warmup=0
    )
    for name, fn in (("vilt", run_vilt), ("transformers", run_ref)):
        case.gflops[name] = count_flops(fn) / case.seconds[name] / 1e9
    case.extra.update(
        batch_size=batch_size,
        text_tokens=ours_proc(text=pairs.questions[:batch_size])["input_ids"].shape[1],
    )
    return case


def training_batch(config: vilt.ViltConfig, n: int, *, image_size: int | None = None) -> dict:
    """``n`` easy-VQA training pairs through vilt's processor (text padded to the longest).
    With ``image_size``, images are read at that size as the VQA recipe reads them (sides a
    multiple of the patch size; the processor's default divisor of 32 would turn 56 into 32)."""
    pairs = easy_vqa_pairs(n, split="train", distinct_images=True)
    options = {} if image_size is None else {"size": image_size, "size_divisor": config.patch_size}
    with tempfile.TemporaryDirectory() as tmp:
        proc, _ = processors(config, Path(tmp), **options)
    batch = dict(proc(images=pairs.images, text=pairs.questions))
    batch["labels"] = pairs.labels
    return batch


def reference_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """What transformers' Trainer builds by default (torch >= 2.8): fused torch AdamW,
    weight decay off for biases and LayerNorms."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, fused=True)


def train_step_fn(model, optimizer, batch):
    def step() -> torch.Tensor:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def compare_training(ours, ref, batch) -> dict:
    """Loss and gradients of one forward/backward on the same weights and batch."""
    ours.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
    loss_ours = ours(**batch).loss
    loss_ours.backward()
    loss_ref = ref(**batch).loss
    loss_ref.backward()
    out = {
        "loss_diff": abs(loss_ours.item() - loss_ref.item()),
        "max_rel_grad_diff": max_grad_diff(ours, grads_in_vilt_names(ref)),
    }
    ours.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
    return out


def vqa_train(
    *,
    repeats: int,
    preset: str,
    batch_size: int,
    image_size: int | None,
    goal: float,
    name: str,
    compile: bool = False,
    pooled_only: bool = False,
) -> Case:
    """One training step of vilt and of transformers on the same weights and batch
    (``pooled_only``: vilt's model built with that option, as the VQA recipe builds it)."""
    config = vilt.ViltConfig.from_preset(preset, num_labels=13, pooled_only=pooled_only)
    ours, ref = (m.train() for m in vilt_pair(config))
    batch = training_batch(config, batch_size, image_size=image_size)
    check = compare_training(ours, ref, batch)
    same = check["loss_diff"] <= 1e-4 and check["max_rel_grad_diff"] <= 1e-3
    if compile:
        ours = torch.compile(ours)
    opt_ours = build_optimizer(ours, TrainingConfig(lr=1e-4, head_lr_multiplier=1.0))
    steps = {
        "vilt": train_step_fn(ours, opt_ours, batch),
        "transformers": train_step_fn(ref, reference_optimizer(ref), batch),
    }
    tokens = batch["input_ids"].shape[1]
    case = Case(
        name=name,
        unit="steps",
        items=1,
        target=f">= {goal}x transformers",
        goal=goal,
        outputs=check
        | {"summary": f"loss {check['loss_diff']:.0e}, grads {check['max_rel_grad_diff']:.0e}"},
        same_output=same,
    )
    case.seconds, case.spread = measure(steps, repeats=repeats, warmup=2 if compile else 1)
    for impl, fn in steps.items():
        case.gflops[impl] = count_flops(fn) / case.seconds[impl] / 1e9
    case.extra.update(
        preset=preset,
        batch_size=batch_size,
        image_size=int(batch["pixel_values"].shape[-1]),
        text_tokens=tokens,
        optimizer_vilt="vilt.training.build_optimizer (fused AdamW)",
        optimizer_reference="torch AdamW(fused=True), transformers Trainer's default",
    )
    return case


def vqa_b32_train(*, repeats: int) -> Case:
    return vqa_train(
        repeats=repeats,
        preset="vilt-b32",
        batch_size=16,
        image_size=None,
        goal=1.3,
        name="ViLT-B/32 VQA training step, batch 16",
    )


def vqa_small_train(*, repeats: int, compile: bool = False, pooled_only: bool = False) -> Case:
    preset = small_preset()
    config = vilt.ViltConfig.from_preset(preset)
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    return vqa_train(
        repeats=repeats,
        preset=preset,
        batch_size=32,
        image_size=size,
        goal=1.5,
        name=f"{preset} (recipe default) VQA training step, batch 32"
        + (", vilt compiled" if compile else "")
        + (", vilt built with pooled_only=True" if pooled_only else ""),
        compile=compile,
        pooled_only=pooled_only,
    )
