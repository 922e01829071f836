"""ViLT: text and image tokens in one sequence through the shared encoder, and its task models.

Sequence layout (as the public checkpoints): text tokens ([CLS] first), then the image class
token and the image patches. Every token gets a modality-type embedding: 0 for text, 1 for the
image (2 for a second image in NLVR2). The pooler reads position 0, the text [CLS].
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_image_type_ids, input_checks_enabled
from ..config import ViltConfig
from .embeddings import TextEmbeddings, ViltImageEmbeddings
from .from_vit import ViltStartingPoints
from .heads import Pooler
from .layers import Encoder
from .outputs import EncoderOutput
from .pretrained import PreTrainedModel


class ViltEmbeddings(nn.Module):
    """Text embeddings, image embeddings, and the modality-type table that tells them apart."""

    def __init__(self, config: ViltConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings(config)
        self.image = ViltImageEmbeddings(config)
        self.modality_type_embeddings = nn.Embedding(
            config.modality_type_vocab_size, config.hidden_size
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None,
        image_token_type_idx: int | torch.Tensor = 1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Returns (text tokens, image tokens, image keep-mask, patch index, patch grid)."""
        text = self.text(input_ids, token_type_ids)
        image, keep, patch_index, grid = self.image(pixel_values, pixel_mask)
        types = self.modality_type_embeddings.weight
        n_types = types.shape[0]
        if isinstance(image_token_type_idx, int):
            if not 0 < image_token_type_idx < n_types:
                raise ValueError(
                    f"image_token_type_idx {image_token_type_idx} is outside [1, {n_types}) "
                    f"(modality_type_vocab_size is {n_types})"
                )
            image_type = types[image_token_type_idx]
        else:
            idx = image_token_type_idx.to(device=types.device, dtype=torch.long)
            if input_checks_enabled():
                check_image_type_ids(idx, n_types)
            image_type = types[idx][:, None, :]
        return text + types[0], image + image_type, keep, patch_index, grid


class ViltModel(ViltStartingPoints, PreTrainedModel):
    """The ViLT backbone: embeddings, shared encoder, tanh pooler on the text [CLS].

    Args:
        config: the model's sizes; ``config.pooled_only`` runs the last block for the
            [CLS] token alone (see :class:`vilt.ViltConfig`).
        add_pooling_layer: build the tanh pooler (``pooler_output``).
        pooled_only: overrides ``config.pooled_only`` for this backbone (the task models that
            read every text position build theirs with ``False``).
    """

    config_class = ViltConfig
    optional_prefixes = ("pooler.",)  # a backbone saved with add_pooling_layer=False

    def __init__(
        self,
        config: ViltConfig,
        *,
        add_pooling_layer: bool = True,
        pooled_only: bool | None = None,
    ) -> None:
        super().__init__(config)
        self.embeddings = ViltEmbeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config.hidden_size) if add_pooling_layer else None
        self.pooled_only = config.pooled_only if pooled_only is None else bool(pooled_only)
        self.post_init()

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.embeddings.text.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_token_type_idx: int | torch.Tensor = 1,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """The joint sequence of text and image tokens, and its pooled state.

        Args:
            input_ids: (B, T) token ids.
            pixel_values: (B, C, H, W) normalised images, padded at the bottom/right.
            attention_mask: (B, T), 1 = real token (default: every token real).
            token_type_ids: (B, T) BERT segment ids (default: 0).
            pixel_mask: (B, H, W), 1 = real pixel (default: every pixel real).
            image_token_type_idx: the images' modality type: an int, or (B,) per sample.
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.

        Returns:
            EncoderOutput with last_hidden_state (B, T + 1 + patches, D), or (B, 1, D) when
            the backbone is ``pooled_only`` and neither hidden states nor attentions were
            asked for; pooler_output (B, D); attention_mask, text_length, patch_index and
            grid_size locate the image tokens.
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("ViLT needs both input_ids and pixel_values")
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"input_ids hold {input_ids.shape[0]} texts but pixel_values hold "
                f"{pixel_values.shape[0]} images; pass one image per text"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                f"shape {tuple(input_ids.shape)}"
            )
        text, image, image_keep, patch_index, grid = self.embeddings(
            input_ids, token_type_ids, pixel_values, pixel_mask, image_token_type_idx
        )
        x = torch.cat([text, image], dim=1)
        keep = torch.cat([attention_mask.to(image_keep.dtype), image_keep], dim=1)
        full = output_attentions or output_hidden_states or not self.pooled_only
        last, hidden, attentions = self.encoder(
            x,
            keep,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            first_only=None if full else 1,
        )
        return EncoderOutput(
            last_hidden_state=last,
            pooler_output=self.pooler(last) if self.pooler is not None else None,
            hidden_states=hidden,
            attentions=attentions,
            attention_mask=keep,
            text_length=input_ids.shape[1],
            patch_index=patch_index,
            grid_size=grid,
        )
