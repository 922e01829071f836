"""Seeing what a model does: attention rollout heatmaps over images, and training curves.

Attention rollout (Abnar & Zuidema, 2020) multiplies the head-averaged attention of every layer,
each mixed with the identity for the residual path; the row of the class token (or of a text
token, for ViLT) over the image patches says which patches the prediction drew on.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .modeling.outputs import EncoderOutput


def attention_rollout(
    attentions: Sequence[torch.Tensor], *, head_fusion: str = "mean", residual: float = 0.5
) -> torch.Tensor:
    """(B, H, N, N) per layer -> (B, N, N): how much each token draws on each input token."""
    if not attentions:
        raise ValueError("no attention weights: run the model with output_attentions=True")
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {', '.join(fuse)}, got {head_fusion!r}")
    n = attentions[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float32, device=attentions[0].device)
    result = eye.expand(attentions[0].shape[0], n, n)
    for layer in attentions:
        a = fuse[head_fusion](layer.detach().float())
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result


def patch_heatmaps(output: EncoderOutput, *, query: int = 0, **rollout_options) -> torch.Tensor:
    """(B, grid_h, grid_w) rollout weight of each image patch, seen from token ``query``.

    ``query`` 0 is the class token (ViT) or the text [CLS] (ViLT); for ViLT any text position
    works too. Patches that were not in the sequence (padding, sampled out) get 0. Each map is
    scaled to a maximum of 1.
    """
    if output.grid_size is None:
        raise ValueError("the output carries no patch grid; pass a ViT or ViLT model output")
    rollout = attention_rollout(output.attentions, **rollout_options)[:, query]  # (B, N)
    b = rollout.shape[0]
    gh, gw = output.grid_size
    start = output.text_length or 0
    if output.patch_index is None:  # ViT: every patch in raster order after the class token
        weights = rollout[:, start + 1 :]
        index = torch.arange(gh * gw, device=weights.device).expand(b, -1)
    else:
        weights = rollout[:, start + 1 :]
        index = output.patch_index[:, 1:].to(weights.device)
        if output.attention_mask is not None:
            weights = weights * output.attention_mask[:, start + 1 :].to(weights.dtype)
    maps = torch.zeros(b, gh * gw, device=weights.device)
    maps.scatter_add_(1, index.long(), weights)
    maps = maps / maps.amax(dim=1, keepdim=True).clamp_min(1e-12)
    return maps.view(b, gh, gw).cpu()


def overlay(
    image: Image.Image, heatmap: torch.Tensor | np.ndarray, *, alpha: float = 0.5
) -> Image.Image:
    """The image with a heatmap (values in [0, 1], any grid size) blended over it in red-yellow."""
    heat = np.asarray(heatmap, dtype=np.float32)
    heat = np.clip(heat, 0.0, 1.0)
    rgb = image.convert("RGB")
    small = Image.fromarray((heat * 255).astype(np.uint8), mode="L")
    up = np.asarray(small.resize(rgb.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    colour = np.stack([np.ones_like(up), up, np.zeros_like(up)], axis=-1) * 255.0
    base = np.asarray(rgb, dtype=np.float32)
    weight = alpha * up[..., None]
    mixed = base * (1 - weight) + colour * weight
    return Image.fromarray(mixed.clip(0, 255).astype(np.uint8))


def save_attention_figure(
    image: Image.Image,
    heatmap: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Write a PNG with the image and its attention overlay side by side (and a title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 3.4))
    axes[0].imshow(image.convert("RGB"))
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(overlay(image, heatmap))
    axes[1].set_title("attention rollout", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """metrics.csv -> {column: [(step, value), ...]} for every numeric column."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for key, value in row.items():
                if key in ("step", None) or value in ("", None):
                    continue
                with contextlib.suppress(ValueError):  # a text column: not plotted
                    number = float(value)
                    series.setdefault(key, []).append((step, number))
    return series


def plot_training_curves(
    metrics: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> Path:
    """Plot the loss and metrics of one or several runs' metrics.csv into one PNG.

    Several runs (e.g. from scratch vs from a pretrained checkpoint) share each panel, so the
    curves compare directly. ``keys`` picks the columns (default: every numeric one but lr and
    throughput).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [metrics] if isinstance(metrics, str | os.PathLike) else list(metrics)
    runs = [_read_metrics(Path(p)) for p in paths]
    names = list(labels) if labels else [Path(p).parent.name or str(p) for p in paths]
    skip = {"lr", "epoch", "samples_per_s", "throughput", "time", "wall_time"}
    columns = list(keys) if keys else sorted({k for r in runs for k in r if k not in skip})
    if not columns:
        raise ValueError(f"no numeric columns to plot in {', '.join(map(str, paths))}")
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        for run, name in zip(runs, names, strict=True):
            points = run.get(column)
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
        ax.set_title(column, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
