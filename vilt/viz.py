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
from PIL import Image, ImageDraw, ImageFont

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
    if output.grid_size is None or output.attentions is None:
        raise ValueError(
            "need a ViT or ViLT model output with attentions: run it with output_attentions=True"
        )
    length = output.attentions[0].shape[-1]
    if not 0 <= query < length:
        raise ValueError(f"query token {query} is outside the sequence of {length} tokens")
    keep = output.attention_mask
    if keep is not None and not bool(keep[:, query].all()):
        bad = (keep[:, query] == 0).nonzero(as_tuple=True)[0].tolist()
        raise ValueError(f"query token {query} is padding in sample(s) {bad}")
    rollout = attention_rollout(output.attentions, **rollout_options)[:, query]  # (B, N)
    b = rollout.shape[0]
    gh, gw = output.grid_size
    start = (output.text_length or 0) + 1  # the image tokens follow the (image) class token
    weights = rollout[:, start:]
    if output.patch_index is None:  # ViT: every patch in raster order
        index = torch.arange(gh * gw, device=weights.device).expand(b, -1)
    else:  # ViLT: the patch each token came from; padding tokens weigh nothing
        index = output.patch_index[:, 1:].to(weights.device)
        if keep is not None:
            weights = weights * keep[:, start:].to(weights.dtype)
    maps = torch.zeros(b, gh * gw, device=weights.device)
    maps.scatter_add_(1, index.long(), weights)
    maps = maps / maps.amax(dim=1, keepdim=True).clamp_min(1e-12)
    return maps.view(b, gh, gw).cpu()


def crop_to_image(heatmap: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """One (grid_h, grid_w) map cut to the patches of the real image in ``pixel_mask``
    (H, W), dropping the padding rows and columns of a padded batch."""
    gh, gw = heatmap.shape
    ph, pw = pixel_mask.shape[0] // gh, pixel_mask.shape[1] // gw
    rows = int(pixel_mask[:, 0].sum()) // ph
    cols = int(pixel_mask[0, :].sum()) // pw
    return heatmap[: max(rows, 1), : max(cols, 1)]


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
    panels = [image.convert("RGB"), overlay(image, heatmap)]
    return _save_panels(panels, ["image", "attention rollout"], path, title=title)


def save_token_attention_figure(
    image: Image.Image,
    heatmaps: Sequence[torch.Tensor | np.ndarray],
    tokens: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    columns: int = 4,
) -> Path:
    """Write a PNG with one attention overlay per token, each labelled with its token."""
    if len(heatmaps) != len(tokens):
        raise ValueError(f"got {len(heatmaps)} heatmaps for {len(tokens)} tokens")
    panels = [overlay(image, heat) for heat in heatmaps]
    return _save_panels(panels, list(tokens), path, title=title, columns=columns)


def _save_panels(
    panels: list[Image.Image],
    labels: list[str],
    path: str | os.PathLike,
    *,
    title: str | None,
    columns: int = 4,
    height: int = 192,
) -> Path:
    """Panels scaled to one height in a grid, a label under each, a title on top; drawn with
    PIL alone so that ``vilt attention`` needs no plotting library."""
    font = ImageFont.load_default(size=14)
    scaled = [p.resize((max(1, round(p.width * height / p.height)), height)) for p in panels]
    width = max(p.width for p in scaled)
    columns = max(1, min(columns, len(scaled)))
    rows = -(-len(scaled) // columns)
    pad, label_h = 8, 22
    # as many title lines as the title holds: a two-line title must not run under the panels
    top = pad + (label_h * (title.count("\n") + 1) if title else 0)
    sheet = Image.new(
        "RGB",
        (columns * (width + pad) + pad, top + rows * (height + label_h + pad)),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad // 2), title, fill="black", font=font)
    for n, (panel, label) in enumerate(zip(scaled, labels, strict=True)):
        x = pad + (n % columns) * (width + pad)
        y = top + (n // columns) * (height + label_h + pad)
        sheet.paste(panel, (x, y))
        draw.text((x, y + height + 3), label, fill="black", font=font)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out


def _read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """metrics.csv -> {column: [(step, value), ...]} for every numeric column."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "step" not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: no 'step' column; is this a metrics.csv?")
        for row in reader:
            try:
                step = float(row["step"])
            except (TypeError, ValueError):
                continue  # a line cut short by a crash
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
    try:
        from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is
    except ImportError:
        raise ImportError(
            "training curves need matplotlib: pip install matplotlib (or vilt[recipes])"
        ) from None

    paths = [metrics] if isinstance(metrics, str | os.PathLike) else list(metrics)
    if not paths:
        raise ValueError("no metrics files given")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} metrics files")
    runs = [_read_metrics(Path(p)) for p in paths]
    names = list(labels) if labels else [Path(p).parent.name or str(p) for p in paths]
    skip = {"lr", "epoch", "samples_per_s", "throughput", "time", "wall_time"}
    columns = list(keys) if keys else sorted({k for r in runs for k in r if k not in skip})
    if not columns:
        raise ValueError(f"no numeric columns to plot in {', '.join(map(str, paths))}")
    missing = [k for k in columns if not any(k in r for r in runs)]
    if missing:
        raise ValueError(f"no numeric column {', '.join(missing)} in {', '.join(map(str, paths))}")
    fig = Figure(figsize=(4 * len(columns), 3.2))
    axes = fig.subplots(1, len(columns), squeeze=False)
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
    return out
