"""Embedding and scoring image-text pairs with a loaded ViLT model.

``embed(images, texts, model)`` returns the pooled joint representation of each pair;
``Embedder`` keeps the model and processor loaded for repeated calls and, when the model has an
image-text matching head, scores pairs (``match``). Pairs are batched by size to save padding;
padding never changes a result, so a pair's embedding does not depend on its batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .modeling import (
    PreTrainedModel,
    ViltForImageTextMatching,
    ViltForPreTraining,
    ViltModel,
    load_model,
)

ImageLike = Any  # PIL.Image.Image | str | os.PathLike | numpy.ndarray


def _backbone(model: torch.nn.Module) -> ViltModel:
    if isinstance(model, ViltModel):
        return model
    inner = getattr(model, "vilt", None)
    if isinstance(inner, ViltModel):
        return inner
    raise TypeError(f"embedding needs a ViLT model, got {type(model).__name__}")


class Embedder:
    """A ViLT model and its processor, ready to embed or score many image-text pairs."""

    def __init__(
        self,
        model: PreTrainedModel,
        processor: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        progress: bool | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.backbone = _backbone(model)
        self.processor = processor
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.progress = progress

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, **options: Any) -> Embedder:
        """Load the model (any ViLT class) and the processor saved beside it."""
        from .processing import ViltProcessor

        model = load_model(path_or_name)
        return cls(model, ViltProcessor.from_pretrained(path_or_name), **options)

    # -- batching -----------------------------------------------------------------------------
    def _batches(self, images: Sequence[ImageLike], texts: Sequence[str], batch_size: int | None):
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, one per image, not one string")
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts; pass one per pair")
        n = len(texts)
        size = batch_size or self.batch_size
        # Similar text lengths side by side: less padding, same results.
        order = sorted(range(n), key=lambda i: len(texts[i]))
        show = self.progress if self.progress is not None else n > 8 * size
        bar = tqdm(total=n, desc="pairs", unit="pair", disable=not show)
        for start in range(0, n, size):
            idx = order[start : start + size]
            batch = self.processor(
                images=[images[i] for i in idx], text=[texts[i] for i in idx], return_tensors="pt"
            )
            inputs = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
            yield idx, inputs
            bar.update(len(idx))
        bar.close()

    @torch.inference_mode()
    def __call__(
        self, images: Sequence[ImageLike], texts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """(N, hidden_size) float32 tensor on the CPU: the pooled state of each pair, in order."""
        out = torch.empty(len(texts), self.backbone.config.hidden_size)
        for idx, inputs in self._batches(images, texts, batch_size):
            pooled = self.backbone(**inputs).pooler_output
            out[idx] = pooled.float().cpu()
        return out

    @torch.inference_mode()
    def scores(
        self, images: Sequence[ImageLike], texts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """(N,) match log-odds of each pair from the ITM head."""
        if not isinstance(self.model, ViltForImageTextMatching | ViltForPreTraining):
            raise TypeError(
                f"{type(self.model).__name__} has no image-text matching head; load an ITM "
                "checkpoint (ViltForImageTextMatching or ViltForPreTraining)"
            )
        out = torch.empty(len(texts))
        for idx, inputs in self._batches(images, texts, batch_size):
            out[idx] = self.model(**inputs).scores.float().cpu()
        return out

    def match(
        self, images: Sequence[ImageLike], texts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """(N,) probability that each image and text belong together."""
        return torch.sigmoid(self.scores(images, texts, batch_size=batch_size))


def embed(
    images: Sequence[ImageLike],
    texts: Sequence[str],
    model: PreTrainedModel | str | os.PathLike,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    *,
    processor: Any = None,
) -> torch.Tensor:
    """(N, hidden_size) pooled joint representation, one row per image-text pair.

    ``model`` is a checkpoint path or name (its processor is loaded with it) or a loaded ViLT
    model, in which case pass its ``processor`` too.
    """
    if isinstance(model, str | os.PathLike):
        embedder = Embedder.from_pretrained(model, device=device, batch_size=batch_size)
    else:
        if processor is None:
            raise ValueError(
                "embed() with a loaded model needs its processor: embed(..., processor=...)"
            )
        embedder = Embedder(model, processor, device=device, batch_size=batch_size)
    return embedder(images, texts)
