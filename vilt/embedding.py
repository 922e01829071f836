"""Embedding and scoring image-text pairs with a ViLT model, and images with a ViT.

``embed(images, texts, model)`` returns the pooled joint representation of each pair (the
tanh-pooled [CLS] state that ViLT's heads read); ``embed(images, model=vit)`` returns each
image's ViT embedding (the features its classifier reads: the final-norm class token, or the
mean patch token for ``pooling="mean"``). :class:`Embedder` keeps a model and its processor
loaded for repeated calls and, when the model has an image-text matching head, scores pairs
(``match``). Padding never changes a result, so a pair's embedding does not
depend on what else is in its batch; pairs are therefore free to be reordered into batches
that pad little, and each image is decoded once per call however many pairs it is in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .modeling import (
    PreTrainedModel,
    ViltForImageTextMatching,
    ViltForPreTraining,
    ViltModel,
    ViTForImageClassification,
    ViTModel,
    load_model,
)
from .processing import ImageInputError

ImageLike = Any  # PIL.Image.Image | str | os.PathLike | numpy.ndarray | torch.Tensor

__all__ = ["Embedder", "ImageLike", "embed"]


def vilt_backbone(model: Any) -> ViltModel:
    """The ViltModel inside any ViLT class; a clear TypeError for anything else."""
    if isinstance(model, ViltModel):
        return model
    inner = getattr(model, "vilt", None)
    if isinstance(inner, ViltModel):
        return inner
    raise TypeError(
        f"embedding needs a ViLT model (ViltModel or a ViltFor... class), got "
        f"{type(model).__name__}"
    )


def vit_backbone(model: Any) -> ViTModel | None:
    """The ViTModel inside a ViT class, or None for anything else."""
    if isinstance(model, ViTModel):
        return model
    if isinstance(model, ViTForImageClassification):
        return model.vit
    return None


def image_processor_for(path: str | os.PathLike, model: PreTrainedModel) -> Any:
    """The processor saved beside a checkpoint: a ViltProcessor for ViLT, the image processor
    for ViT (the model's own image size when none was saved)."""
    from .processing import ViltProcessor, ViTImageProcessor

    if vit_backbone(model) is None:
        return ViltProcessor.from_pretrained(path)
    try:
        return ViTImageProcessor.from_pretrained(path)
    except FileNotFoundError:  # no preprocessor_config.json: the model's own image size
        return ViTImageProcessor.from_config(model.config)


def check_texts(texts: Sequence[str]) -> None:
    """A list of strings, not one string: raise a clear error otherwise."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, one per image, not one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, not a string")


def check_images(images: Sequence[ImageLike]) -> None:
    """A list of images (or a 4-D array of them), not one image: a clear error otherwise."""
    single = isinstance(images, str | os.PathLike | Image.Image) or (
        isinstance(images, np.ndarray | torch.Tensor) and images.ndim < 4
    )
    if single:
        raise TypeError("images must be a list of images, one per text, not a single image")


def check_pairs(images: Sequence[ImageLike], texts: Sequence[str]) -> None:
    """One image per text, texts a list of strings: raise a clear error otherwise."""
    check_texts(texts)
    check_images(images)
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts; pass one per pair")


class Embedder:
    """A model and its processor, ready to embed (or score) many inputs.

    A ViLT model of any class embeds image-text pairs (and, with an image-text matching
    head, scores them: :meth:`match`); a ViT model embeds images alone. The model is put in
    eval mode.

    Args:
        model: a ViLT model (any class) or a ViT model (ViTModel, ViTForImageClassification).
        processor: its ViltProcessor (ViLT) or image processor (ViT).
        device: where to run (the model is moved there); None keeps the model where it is.
        batch_size: inputs per forward pass.
        progress: show a progress bar (None: only for calls of more than 8 batches).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        progress: bool | None = None,
    ) -> None:
        vit = vit_backbone(model)
        self.image_only = vit is not None
        if vit is not None:
            self.backbone: ViTModel | ViltModel = vit
            if not hasattr(processor, "preprocess_one") or hasattr(processor, "tokenizer"):
                raise TypeError(
                    f"a ViT model embeds images with its image processor (ViTImageProcessor), "
                    f"got {type(processor).__name__}"
                )
        else:
            self.backbone = vilt_backbone(model)
            if self.backbone.pooler is None:
                raise ValueError("the model was built without a pooler; embeddings need one")
            if not (hasattr(processor, "tokenizer") and hasattr(processor, "image_processor")):
                raise TypeError(
                    f"processor must be a ViltProcessor (tokenizer + image processor), got "
                    f"{type(processor).__name__}"
                )
            processor.check_model(self.backbone.config, type(model).__name__)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if device is not None:
            model.to(device)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.processor = processor
        self.batch_size = int(batch_size)
        self.progress = progress

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        **options: Any,
    ) -> Embedder:
        """Load the model (any ViLT or ViT class) and the processor saved beside it;
        ``device`` defaults to CUDA when there is one.

        Args:
            path_or_name: a checkpoint directory or file, or a name ``load_model`` resolves.
            device: where to run (None: "cuda" when available, else "cpu").
            **options: the constructor's other keywords (``batch_size``, ``progress``).

        Raises:
            CheckpointError: when the checkpoint cannot be read or names no class vilt builds.
            TypeError: for a checkpoint that is neither a ViLT nor a ViT model.
            FileNotFoundError: for a ViLT checkpoint with no tokenizer files beside it.
        """
        model = load_model(path_or_name)
        if vit_backbone(model) is None:
            vilt_backbone(model)  # anything else is named as such, before its missing files
        processor = image_processor_for(path_or_name, model)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, processor, device=device, **options)

    @property
    def has_itm_head(self) -> bool:
        return isinstance(self.model, ViltForImageTextMatching | ViltForPreTraining)

    def __call__(
        self,
        images: Sequence[ImageLike],
        texts: Sequence[str] | None = None,
        *,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """(N, hidden_size) float32 tensor on the CPU, one row per input, in order.

        Args:
            images: the images (PIL images, paths, arrays or tensors).
            texts: one text per image for a ViLT model; none for a ViT model.
            batch_size: overrides the Embedder's for this call.
        """
        if self.image_only:
            if texts is not None:
                raise TypeError(f"{type(self.model).__name__} embeds images alone: pass no texts")
            check_images(images)
            return self._run_images(images, batch_size)
        if texts is None:
            raise TypeError("a ViLT model embeds image-text pairs: pass texts, one per image")
        check_pairs(images, texts)
        pairs = [(i, i) for i in range(len(texts))]
        return self._run(images, texts, pairs, batch_size, itm=False)

    def scores(
        self, images: Sequence[ImageLike], texts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """(N,) match log-odds of each pair from the ITM head.

        Args:
            images: the images (PIL images, paths, arrays or tensors), one per text.
            texts: the texts; pair i is (``images[i]``, ``texts[i]``).
            batch_size: overrides the Embedder's for this call.

        Returns:
            A float32 CPU tensor: the ITM logit difference (match minus no match) per pair.

        Raises:
            TypeError: when the model has no image-text matching head, or the inputs are not
                lists (one string, one image).
            ValueError: when the numbers of images and texts differ.
        """
        check_pairs(images, texts)
        return self.score_pairs(images, texts, [(i, i) for i in range(len(texts))], batch_size)

    def match(
        self, images: Sequence[ImageLike], texts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """(N,) probability that each image and text belong together (ITM head).

        Args:
            images: the images (PIL images, paths, arrays or tensors), one per text.
            texts: the texts; pair i is (``images[i]``, ``texts[i]``).
            batch_size: overrides the Embedder's for this call.

        Returns:
            A float32 CPU tensor: the sigmoid of :meth:`scores`.
        """
        return torch.sigmoid(self.scores(images, texts, batch_size=batch_size))

    def score_pairs(
        self,
        images: Sequence[ImageLike],
        texts: Sequence[str],
        pairs: Sequence[tuple[int, int]],
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """(P,) ITM log-odds of ``pairs`` of (image index, text index) into ``images`` and
        ``texts``; each image is decoded and resized once however many pairs it is in.

        Args:
            images: the images (PIL images, paths, arrays or tensors).
            texts: the texts (a list of strings).
            pairs: (image index, text index) per score, e.g. every image with every text.
            batch_size: overrides the Embedder's for this call.

        Returns:
            A float32 CPU tensor: the ITM logit difference per pair, in the order of ``pairs``.

        Raises:
            TypeError: when the model has no image-text matching head, or ``texts`` is not a
                list of strings.
            IndexError: for a pair whose index is outside ``images`` or ``texts``.
        """
        if not self.has_itm_head:
            raise TypeError(
                f"{type(self.model).__name__} has no image-text matching head; load an ITM "
                "checkpoint (ViltForImageTextMatching or ViltForPreTraining)"
            )
        check_texts(texts)
        for p, (i, t) in enumerate(pairs):
            if not (0 <= i < len(images) and 0 <= t < len(texts)):
                raise IndexError(
                    f"pair {p} = ({i}, {t}) is outside {len(images)} images x {len(texts)} texts"
                )
        return self._run(images, texts, list(pairs), batch_size, itm=True)

    # -- batching -----------------------------------------------------------------------------
    @torch.no_grad()
    def _run(
        self,
        images: Sequence[ImageLike],
        texts: Sequence[str],
        pairs: list[tuple[int, int]],
        batch_size: int | None,
        *,
        itm: bool,
    ) -> torch.Tensor:
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        out = torch.empty(len(pairs), *(() if itm else (self.backbone.config.hidden_size,)))
        run = (
            (lambda x: self.model(**x).scores)
            if itm
            else (lambda x: self.backbone(**x).pooler_output)
        )
        for rows, inputs in self._batches(images, texts, pairs, size):
            out[rows] = run(inputs).float().cpu()
        return out

    @torch.no_grad()
    def _run_images(self, images: Sequence[ImageLike], batch_size: int | None) -> torch.Tensor:
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        mean = self.backbone.config.pooling == "mean"
        out = torch.empty(len(images), self.backbone.config.hidden_size)
        show = self.progress if self.progress is not None else len(images) > 8 * size
        with (
            tqdm(total=len(images), desc="images", unit="image", disable=not show) as bar,
            ThreadPoolExecutor(max(1, min(size, torch.get_num_threads()))) as pool,
        ):
            for start in range(0, len(images), size):
                rows = range(start, min(start + size, len(images)))
                tensors = list(pool.map(lambda i: self._preprocess(images[i], i), rows))
                pixels = self.processor.pad(tensors)["pixel_values"].to(self.device)
                tokens = self.backbone.forward_features(pixels, interpolate_pos_encoding=True)
                pooled = tokens[:, 1:].mean(dim=1) if mean else tokens[:, 0]
                out[start : start + len(rows)] = pooled.float().cpu()
                bar.update(len(rows))
        return out

    def _batches(
        self,
        images: Sequence[ImageLike],
        texts: Sequence[str],
        pairs: list[tuple[int, int]],
        size: int,
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """(rows of ``pairs``, model inputs) per batch. An image shared by several pairs has
        them run back to back, so that it is preprocessed once; otherwise texts of similar
        length go together, to pad less."""
        shared = len({i for i, _ in pairs}) < len(pairs)
        order = sorted(
            range(len(pairs)),
            key=(lambda r: (pairs[r][0], len(texts[pairs[r][1]])))
            if shared
            else (lambda r: len(texts[pairs[r][1]])),
        )
        show = self.progress if self.progress is not None else len(pairs) > 8 * size
        cache: dict[int, torch.Tensor] = {}
        tokenizer = self.processor.tokenizer
        with (
            tqdm(total=len(pairs), desc="pairs", unit="pair", disable=not show) as bar,
            ThreadPoolExecutor(max(1, min(size, torch.get_num_threads()))) as pool,
        ):
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                needed = list(dict.fromkeys(pairs[r][0] for r in rows))
                fresh = [i for i in needed if i not in cache]
                done = pool.map(lambda i: self._preprocess(images[i], i), fresh)
                cache = {i: cache[i] for i in needed if i in cache} | dict(
                    zip(fresh, done, strict=True)
                )
                pixels = self.processor.image_processor.pad([cache[pairs[r][0]] for r in rows])
                text = tokenizer(
                    [texts[pairs[r][1]] for r in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.processor.max_length,
                    return_tensors="pt",
                )
                inputs = {**text, **pixels}
                yield rows, {k: v.to(self.device) for k, v in inputs.items()}
                bar.update(len(rows))

    def _preprocess(self, image: ImageLike, index: int) -> torch.Tensor:
        images = self.processor if self.image_only else self.processor.image_processor
        try:
            return images.preprocess_one(image, normalize=False)
        except ImageInputError as err:  # the message names the file; add the position
            raise ImageInputError(f"image {index}: {err}") from None
        except TypeError as err:  # not an image at all
            raise TypeError(f"image {index}: {err}") from None

    def __repr__(self) -> str:
        return (
            f"Embedder({type(self.model).__name__}, device={self.device}, "
            f"batch_size={self.batch_size})"
        )


def embed(
    images: Sequence[ImageLike],
    texts: Sequence[str] | None = None,
    model: PreTrainedModel | str | os.PathLike | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    *,
    processor: Any = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """(N, hidden_size) float32 embeddings: one row per image-text pair for a ViLT model (the
    pooled joint representation), one row per image for a ViT model (``texts`` left out).

    Args:
        images: the images (PIL images, paths, arrays or tensors).
        texts: one text per image (ViLT); None for a ViT.
        model: a checkpoint path or name (its processor is loaded with it), or a loaded model
            of any ViLT or ViT class, in which case pass its ``processor`` too; the model is
            left in the train/eval mode it came in (moved to ``device`` when one is given).
        batch_size: inputs per forward pass.
        device: where to run (default: where the model is; for a path, CUDA when there is one).
        processor: the processor of a loaded model.
        progress: show a progress bar (None: only for long calls).
    """
    if model is None:
        raise TypeError(
            "embed() needs a model: embed(images, texts, model) or embed(images, model=vit)"
        )
    if isinstance(model, str | os.PathLike):
        embedder = Embedder.from_pretrained(
            model, device=device, batch_size=batch_size, progress=progress
        )
        return embedder(images, texts)
    if vit_backbone(model) is None:
        vilt_backbone(model)
    if processor is None:
        raise ValueError("embed() with a loaded model needs its processor: embed(..., processor=)")
    training = model.training
    try:
        embedder = Embedder(
            model, processor, device=device, batch_size=batch_size, progress=progress
        )
        return embedder(images, texts)
    finally:
        model.train(training)
