"""Tiny checkpoints for the tests of embedding, retrieval, the CLI and the attention maps: a
vilt-test or vit-test model with seeded random weights (noised, so that every pair and every
patch gets its own numbers), saved with its processor and a WordPiece vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vilt

TEXTS = [
    "a red circle",
    "what color is the big square on the left side of the picture",
    "green",
    "is there a blue triangle",
    "how many shapes are there in this image",
    "yellow rectangle at the bottom",
]
# (height, width): square, wide, tall and small pictures -> different patch grids
SIZES = [(32, 32), (40, 64), (64, 40), (20, 30), (48, 48), (30, 50)]


def tokenizer() -> vilt.Tokenizer:
    return vilt.train_tokenizer(TEXTS * 3, vocab_size=100)


def noise(model: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)
    return model.eval()


def vilt_model(cls: type = vilt.ViltForImageTextMatching, **config) -> vilt.PreTrainedModel:
    torch.manual_seed(0)
    return noise(cls(vilt.ViltConfig.from_preset("vilt-test", **config)))


def save_vilt(directory: Path, cls: type = vilt.ViltForImageTextMatching, **config) -> Path:
    """A ViLT checkpoint of class ``cls`` with its ViltProcessor beside it."""
    model = vilt_model(cls, **config)
    model.save_pretrained(directory)
    vilt.ViltProcessor.from_config(model.config, tokenizer()).save_pretrained(directory)
    return Path(directory)


def save_vit(directory: Path, **config) -> Path:
    """A ViT classifier checkpoint with its image processor beside it."""
    torch.manual_seed(0)
    model = noise(vilt.ViTForImageClassification(vilt.ViTConfig.from_preset("vit-test", **config)))
    model.save_pretrained(directory)
    vilt.ViTImageProcessor.from_config(model.config).save_pretrained(directory)
    return Path(directory)


def images(n: int = len(SIZES), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*SIZES[i % len(SIZES)], 3), dtype=np.uint8) for i in range(n)]


def image_files(directory: Path, n: int = len(SIZES), seed: int = 0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, array in enumerate(images(n, seed)):
        paths.append(directory / f"image{i}.png")
        Image.fromarray(array).save(paths[-1])
    return paths
