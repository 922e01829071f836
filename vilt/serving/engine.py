"""What the server runs: a loaded model and its processor, the checks on each request's image
and text, and one batched forward per task.

A request is prepared alone (its image decoded, checked and resized; its text checked), then
joined with others into one batch: images padded to the largest, texts to the longest. ViLT
masks every padded patch and token, so a request's answer does not depend on what else is in
its batch (the tests pin it). Nothing here imports FastAPI: the HTTP layer is ``app.py``.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from ..embedding import image_processor_for, vilt_backbone
from ..modeling import (
    PreTrainedModel,
    ViltForImageTextMatching,
    ViltForPreTraining,
    ViltForQuestionAnswering,
    ViTForImageClassification,
    load_model,
)
from ..processing.images import ImageInputError, load_file_image, to_8bit

__all__ = ["ENDPOINTS", "Engine", "Limits", "Request", "RequestError"]

# task -> the path that serves it
ENDPOINTS = {
    "vqa": "/v1/vqa",
    "match": "/v1/match",
    "embed": "/v1/embed",
    "classify": "/v1/classify",
}
MAX_TOP_K = 100


class RequestError(Exception):
    """A request the server will not run; ``status`` is the HTTP status it answers with.

    Args:
        status: 4xx for the client's mistakes; 500 when the model failed on the request,
            503 when the server is busy.
        message: what was wrong, for the ``{"error": ...}`` body.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server.

    Args:
        max_upload_bytes: the whole request body (the image file and the form around it).
        max_image_pixels: width x height of the decoded image, read from its header before
            any pixel is decoded (a small file can unpack to a huge image).
        max_question_chars: characters of the question or text.
        request_timeout: seconds a request may wait for and run its batch.
        max_queue: requests waiting per task; more are refused with 503.
    """

    max_upload_bytes: int = 10 * 2**20
    max_image_pixels: int = 25_000_000
    max_question_chars: int = 1000
    request_timeout: float = 30.0
    max_queue: int = 256

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_image_pixels", "max_question_chars", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0, got {self.request_timeout}")


@dataclass
class Request:
    """One prepared request: the resized image, its text, and what to return."""

    image: Image.Image
    pixels: torch.Tensor  # (3, h, w) uint8, resized by the processor
    text: str | None = None
    top_k: int = 5
    heatmap: bool = False


class Engine:
    """A model and its processor, ready to serve batches of requests.

    Args:
        model: any ViLT class, or a ViT image classifier.
        processor: its ViltProcessor (ViLT) or ViTImageProcessor (ViT).
        limits: the per-request limits.
        device: where to run (default: where the model is).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: Any,
        *,
        limits: Limits | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if device is not None:
            model.to(device)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.processor = processor
        self.limits = limits or Limits()
        self.is_vit = isinstance(model, ViTForImageClassification)
        tasks = []
        if isinstance(model, ViltForQuestionAnswering):
            tasks.append("vqa")
        if isinstance(model, ViltForImageTextMatching | ViltForPreTraining):
            tasks.append("match")
        if self.is_vit:
            tasks.append("classify")
        else:
            try:
                vilt_backbone(model)
                tasks.append("embed")
            except TypeError:
                pass
        if not tasks:
            raise TypeError(
                f"{type(model).__name__} has nothing to serve: serve a ViLT model (VQA, image-"
                "text matching, embeddings) or a ViTForImageClassification"
            )
        self.tasks = tuple(tasks)
        if not self.is_vit:
            self.processor.check_model(model.config, type(model).__name__)
        self.image_processor = processor if self.is_vit else processor.image_processor

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **options: Any) -> Engine:
        """Load a checkpoint directory and the processor saved beside it.

        Args:
            path: the checkpoint directory.
            **options: ``limits`` and ``device``, as for the constructor.
        """
        model = load_model(path)
        return cls(model, image_processor_for(path, model), **options)

    @property
    def labels(self) -> dict[int, str]:
        return self.model.config.id2label or {}

    def describe(self) -> dict[str, Any]:
        """What /health says: the model, its endpoints, its limits."""
        return {
            "model": type(self.model).__name__,
            "endpoints": [ENDPOINTS[t] for t in self.tasks],
            "labels": self.model.config.num_labels if self.tasks != ("embed",) else None,
            "device": str(self.device),
        }

    def require(self, task: str) -> None:
        """Raise a 404 RequestError naming what the model serves when it cannot do ``task``."""
        if task not in self.tasks:
            served = ", ".join(ENDPOINTS[t] for t in self.tasks)
            raise RequestError(
                404,
                f"this server's model ({type(self.model).__name__}) cannot serve "
                f"{ENDPOINTS[task]}; it serves {served}",
            )

    # -- preparing one request (runs in a worker thread, before batching) --------------------
    def decode_image(self, data: bytes) -> Image.Image:
        """An upload's bytes -> an upright 8-bit PIL image, its size checked before decoding."""
        if not data:
            raise RequestError(422, "image: the uploaded file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides
            try:
                image = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as err:  # past PIL's own (higher) limit
                raise RequestError(413, f"image: {err}") from None
            except (UnidentifiedImageError, OSError):
                raise RequestError(
                    422, "image: not an image the server can read (corrupt or unknown format)"
                ) from None
        w, h = image.size
        limit = self.limits.max_image_pixels
        if w * h > limit:
            raise RequestError(
                413, f"image: {w}x{h} = {w * h} pixels is more than the server's limit of {limit}"
            )
        try:
            return to_8bit(load_file_image(image, "image"), "image")
        except (ImageInputError, TypeError) as err:
            raise RequestError(422, str(err)) from None

    def check_text(self, text: str | None, name: str) -> str:
        """The question or text, checked: present, within the character limit, and within
        the model's text positions once tokenized (it would be cut otherwise)."""
        if text is None or not text.strip():
            raise RequestError(422, f"{name}: missing or empty")
        limit = self.limits.max_question_chars
        if len(text) > limit:
            raise RequestError(
                422, f"{name}: {len(text)} characters is more than the server's limit of {limit}"
            )
        tokens = len(self.processor.tokenizer(text, truncation=False, return_tensors=None)[
            "input_ids"
        ][0])  # fmt: skip
        if tokens > self.processor.max_length:
            raise RequestError(
                422,
                f"{name}: {tokens} tokens (with [CLS] and [SEP]) is more than the model's "
                f"{self.processor.max_length}; shorten it",
            )
        return text

    def prepare(
        self,
        data: bytes,
        text: str | None = None,
        *,
        text_name: str = "text",
        top_k: int = 5,
        heatmap: bool = False,
    ) -> Request:
        """Decode and resize the image, check the text: one request ready for a batch.

        Args:
            data: the uploaded image file.
            text: the question or text (None for a ViT classifier).
            text_name: what to call the text in an error (the form field).
            top_k: how many answers or labels to return, 1 to 100.
            heatmap: also return the attention heatmap over the image.
        """
        if not 1 <= top_k <= MAX_TOP_K:
            raise RequestError(422, f"top_k: must be between 1 and {MAX_TOP_K}, got {top_k}")
        image = self.decode_image(data)
        if not self.is_vit:
            text = self.check_text(text, text_name)
        pixels = self.image_processor.preprocess_one(image, normalize=False)
        return Request(image=image, pixels=pixels, text=text, top_k=top_k, heatmap=heatmap)

    # -- running a batch (one at a time, on the model's thread) -------------------------------
    def _inputs(self, batch: list[Request]) -> dict[str, torch.Tensor]:
        inputs = dict(self.image_processor.pad([r.pixels for r in batch]))
        if not self.is_vit:
            inputs |= self.processor.tokenizer(
                [r.text for r in batch],
                padding=True,
                truncation=True,
                max_length=self.processor.max_length,
                return_tensors="pt",
            )
        return {k: v.to(self.device) for k, v in inputs.items()}

    @torch.inference_mode()
    def run(self, task: str, batch: list[Request]) -> list[dict[str, Any]]:
        """One forward for ``batch`` (all of ``task``); one response body per request."""
        inputs = self._inputs(batch)
        heatmaps = any(r.heatmap for r in batch)
        if task == "embed":
            pooled = vilt_backbone(self.model)(**inputs).pooler_output.float().cpu()
            return [{"embedding": row.tolist()} for row in pooled]
        out = self.model(**inputs, output_attentions=heatmaps)
        if task == "match":
            probs = torch.sigmoid(out.scores.float()).cpu()
            return [{"score": float(p)} for p in probs]
        logits = out.logits.float().cpu()
        # VQA answers are multi-label (sigmoid, as vilt.answer_question); classes are softmax
        probs = torch.sigmoid(logits) if task == "vqa" else logits.softmax(-1)
        key, name = ("answers", "answer") if task == "vqa" else ("labels", "label")
        bodies = []
        for i, request in enumerate(batch):
            values, ids = probs[i].topk(min(request.top_k, probs.shape[1]))
            ranked = [
                {name: self.labels.get(int(j), str(int(j))), "score": float(v)}
                for v, j in zip(values, ids, strict=True)
            ]
            bodies.append({key: ranked})
        if heatmaps:
            for i, heat in enumerate(self._heatmaps(out, inputs)):
                if batch[i].heatmap:
                    bodies[i]["heatmap"] = _heatmap_body(batch[i].image, heat)
        return bodies

    def _heatmaps(self, out: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Attention rollout from the token the head reads ([CLS] / the class token) over
        each image's own patches (vilt.viz, as ``vilt attention`` draws it)."""
        from ..viz import crop_to_image, patch_heatmaps

        maps = patch_heatmaps(out, query=0)
        if "pixel_mask" not in inputs:
            return list(maps)
        return [
            crop_to_image(m, mask.cpu()) for m, mask in zip(maps, inputs["pixel_mask"], strict=True)
        ]


def _heatmap_body(image: Image.Image, heat: torch.Tensor, size: int = 384) -> dict[str, Any]:
    """The rollout grid (rows of values in [0, 1]) and a PNG of it over the image."""
    from ..viz import overlay

    picture = image.convert("RGB")
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    overlay(picture, heat).save(buffer, format="PNG")
    return {
        "grid": [[round(float(v), 4) for v in row] for row in heat],
        "png": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
    }
