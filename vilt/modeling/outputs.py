"""Output objects: dataclasses with attribute access, ``out["name"]`` and ``to_dict()``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ModelOutput:
    """Base: fields that are None are left out of ``to_dict``/``keys``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }

    def keys(self) -> list[str]:
        return list(self.to_dict())

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise TypeError("index outputs by field name, e.g. out['logits']")
        return self.to_dict()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()


@dataclass
class EncoderOutput(ModelOutput):
    """What the backbones (ViTModel, ViltModel) return.

    ``attention_mask`` is the keep-mask of the whole sequence; for ViLT, ``text_length`` tells
    where the image tokens start and ``patch_index`` maps each image token to its patch in the
    padded ``grid_size`` grid (-1 for the class token) — what attention maps need.

    Attributes:
        last_hidden_state: ``(batch, sequence, hidden)`` states after the final norm.
        pooler_output: ``(batch, hidden)`` pooled first token, when the model has a pooler.
        hidden_states: the embeddings and every block's output, with
            ``output_hidden_states=True``.
        attentions: every block's ``(batch, heads, sequence, sequence)`` attention
            probabilities, with ``output_attentions=True``.
        attention_mask: ``(batch, sequence)`` keep-mask of the whole sequence (1 = a real token).
        text_length: ViLT only: how many text tokens precede the image tokens.
        patch_index: ViLT only: ``(batch, image_tokens)`` flat (row-major) index of each image
            token's patch in the padded grid, -1 for the image class token.
        grid_size: ViLT only: ``(rows, columns)`` of the padded patch grid.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_mask: torch.Tensor | None = None
    text_length: int | None = None
    patch_index: torch.Tensor | None = None
    grid_size: tuple[int, int] | None = None


@dataclass
class TaskOutput(EncoderOutput):
    """What the models with a head return: ``loss`` when labels were given, and ``logits``.

    ``scores`` is the image-text match score (ITM logit difference) where the model has one.

    Attributes:
        loss: scalar training loss, present when labels were passed.
        logits: the head's ``(batch, num_labels)`` logits.
        scores: ``(batch,)`` image-text match score, for the models that match pairs.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    scores: torch.Tensor | None = None


@dataclass
class PreTrainingOutput(EncoderOutput):
    """ITM + MLM (+ WPA): the summed loss, each loss, and each head's logits.

    ``wpa_loss`` is the word-patch alignment loss before its weight (``config.wpa_weight``);
    the summed ``loss`` holds it times the weight.

    Attributes:
        loss: ITM + MLM (+ ``wpa_weight`` x WPA) loss, present when labels were passed.
        itm_loss: image-text matching cross-entropy.
        mlm_loss: masked language modelling cross-entropy over the masked tokens.
        wpa_loss: word-patch alignment (optimal transport) distance of the matched pairs.
        itm_logits: ``(batch, 2)`` match / no-match logits.
        mlm_logits: ``(batch, text, vocab)`` token logits.
        scores: ``(batch,)`` image-text match score (ITM logit difference).
    """

    loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    wpa_loss: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    scores: torch.Tensor | None = None
