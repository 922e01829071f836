"""The ViLT task models: VQA, image-text matching, masked LM, pretraining (ITM + MLM) and
NLVR2 (several images per text), each a ``vilt`` backbone and a head laid out as the public
checkpoints are.

Every forward names its arguments (the transformers keyword names), keyword only, so that a
misspelled one is a TypeError. Label values are not checked here (that would read them on the
host); the collators make them right, and ``vilt.check_inputs()`` checks them in the forward.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_itm_labels, input_checks_enabled
from ..config import ViltConfig
from .alignment import wpa_distance, wpa_token_masks
from .from_vit import ViltStartingPoints
from .heads import MLMHead, itm_scores, mlp_classifier
from .outputs import EncoderOutput, PreTrainingOutput, TaskOutput
from .pretrained import PreTrainedModel
from .vilt import ViltModel

IGNORE_INDEX = -100


class _ViltWithHead(ViltStartingPoints, PreTrainedModel):
    """Shared plumbing of the task models: a ``vilt`` backbone and the call into it."""

    config_class = ViltConfig
    base_model_prefix = "vilt"
    optional_prefixes = ("vilt.pooler.",)  # from a backbone saved with add_pooling_layer=False
    # heads that read every text position build a full backbone whatever config.pooled_only says
    reads_every_token: ClassVar[bool] = False

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.vilt = ViltModel(config, pooled_only=False if self.reads_every_token else None)

    def _encode(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        pixel_mask: torch.Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> EncoderOutput:
        return self.vilt(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_mask=pixel_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )


class ViltForQuestionAnswering(_ViltWithHead):
    """VQA: pooled state -> Linear(D, 2D), LayerNorm, GELU, Linear(2D, num_labels).

    Multi-label: labels are soft scores (B, num_labels); the loss is BCE-with-logits scaled by
    num_labels, as ViLT trains it.

    Args:
        config: the model's sizes; ``num_labels`` answers, ``id2label`` their names.
    """

    task = "vqa"

    head_prefixes = ("classifier.",)

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        self.classifier = mlp_classifier(d, 2 * d, config.num_labels)
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
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> TaskOutput:
        """Answer logits (B, num_labels); with ``labels`` (B, num_labels) soft scores, the loss.

        Args:
            input_ids: (B, T) token ids.
            pixel_values: (B, C, H, W) normalised images, padded at the bottom/right.
            attention_mask: (B, T), 1 = real token.
            token_type_ids: (B, T) segment ids (default 0).
            pixel_mask: (B, H, W), 1 = real pixel.
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.
            labels: (B, num_labels) soft target scores in [0, 1].
        """
        out = self._encode(
            input_ids, pixel_values, attention_mask, token_type_ids, pixel_mask,
            output_attentions, output_hidden_states,
        )  # fmt: skip
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
    labels = labels.reshape(-1).long()
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"ITM labels must be 0 (mismatch) or 1 (match), one per pair ({logits.shape[0]}), "
            f"got shape {tuple(labels.shape)}"
        )
    if input_checks_enabled():
        check_itm_labels(labels)
    return F.cross_entropy(logits, labels)


class ViltForImageTextMatching(_ViltWithHead):
    """ITM: a 2-way match/mismatch head on the pooled state; ``scores`` is the match log-odds.

    Args:
        config: the model's sizes.
    """

    task = "image-text-matching"

    head_prefixes = ("itm_head.",)

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
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
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> TaskOutput:
        """Match logits (B, 2) and ``scores`` (B,) = logit(match) - logit(mismatch).

        Args:
            input_ids: (B, T) token ids.
            pixel_values: (B, C, H, W) normalised images, padded at the bottom/right.
            attention_mask: (B, T), 1 = real token.
            token_type_ids: (B, T) segment ids (default 0).
            pixel_mask: (B, H, W), 1 = real pixel.
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.
            labels: (B,) 1 = the text matches the image, 0 = it does not.
        """
        out = self._encode(
            input_ids, pixel_values, attention_mask, token_type_ids, pixel_mask,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        logits = self.itm_head(out.pooler_output)
        loss = _itm_loss(logits, labels) if labels is not None else None
        return TaskOutput(**out.to_dict(), loss=loss, logits=logits, scores=itm_scores(logits))


def _mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions; 0 (still in the graph) when none is.

    The count divides on the device: whether any position is labelled is never asked."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"MLM labels must have the shape of input_ids {tuple(logits.shape[:2])}, "
            f"got {tuple(labels.shape)}"
        )
    labels = labels.reshape(-1).long()
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


class ViltForMaskedLM(_ViltWithHead):
    """MLM: dense, GELU, LayerNorm, then a decoder over the vocabulary (sharing the word
    embeddings) on the text positions. Labels: token ids, -100 where nothing is predicted.

    Args:
        config: the model's sizes.
    """

    task = "masked-lm"

    head_prefixes = ("mlm_head.",)
    reads_every_token = True

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.mlm_head = MLMHead(config)
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
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> TaskOutput:
        """Vocabulary logits (B, T, vocab_size) at the text positions.

        Args:
            input_ids: (B, T) token ids.
            pixel_values: (B, C, H, W) normalised images, padded at the bottom/right.
            attention_mask: (B, T), 1 = real token.
            token_type_ids: (B, T) segment ids (default 0).
            pixel_mask: (B, H, W), 1 = real pixel.
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.
            labels: (B, T) the original token ids at masked positions, -100 elsewhere.
        """
        out = self._encode(
            input_ids, pixel_values, attention_mask, token_type_ids, pixel_mask,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        text = out.last_hidden_state[:, : out.text_length]
        logits = self.mlm_head(text, self.vilt.word_embeddings.weight)
        loss = _mlm_loss(logits, labels) if labels is not None else None
        return TaskOutput(**out.to_dict(), loss=loss, logits=logits)


class ViltForPreTraining(_ViltWithHead):
    """ITM + MLM in one pass, and word-patch alignment when ``config.wpa_weight`` > 0. The MLM
    loss counts only matched pairs (a caption cannot be recovered from the wrong image). WPA,
    as the ViLT paper trains it: each pair's optimal-transport distance between its words
    (without [CLS] and [SEP]) and its patches (without the image class token), summed with a
    plus sign for matched pairs and a minus sign for mismatched ones (all pairs count as matched
    without ``itm_labels``), over the batch size. The total loss is ITM + MLM + weight * WPA.

    Args:
        config: the model's sizes.
    """

    task = "pretraining"

    head_prefixes = ("itm_head.", "mlm_head.")
    reads_every_token = True

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.mlm_head = MLMHead(config)
        self.post_init()

    def forward(
        self,
        *,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        itm_labels: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> PreTrainingOutput:
        """ITM logits (B, 2), MLM logits (B, T, vocab_size), and the losses given labels.

        Args:
            input_ids: (B, T) token ids.
            pixel_values: (B, C, H, W) normalised images, padded at the bottom/right.
            attention_mask: (B, T), 1 = real token.
            token_type_ids: (B, T) segment ids (default 0).
            pixel_mask: (B, H, W), 1 = real pixel.
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.
            itm_labels: (B,) 1 = matched pair, 0 = mismatched.
            mlm_labels: (B, T) original ids at masked positions, -100 elsewhere; positions of
                mismatched pairs are ignored.
        """
        out = self._encode(
            input_ids, pixel_values, attention_mask, token_type_ids, pixel_mask,
            output_attentions, output_hidden_states,
        )  # fmt: skip
        itm_logits = self.itm_head(out.pooler_output)
        text = out.last_hidden_state[:, : out.text_length]
        mlm_logits = self.mlm_head(text, self.vilt.word_embeddings.weight)
        itm_loss = mlm_loss = None
        if itm_labels is not None:
            itm_loss = _itm_loss(itm_logits, itm_labels)
        if mlm_labels is not None:
            if itm_labels is not None:
                matched = itm_labels.reshape(-1, 1).bool()
                mlm_labels = mlm_labels.masked_fill(~matched, IGNORE_INDEX)
            mlm_loss = _mlm_loss(mlm_logits, mlm_labels)
        losses = [x for x in (itm_loss, mlm_loss) if x is not None]
        wpa_loss = None
        if self.config.wpa_weight > 0 and (itm_labels is not None or mlm_labels is not None):
            wpa_loss = self._wpa_loss(out, attention_mask, input_ids, itm_labels)
            losses.append(self.config.wpa_weight * wpa_loss)
        return PreTrainingOutput(
            **out.to_dict(),
            loss=sum(losses) if losses else None,
            itm_loss=itm_loss,
            mlm_loss=mlm_loss,
            wpa_loss=wpa_loss,
            itm_logits=itm_logits,
            mlm_logits=mlm_logits,
            scores=itm_scores(itm_logits),
        )

    def match_scores(
        self,
        *,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B,) the ITM head's log-odds that each pair matches, without the MLM head's work
        (what hard-negative mining scores candidates with).

        Args:
            input_ids: (B, T) token ids.
            pixel_values: (B, C, H, W) normalised images.
            attention_mask: (B, T), 1 = real token.
            token_type_ids: (B, T) segment ids (default 0).
            pixel_mask: (B, H, W), 1 = real pixel.
        """
        out = self._encode(
            input_ids, pixel_values, attention_mask, token_type_ids, pixel_mask, False, False
        )
        return itm_scores(self.itm_head(out.pooler_output))

    def _wpa_loss(
        self,
        out: EncoderOutput,
        attention_mask: torch.Tensor | None,
        input_ids: torch.Tensor,
        itm_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        t = out.text_length
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_mask, image_mask = wpa_token_masks(attention_mask, out.attention_mask[:, t:])
        states = out.last_hidden_state
        distance = wpa_distance(states[:, :t], states[:, t:], text_mask, image_mask)
        if itm_labels is None:
            return distance.mean()
        sign = torch.where(itm_labels.reshape(-1) == 1, 1.0, -1.0)
        return (sign * distance).sum() / distance.shape[0]


class ViltForImagesAndTextClassification(_ViltWithHead):
    """NLVR2: one text, several images. Each image is paired with the text (modality type
    i + 1 for image i), all pairs run in one batched pass, and the pooled states are
    concatenated into Linear(nD, nD), LayerNorm, GELU, Linear(nD, num_labels).

    Args:
        config: the model's sizes; ``num_images`` images per text (2 when unset).
    """

    task = "images-and-text-classification"

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
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> TaskOutput:
        """Logits (B, num_labels) from the text paired with each of its images.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T), 1 = real token.
            token_type_ids: (B, T) segment ids (default 0).
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.
            pixel_values: (B, num_images, C, H, W).
            pixel_mask: (B, num_images, H, W), 1 = real pixel.
            labels: (B,) class ids.
        """
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
        # [1] * b + [2] * b + ...; an expand, not repeat_interleave, which ONNX export
        # translates wrongly for a dynamic batch
        types = torch.arange(1, n + 1, device=pixel_values.device)[:, None].expand(n, b).reshape(-1)
        out = self.vilt(
            input_ids=repeat(input_ids),
            attention_mask=repeat(attention_mask),
            token_type_ids=repeat(token_type_ids),
            pixel_values=images,
            pixel_mask=masks,
            image_token_type_idx=types,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        pooled = out.pooler_output.view(n, b, -1).transpose(0, 1).reshape(b, -1)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.reshape(-1).long())
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
