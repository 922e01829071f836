"""AdamW with ViLT's parameter groups, and warmup-then-decay learning-rate schedules.

Groups: parameters named by ``model.no_weight_decay()`` (biases, norms, class tokens,
position embeddings) skip weight decay; parameters under ``model.head_prefixes`` (new task
heads) train at ``lr * head_lr_multiplier``, as ViLT fine-tunes its VQA head at 10x. That
makes up to four groups, each named (``decay``, ``no_decay``, ``head_decay``,
``head_no_decay``); empty ones are left out.

Layer-wise learning-rate decay (``layer_decay``, for fine-tuning as BEiT and timm do) splits
each of those by depth: the embeddings are layer 0, encoder block ``i`` (a name with
``blocks.<i>.``) layer ``i + 1``, everything else (the final norm, a pooler, the heads)
layer ``depth + 1``; layer ``l`` trains at ``lr * layer_decay ** (depth + 1 - l)`` (times
the head multiplier for heads). Groups are then named ``layer_<l>_<split>``, the top layer
first (the first group's lr is the one logged), and record ``layer``, ``lr_scale`` and the
``pattern`` of the names they hold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .config import SCHEDULES, TrainingConfig

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "describe_param_groups",
    "fused_adamw_supported",
    "layer_id",
    "lr_lambda",
    "param_groups",
]


def _no_decay_names(model: nn.Module) -> set[str]:
    if hasattr(model, "no_weight_decay"):
        return set(model.no_weight_decay())
    return {n for n, p in model.named_parameters() if p.ndim <= 1}


_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """The depth of parameter ``name`` for layer-wise decay: 0 for embeddings (names with
    ``embeddings.``, class tokens, position tables), ``i + 1`` for encoder block ``i``
    (``blocks.<i>.``), ``depth + 1`` for the rest (final norm, pooler, heads).

    Args:
        name: the parameter's name in the model (``vit.encoder.blocks.3.attn.qkv.weight``).
        depth: the number of encoder blocks.
    """
    block = _BLOCK.search(name)
    if block:
        return int(block.group(1)) + 1
    if "embeddings." in name or name.rsplit(".", 1)[-1] in ("cls_token", "position_embeddings"):
        return 0
    return depth + 1


def _pattern(name: str) -> str:
    """What a group lists for ``name``: its block, its embeddings, or its module."""
    block = _BLOCK.search(name)
    if block:
        return name[: block.end()] + "*"
    if "embeddings." in name:
        return name[: name.index("embeddings.") + len("embeddings.")] + "*"
    return name.rsplit(".", 1)[0] + ".*" if "." in name else name


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_lr_multiplier: float = 1.0,
    head_prefixes: tuple[str, ...] | None = None,
    layer_decay: float | None = None,
) -> list[dict]:
    """Parameter groups for a torch optimizer (frozen parameters are left out).

    Args:
        model: the model.
        lr: the base learning rate.
        weight_decay: for every parameter but those ``model.no_weight_decay()`` names.
        head_lr_multiplier: the learning-rate factor of the heads.
        head_prefixes: the heads' name prefixes (default: ``model.head_prefixes``).
        layer_decay: layer-wise decay of the learning rate (see the module docstring);
            None or 1: one rate for every layer.
    """
    no_decay = _no_decay_names(model)
    heads = tuple(getattr(model, "head_prefixes", ()) if head_prefixes is None else head_prefixes)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depth = 1 + max((int(m.group(1)) for n, _ in named if (m := _BLOCK.search(n))), default=-1)
    by_layer = layer_decay is not None and layer_decay != 1.0
    groups: dict[tuple[int, str], list[tuple[str, nn.Parameter]]] = {}
    for name, param in named:
        head = "head_" if heads and name.startswith(heads) else ""
        split = head + ("no_decay" if name in no_decay else "decay")
        layer = layer_id(name, depth) if by_layer else 0
        groups.setdefault((layer, split), []).append((name, param))
    splits = ("decay", "no_decay", "head_decay", "head_no_decay")
    order = sorted(groups, key=lambda k: (-k[0], splits.index(k[1])))
    out = []
    for layer, split in order:
        members = groups[(layer, split)]
        scale = layer_decay ** (depth + 1 - layer) if by_layer else 1.0
        group = {
            "name": f"layer_{layer:02d}_{split}" if by_layer else split,
            "params": [p for _, p in members],
            "lr": lr * scale * (head_lr_multiplier if split.startswith("head_") else 1.0),
            "weight_decay": 0.0 if split.endswith("no_decay") else weight_decay,
        }
        if by_layer:
            patterns = dict.fromkeys(_pattern(n) for n, _ in members)
            group.update(layer=layer, lr_scale=scale, pattern=", ".join(patterns))
        out.append(group)
    return out


def describe_param_groups(groups: list[dict], base_lr: float) -> list[str]:
    """One line per optimizer group: its name, learning rate (and its ratio to
    ``base_lr``), weight decay, tensors and parameters, and the names it holds when it
    records them (layer-wise decay).

    Args:
        groups: the optimizer's ``param_groups`` (or :func:`param_groups`' result).
        base_lr: the rate the ratios are relative to (the config's ``lr``).
    """
    lines = []
    for g in groups:
        count = sum(p.numel() for p in g["params"])
        line = (
            f"{g.get('name', '?'):<24} lr {g['lr']:.3g} (x{g['lr'] / base_lr:.4g}) "
            f"wd {g['weight_decay']:g} | {len(g['params'])} tensors, {count:,} params"
        )
        if g.get("pattern"):
            line += f" | {g['pattern']}"
        lines.append(line)
    return lines


def build_optimizer(
    model: nn.Module, config: TrainingConfig, *, device: torch.device | None = None
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. ``config.fused`` None picks torch's fused kernel where
    torch has one for the device (``device``, else where the parameters are: CUDA, and CPU
    since torch 2.4) and the foreach one elsewhere.

    The fused kernel updates each parameter in one pass with no temporaries, so it makes
    fewer passes over memory than foreach and keeps no extra copy of the weights at its peak
    (foreach's intermediate lists are as large as the model).

    Args:
        model: the model; its trainable parameters are grouped by :func:`param_groups`
            (``model.no_weight_decay()``, ``model.head_prefixes``).
        config: its lr, weight_decay, head_lr_multiplier, layer_decay, adam_betas,
            adam_eps and fused.
        device: where the parameters will train (default: where the first one is now).

    Raises:
        ValueError: when the model has no trainable parameters.
    """
    groups = param_groups(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        head_lr_multiplier=config.head_lr_multiplier,
        layer_decay=config.layer_decay,
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
    rate for most of a short run, where cosine has already halved it by the middle.

    Args:
        total_steps: the run's optimizer steps.
        warmup_steps: the linear warmup's steps (0: none).
        schedule: "cosine", "linear", "constant" or "wsd".
        min_lr_ratio: the factor the decay ends at (cosine, linear, wsd).
        cooldown_steps: wsd only: the steps of the final linear decay.

    Returns:
        ``factor(step) -> float``, for ``torch.optim.lr_scheduler.LambdaLR``.

    Raises:
        ValueError: for an unknown ``schedule``.
    """
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
    """A LambdaLR over ``total_steps`` optimizer steps with the config's warmup and schedule.

    Args:
        optimizer: the (unwrapped) optimizer; each group keeps its own base lr.
        config: its warmup, schedule, cooldown and min_lr_ratio (see :func:`lr_lambda`).
        total_steps: the run's optimizer steps; fractional warmup and cooldown are of these.
    """
    factor = lr_lambda(
        total_steps=total_steps,
        warmup_steps=config.warmup_steps(total_steps),
        schedule=config.schedule,
        min_lr_ratio=config.min_lr_ratio,
        cooldown_steps=config.cooldown_steps(total_steps),
    )
    return LambdaLR(optimizer, factor)
