"""ViT cases: vilt's ViTForImageClassification against timm's VisionTransformer with the same
weights (timm is an optional benchmark dependency; see CONTRIBUTING.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from harness import Case, count_flops, measure
from workloads import timm_state_dict, vit_pair

from vilt.training import TrainingConfig, build_optimizer

ATOL = 1e-4


def _inputs(batch_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, 224, 224, generator=gen)
    labels = torch.randint(0, 1000, (batch_size,), generator=gen)
    return images, labels


def vit_infer(*, repeats: int, preset: str, batch_size: int = 32, goal_kind: str) -> Case:
    """Inference (eval, no grad) on one batch of 224x224 images."""
    ours, ref = (m.eval() for m in vit_pair(preset))
    images, _ = _inputs(batch_size)

    def run_vilt() -> torch.Tensor:
        with torch.inference_mode():
            return ours(pixel_values=images).logits

    def run_ref() -> torch.Tensor:
        with torch.inference_mode():
            return ref(images)

    diff = (run_vilt() - run_ref()).abs().max().item()
    name = {"vit-small/16": "ViT-S/16", "vit-base/16": "ViT-B/16"}[preset]
    if goal_kind == "peak":
        target, goal = ">= 85% of matmul peak", 0.85
    else:
        target, goal = ">= 1.0x timm", 1.0
    case = Case(
        name=f"{name} inference, 224, batch {batch_size}",
        unit="images",
        items=batch_size,
        target=target,
        goal=goal,
        goal_kind=goal_kind,
        outputs={"max_abs_logit_diff": diff, "summary": f"logits within {diff:.1e}"},
        same_output=diff <= ATOL,
    )
    impls = {"vilt": run_vilt, "timm": run_ref}
    case.seconds, case.spread = measure(impls, repeats=repeats)
    for impl, fn in impls.items():
        case.gflops[impl] = count_flops(fn) / case.seconds[impl] / 1e9
    return case


def vit_train(*, repeats: int, preset: str = "vit-small/16", batch_size: int = 32) -> Case:
    """One training step (cross-entropy, backward, AdamW) on one batch of 224x224 images."""
    ours, ref = (m.train() for m in vit_pair(preset))
    images, labels = _inputs(batch_size)
    opt_ours = build_optimizer(ours, TrainingConfig(lr=1e-4, head_lr_multiplier=1.0))
    # timm's own train script: AdamW through timm.optim.create_optimizer_v2 (fused when
    # torch has it); plain torch AdamW with the same groups is what it builds.
    decay = [p for p in ref.parameters() if p.ndim > 1]
    no_decay = [p for p in ref.parameters() if p.ndim <= 1]
    opt_ref = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4,
        fused=True,
    )

    # Outputs first: loss and gradients of the same step on the same weights.
    loss_ours = ours(pixel_values=images, labels=labels).loss
    loss_ours.backward()
    loss_ref = F.cross_entropy(ref(images), labels)
    loss_ref.backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}

    ours_grads = timm_state_dict({n: p.grad for n, p in ours.named_parameters()})
    grad_diff = max(
        ((ours_grads[n] - g).abs().max() / g.abs().max().clamp_min(1e-12)).item()
        for n, g in ref_grads.items()
    )
    loss_diff = abs(loss_ours.item() - loss_ref.item())
    ours.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)

    def step_vilt() -> None:
        ours(pixel_values=images, labels=labels).loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_ref() -> None:
        F.cross_entropy(ref(images), labels).backward()
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)

    name = {"vit-small/16": "ViT-S/16", "vit-base/16": "ViT-B/16"}[preset]
    case = Case(
        name=f"{name} training step, 224, batch {batch_size}",
        unit="steps",
        items=1,
        target=">= 1.1x timm",
        goal=1.1,
        outputs={
            "loss_diff": loss_diff,
            "max_rel_grad_diff": grad_diff,
            "summary": f"loss {loss_diff:.0e}, grads {grad_diff:.0e}",
        },
        same_output=loss_diff <= 1e-4 and grad_diff <= 1e-3,
    )
    impls = {"vilt": step_vilt, "timm": step_ref}
    case.seconds, case.spread = measure(impls, repeats=repeats)
    for impl, fn in impls.items():
        case.gflops[impl] = count_flops(fn) / case.seconds[impl] / 1e9
    return case
