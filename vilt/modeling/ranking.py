"""Image-text retrieval as ViLT fine-tunes it: the ITM model, trained to rank.

ViLT's IRTR objective: each matched pair comes with k mismatched candidates (other texts for
its image, and/or other images for its text); the model scores the 1 + k pairs and a softmax
cross-entropy over the scores puts the matched one first. The score is the ITM head's match
log-odds, logit(match) - logit(mismatch): the ``rank_output`` of transformers'
``ViltForImageAndTextRetrieval`` and of the public ``-finetuned-coco`` / ``-finetuned-f30k``
checkpoints, which therefore load into this class and train on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_class_labels, input_checks_enabled
from .heads import itm_scores
from .outputs import TaskOutput
from .vilt_tasks import ViltForImageTextMatching


def _grouped(t: torch.Tensor | None, dims: int) -> torch.Tensor | None:
    """``t`` with a candidate axis after the batch axis (size 1 when it had none)."""
    if t is None or t.ndim == dims + 1:
        return t
    return t.unsqueeze(1)


def _flat(t: torch.Tensor | None, b: int, g: int) -> torch.Tensor | None:
    """(B, 1 or G, ...) -> (B * G, ...), a candidate axis of 1 repeated G times."""
    if t is None:
        return None
    return t.expand(b, g, *t.shape[2:]).reshape(b * g, *t.shape[2:])


class ViltForImageTextRetrieval(ViltForImageTextMatching):
    """Image-text retrieval: the ITM model (same weights) with ViLT's ranking loss.

    Flat inputs, one pair per row ((B, T) text, (B, C, H, W) images), behave as
    :class:`ViltForImageTextMatching`: ``scores`` (B,) rank the pairs, and ``labels`` (B,) of
    0/1 give the binary ITM loss. Grouped inputs score B groups of G candidate pairs: text
    (B, G, T) or (B, 1, T) (one text for every candidate of its group) and images
    (B, G, C, H, W) or (B, 1, C, H, W); the B * G pairs run in one batched pass, ``scores``
    are (B, G) and ``logits`` (B, G, 2), and ``labels`` (B,), the position of the matched pair
    in each group, give the ranking loss: cross-entropy of the softmax over the group's scores.

    Args:
        config: the model's sizes.
    """

    task = "image-text-retrieval"

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
        """Match scores of pairs, or of groups of candidate pairs (see the class docstring).

        Args:
            input_ids: (B, T) token ids, or (B, G or 1, T) per group of candidates.
            pixel_values: (B, C, H, W) normalised images, or (B, G or 1, C, H, W).
            attention_mask: 1 = real token, shaped as ``input_ids``.
            token_type_ids: segment ids (default 0), shaped as ``input_ids``.
            pixel_mask: 1 = real pixel, shaped as ``pixel_values`` without channels.
            output_attentions: return each block's attention weights (one row per pair).
            output_hidden_states: return the embeddings and each block's output.
            labels: flat: (B,) 1 = match, 0 = mismatch; grouped: (B,) the matched position.
        """
        if input_ids.ndim == 2 and pixel_values.ndim == 4:
            return super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                token_type_ids=token_type_ids, pixel_mask=pixel_mask, labels=labels,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            )  # fmt: skip
        input_ids, attention_mask, token_type_ids = (
            _grouped(t, 2) for t in (input_ids, attention_mask, token_type_ids)
        )
        pixel_values, pixel_mask = _grouped(pixel_values, 4), _grouped(pixel_mask, 3)
        b, texts, images = input_ids.shape[0], input_ids.shape[1], pixel_values.shape[1]
        g = max(texts, images)
        if pixel_values.shape[0] != b or {texts, images} - {1, g}:
            raise ValueError(
                "grouped retrieval inputs need the same batch and G candidates (or 1, shared "
                f"by the group) per sample: input_ids {tuple(input_ids.shape)}, pixel_values "
                f"{tuple(pixel_values.shape)}"
            )
        out = self._encode(
            _flat(input_ids, b, g), _flat(pixel_values, b, g), _flat(attention_mask, b, g),
            _flat(token_type_ids, b, g), _flat(pixel_mask, b, g),
            output_attentions, output_hidden_states,
        )  # fmt: skip
        logits = self.itm_head(out.pooler_output)
        scores = itm_scores(logits).view(b, g)
        loss = None
        if labels is not None:
            labels = labels.reshape(-1).long()
            if labels.shape[0] != b:
                raise ValueError(
                    f"retrieval labels are the matched position in each of the {b} groups, "
                    f"got shape {tuple(labels.shape)}"
                )
            if input_checks_enabled():
                check_class_labels(labels, g)
            loss = F.cross_entropy(scores, labels)
        return TaskOutput(**out.to_dict(), loss=loss, logits=logits.view(b, g, 2), scores=scores)
