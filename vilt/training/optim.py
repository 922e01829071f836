"""AdamW with ViLT's parameter groups, and warmup-then-decay learning-rate schedules.

Groups: parameters named by ``model.no_weight_decay()`` (biases, norms, class tokens,
position embeddings) skip weight decay; parameters under ``model.head_prefixes`` (new task
heads) train at ``lr * head_lr_multiplier``, as ViLT fine-tunes its VQA head at 10x. That
makes up to four groups, each named (``decay``, ``no_decay``, ``head_decay``,
``head_no_decay``); empty ones are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .config import SCHEDULES, TrainingConfig

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "fused_adamw_supported",
    "lr_lambda",
    "param_groups",
]


def _no_decay_names(model: nn.Module) -> set[str]:
    if hasattr(model, "no_weight_decay"):
        return set(model.no_weight_decay())
    return {n for n, p in model.named_parameters() if p.ndim <= 1}


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_lr_multiplier: float = 1.0,
    head_prefixes: tuple[str, ...] | None = None,
) -> list[dict]:
    """Parameter groups for a torch optimizer (frozen parameters are left out).

    ``head_prefixes`` defaults to ``model.head_prefixes`` (empty for models without heads)."""
    no_decay = _no_decay_names(model)
    heads = tuple(getattr(model, "head_prefixes", ()) if head_prefixes is None else head_prefixes)
    groups: dict[str, list[nn.Parameter]] = {
        "decay": [],
        "no_decay": [],
        "head_decay": [],
        "head_no_decay": [],
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        head = "head_" if heads and name.startswith(heads) else ""
        groups[head + ("no_decay" if name in no_decay else "decay")].append(param)
    out = []
    for name, params in groups.items():
        if not params:
            continue
        out.append(
            {
                "name": name,
                "params": params,
                "lr": lr * (head_lr_multiplier if name.startswith("head_") else 1.0),
                "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay,
            }
        )
    return out


def build_optimizer(
    model: nn.Module, config: TrainingConfig, *, device: torch.device | None = None
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. ``config.fused`` None picks torch's fused kernel where
    torch has one for the device (``device``, else where the parameters are: CUDA, and CPU
    since torch 2.4) and the foreach one elsewhere.

    The fused kernel updates each parameter in one pass with no temporaries, so it makes
    fewer passes over memory than foreach and keeps no extra copy of the weights at its peak
    (foreach's intermediate lists are as large as the model)."""
    groups = param_groups(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        head_lr_multiplier=config.head_lr_multiplier,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if device is None:
        device = groups[0]["params"][0].device
    fused = config.fused if config.fused is not None else fused_adamw_supported(device)
    kwargs = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=config.adam_betas, eps=config.adam_eps, **kwargs
    )


def fused_adamw_supported(device: torch.device | str) -> bool:
    """Whether this torch has a fused AdamW kernel for ``device``'s type."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # older torch: fused AdamW exists on CUDA only
        return torch.device(device).type == "cuda"
    return torch.device(device).type in _get_fused_kernels_supported_devices()


def lr_lambda(
    *,
    total_steps: int,
    warmup_steps: int,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
    cooldown_steps: int = 0,
) -> Callable[[int], float]:
    """The lr factor of step ``s`` (0-based): linear warmup to 1 over ``warmup_steps``
    (the first step already trains, at 1/warmup), then cosine or linear decay that reaches
    ``min_lr_ratio`` one step after the last, or constant, or wsd (warmup-stable-decay):
    constant, then a linear decay over the last ``cooldown_steps`` steps. wsd keeps the peak
    rate for most of a short run, where cosine has already halved it by the middle."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    total = max(int(total_steps), 1)
    warm = max(int(warmup_steps), 0)
    # the decay starts after the warmup, or (wsd) where the cooldown begins
    start = max(warm, total - max(int(cooldown_steps), 0)) if schedule == "wsd" else warm

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant" or step < start:
            return 1.0
        progress = min((step - start) / max(total - start, 1), 1.0)
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainingConfig, *, total_steps: int
) -> LambdaLR:
    """A LambdaLR over ``total_steps`` optimizer steps with the config's warmup and schedule."""
    factor = lr_lambda(
        total_steps=total_steps,
        warmup_steps=config.warmup_steps(total_steps),
        schedule=config.schedule,
        min_lr_ratio=config.min_lr_ratio,
        cooldown_steps=config.cooldown_steps(total_steps),
    )
    return LambdaLR(optimizer, factor)
