"""ViLT: text and image tokens in one sequence through the shared encoder, and its task models.

Sequence layout (as the public checkpoints): text tokens ([CLS] first), then the image class
token and the image patches. Every token gets a modality-type embedding: 0 for text, 1 for the
image (2 for a second image in NLVR2). The pooler reads position 0, the text [CLS].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ViltConfig
from .embeddings import TextEmbeddings, ViltImageEmbeddings
from .heads import MLMHead, Pooler, itm_scores, mlp_classifier
from .layers import Encoder
from .outputs import EncoderOutput, PreTrainingOutput, TaskOutput
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
            if idx.numel() and (int(idx.min()) < 1 or int(idx.max()) >= n_types):
                raise ValueError(
                    f"image_token_type_idx values must lie in [1, {n_types}), got "
                    f"{sorted(set(idx.tolist()))}"
                )
            image_type = types[idx][:, None, :]
        return text + types[0], image + image_type, keep, patch_index, grid


class ViltModel(PreTrainedModel):
    """The ViLT backbone: embeddings, shared encoder, tanh pooler on the text [CLS]."""

    config_class = ViltConfig

    def __init__(self, config: ViltConfig, *, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = ViltEmbeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config.hidden_size) if add_pooling_layer else None
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
        pooled_only: bool = False,
        **_: object,
    ) -> EncoderOutput:
        """input_ids (B, T), attention_mask (B, T) 1 = real token; pixel_values (B, C, H, W),
        pixel_mask (B, H, W) 1 = real pixel. Returns the joint sequence and the pooled state.

        ``pooled_only=True`` (opt-in) computes only what the pooled output needs: the last
        block runs its queries, MLP and the final norm on the text [CLS] alone, so
        last_hidden_state is (B, 1, D). Pooled output, logits and gradients are unchanged;
        the task models that read the pooled state (VQA, ITM, NLVR2) pass it through."""
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
        last, hidden, attentions = self.encoder(
            x,
            keep,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            first_only=1 if pooled_only else None,
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


class _ViltWithHead(PreTrainedModel):
    """Shared plumbing of the task models: a ``vilt`` backbone and forward's keyword names."""

    config_class = ViltConfig
    base_model_prefix = "vilt"

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.vilt = ViltModel(config)


class ViltForQuestionAnswering(_ViltWithHead):
    """VQA: pooled state -> Linear(D, 2D), LayerNorm, GELU, Linear(2D, num_labels).

    Multi-label: labels are soft scores (B, num_labels); the loss is BCE-with-logits scaled by
    num_labels, as ViLT trains it.
    """

    head_prefixes = ("classifier.",)

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.classifier = mlp_classifier(d, 2 * d, config.num_labels)
        self.post_init()

    def forward(self, *, labels: torch.Tensor | None = None, **inputs: object) -> TaskOutput:
        out = self.vilt(**inputs)
        logits = self.classifier(out.pooler_output)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"VQA labels must be soft scores of shape {tuple(logits.shape)} "
                    f"(batch, num_labels), got {tuple(labels.shape)}"
                )
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            loss = loss * labels.shape[1]
        return TaskOutput(**out.to_dict(), loss=loss, logits=logits)


def _itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    labels = labels.view(-1).long()
    if labels.shape[0] != logits.shape[0] or (labels.numel() and int(labels.max()) > 1):
        raise ValueError(
            f"ITM labels must be 0 (mismatch) or 1 (match), one per pair ({logits.shape[0]}), "
            f"got shape {tuple(labels.shape)}"
        )
    return F.cross_entropy(logits, labels)


class ViltForImageTextMatching(_ViltWithHead):
    """ITM: a 2-way match/mismatch head on the pooled state; ``scores`` is the match log-odds."""

    head_prefixes = ("itm_head.",)

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, *, labels: torch.Tensor | None = None, **inputs: object) -> TaskOutput:
        out = self.vilt(**inputs)
        logits = self.itm_head(out.pooler_output)
        loss = _itm_loss(logits, labels) if labels is not None else None
        return TaskOutput(**out.to_dict(), loss=loss, logits=logits, scores=itm_scores(logits))


def _refuse_pooled_only(inputs: dict, model: str) -> None:
    if inputs.get("pooled_only"):
        raise ValueError(f"{model} reads every text position; pooled_only does not apply")


def _mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"MLM labels must have the shape of input_ids {tuple(logits.shape[:2])}, "
            f"got {tuple(labels.shape)}"
        )
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(), ignore_index=-100
    )


class ViltForMaskedLM(_ViltWithHead):
    """MLM: dense, GELU, LayerNorm, then a decoder over the vocabulary (sharing the word
    embeddings) on the text positions. Labels: token ids, -100 where nothing is predicted."""

    head_prefixes = ("mlm_head.",)

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.mlm_head = MLMHead(config)
        self.post_init()

    def forward(self, *, labels: torch.Tensor | None = None, **inputs: object) -> TaskOutput:
        _refuse_pooled_only(inputs, "ViltForMaskedLM")
        out = self.vilt(**inputs)
        text = out.last_hidden_state[:, : out.text_length]
        logits = self.mlm_head(text, self.vilt.word_embeddings.weight)
        loss = _mlm_loss(logits, labels) if labels is not None else None
        return TaskOutput(**out.to_dict(), loss=loss, logits=logits)


class ViltForPreTraining(_ViltWithHead):
    """ITM + MLM in one pass. The MLM loss counts only matched pairs (a caption cannot be
    recovered from the wrong image); the total loss is the sum of both."""

    head_prefixes = ("itm_head.", "mlm_head.")

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.mlm_head = MLMHead(config)
        self.post_init()

    def forward(
        self,
        *,
        itm_labels: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        **inputs: object,
    ) -> PreTrainingOutput:
        _refuse_pooled_only(inputs, "ViltForPreTraining")
        out = self.vilt(**inputs)
        itm_logits = self.itm_head(out.pooler_output)
        text = out.last_hidden_state[:, : out.text_length]
        mlm_logits = self.mlm_head(text, self.vilt.word_embeddings.weight)
        itm_loss = mlm_loss = None
        if itm_labels is not None:
            itm_loss = _itm_loss(itm_logits, itm_labels)
        if mlm_labels is not None:
            if itm_labels is not None:
                matched = itm_labels.view(-1, 1).bool()
                mlm_labels = mlm_labels.masked_fill(~matched, -100)
            if bool((mlm_labels != -100).any()):
                mlm_loss = _mlm_loss(mlm_logits, mlm_labels)
            else:  # nothing to predict in this batch: a zero that keeps the graph connected
                mlm_loss = mlm_logits.sum() * 0.0
        losses = [x for x in (itm_loss, mlm_loss) if x is not None]
        return PreTrainingOutput(
            **out.to_dict(),
            loss=sum(losses) if losses else None,
            itm_loss=itm_loss,
            mlm_loss=mlm_loss,
            itm_logits=itm_logits,
            mlm_logits=mlm_logits,
            scores=itm_scores(itm_logits),
        )


class ViltForImagesAndTextClassification(_ViltWithHead):
    """NLVR2: one text, several images. Each image is paired with the text (modality type
    i + 1 for image i), all pairs run in one batched pass, and the pooled states are
    concatenated into Linear(nD, nD), LayerNorm, GELU, Linear(nD, num_labels)."""

    head_prefixes = ("classifier.",)

    def __init__(self, config: ViltConfig) -> None:
        if config.num_images < 1:
            config = config.replace(
                num_images=2, modality_type_vocab_size=max(3, config.modality_type_vocab_size)
            )
        super().__init__(config)
        n = config.num_images * config.hidden_size
        self.classifier = mlp_classifier(n, n, config.num_labels)
        self.post_init()

    def forward(
        self,
        *,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **options: object,
    ) -> TaskOutput:
        """pixel_values (B, num_images, C, H, W); pixel_mask (B, num_images, H, W)."""
        n = self.config.num_images
        if pixel_values.ndim != 5 or pixel_values.shape[1] != n:
            raise ValueError(
                f"pixel_values must have shape (batch, {n}, channels, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        b = pixel_values.shape[0]
        # Image-major order: rows [i * B, (i + 1) * B) hold image i of every sample.
        images = pixel_values.transpose(0, 1).reshape(n * b, *pixel_values.shape[2:])
        masks = None
        if pixel_mask is not None:
            masks = pixel_mask.transpose(0, 1).reshape(n * b, *pixel_mask.shape[2:])
        repeat = lambda t: None if t is None else t.repeat(n, 1)  # noqa: E731
        types = torch.arange(1, n + 1, device=pixel_values.device).repeat_interleave(b)
        out = self.vilt(
            input_ids=repeat(input_ids),
            attention_mask=repeat(attention_mask),
            token_type_ids=repeat(token_type_ids),
            pixel_values=images,
            pixel_mask=masks,
            image_token_type_idx=types,
            **options,
        )
        pooled = out.pooler_output.view(n, b, -1).transpose(0, 1).reshape(b, -1)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.view(-1).long())
        return TaskOutput(
            pooler_output=pooled,
            last_hidden_state=out.last_hidden_state,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            attention_mask=out.attention_mask,
            text_length=out.text_length,
            loss=loss,
            logits=logits,
        )
