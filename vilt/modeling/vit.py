"""Image-only Vision Transformer: ViTModel and ViTForImageClassification."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_class_labels, input_checks_enabled
from ..config import ViTConfig
from .embeddings import ViTImageEmbeddings
from .heads import Pooler
from .layers import Encoder
from .outputs import EncoderOutput, TaskOutput
from .pretrained import PreTrainedModel


class ViTModel(PreTrainedModel):
    """Patches + class token through the shared encoder; tanh pooler on the class token.

    Args:
        config: the model's sizes.
        add_pooling_layer: build the pooler (tanh(Linear) on the class token); without it
            ``pooler_output`` is None.
    """

    config_class = ViTConfig
    # a classification checkpoint has no pooler (as in transformers), nor has a ViTModel saved
    # with add_pooling_layer=False (as self-supervised ViTs are): initialised, with a warning
    head_prefixes = ("pooler.",)
    optional_prefixes = ("pooler.",)

    def __init__(self, config: ViTConfig, *, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = ViTImageEmbeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config.hidden_size) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> EncoderOutput:
        """The token states of an image batch and the pooled class token.

        Args:
            pixel_values: (B, C, H, W) normalised images.
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.
            interpolate_pos_encoding: resize the position grid (bicubic) to an image size the
                model was not built for; without it such a size is an error.
        """
        x = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        last, hidden, attentions = self.encoder(
            x, None, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        h, w = self.embeddings.patch_embeddings.patch_size
        grid = (pixel_values.shape[-2] // h, pixel_values.shape[-1] // w)
        return EncoderOutput(
            last_hidden_state=last,
            pooler_output=self.pooler(last) if self.pooler is not None else None,
            hidden_states=hidden,
            attentions=attentions,
            text_length=0,
            grid_size=grid,
        )

    def forward_features(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """(B, 1 + patches, D): every token's state after the final norm, class token first.

        Args:
            pixel_values: (B, C, H, W) normalised images.
            interpolate_pos_encoding: as for :meth:`forward`.
        """
        x = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.encoder(x)[0]

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        include_cls: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> list[torch.Tensor]:
        """The outputs of chosen blocks, as feature maps for dense heads (timm's habit).

        Args:
            pixel_values: (B, C, H, W) normalised images.
            indices: which blocks: None for every one, an int n for the last n, or a list of
                block indices (negative counts from the end). Blocks after the last chosen
                one are not run.
            norm: pass each output through the final LayerNorm.
            output_fmt: "NCHW" for (B, D, rows, cols) maps of the patch tokens, "NLC" for
                the (B, tokens, D) sequences.
            include_cls: with "NLC", keep the class token in front.
            interpolate_pos_encoding: as for :meth:`forward`.

        Returns:
            One tensor per chosen block, in block order.

        Raises:
            ValueError: for indices past the model's blocks, or an unknown ``output_fmt``.
        """
        depth = len(self.encoder.blocks)
        if indices is None:
            chosen = list(range(depth))
        elif isinstance(indices, int):
            if not 1 <= indices <= depth:
                raise ValueError(f"indices={indices}: the model has {depth} blocks")
            chosen = list(range(depth - indices, depth))
        else:
            chosen = sorted({i % depth if -depth <= i < depth else i for i in indices})
            if any(not 0 <= i < depth for i in chosen):
                raise ValueError(f"indices {list(indices)} reach past the model's {depth} blocks")
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        x = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        ph, pw = self.embeddings.patch_embeddings.patch_size
        rows, cols = pixel_values.shape[-2] // ph, pixel_values.shape[-1] // pw
        out = []
        for i, block in enumerate(self.encoder.blocks[: chosen[-1] + 1]):
            x, _ = block(x)
            if i not in chosen:
                continue
            y = self.encoder.norm(x) if norm else x
            if output_fmt == "NCHW":
                y = y[:, 1:].transpose(1, 2).reshape(y.shape[0], -1, rows, cols)
            elif not include_cls:
                y = y[:, 1:]
            out.append(y)
        return out


class ViTForImageClassification(PreTrainedModel):
    """ViT with a linear head on the class token (or the mean patch token, config.pooling).

    Args:
        config: the model's sizes; ``num_labels`` outputs (0: no head, the features
            themselves), ``pooling`` and ``problem_type`` (the loss).
    """

    task = "image-classification"

    config_class = ViTConfig
    base_model_prefix = "vit"
    head_prefixes = ("classifier.",)

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = (
            nn.Linear(config.hidden_size, config.num_labels)
            if config.num_labels > 0
            else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> TaskOutput:
        """Class logits (B, num_labels); with ``labels``, the loss.

        Args:
            pixel_values: (B, C, H, W) normalised images.
            output_attentions: return each block's attention weights.
            output_hidden_states: return the embeddings and each block's output.
            interpolate_pos_encoding: resize the position grid to another image size.
            labels: (B,) class ids (cross-entropy), (B, num_labels) float targets (BCE,
                or with ``config.problem_type="single_label_classification"`` soft targets
                for cross-entropy), or (B,) values when num_labels is 1 (MSE); see
                :func:`classification_loss`.
        """
        out = self.vit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )
        seq = out.last_hidden_state
        features = seq[:, 1:].mean(dim=1) if self.config.pooling == "mean" else seq[:, 0]
        logits = self.classifier(features)
        loss = None
        if labels is not None:
            loss = classification_loss(
                logits, labels, self.config.num_labels, self.config.problem_type
            )
        return TaskOutput(**out.to_dict(), loss=loss, logits=logits)

    def forward_features(
        self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """The backbone's :meth:`ViTModel.forward_features`: (B, 1 + patches, D).

        Args:
            pixel_values: (B, C, H, W) normalised images.
            interpolate_pos_encoding: resize the position grid to another image size.
        """
        return self.vit.forward_features(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
        )

    def forward_intermediates(
        self,
        pixel_values: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        include_cls: bool = False,
        interpolate_pos_encoding: bool = False,
    ) -> list[torch.Tensor]:
        """The backbone's :meth:`ViTModel.forward_intermediates`.

        Args:
            pixel_values: (B, C, H, W) normalised images.
            indices: None (every block), n (the last n) or a list of block indices.
            norm: pass each output through the final LayerNorm.
            output_fmt: "NCHW" (patch feature maps) or "NLC" (token sequences).
            include_cls: with "NLC", keep the class token in front.
            interpolate_pos_encoding: resize the position grid to another image size.

        Returns:
            One tensor per chosen block, in block order.
        """
        return self.vit.forward_intermediates(
            pixel_values,
            indices,
            norm=norm,
            output_fmt=output_fmt,
            include_cls=include_cls,
            interpolate_pos_encoding=interpolate_pos_encoding,
        )


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_labels: int, problem_type: str | None = None
) -> torch.Tensor:
    """The loss of a classifier's logits, chosen by ``problem_type`` (transformers' names) and
    the labels' dtype and shape, never by their values (the forward waits on no device).

    Args:
        logits: (B, num_labels).
        labels: (B,) class ids; (B, num_labels) float targets; or (B,) values for regression.
        num_labels: the number of outputs.
        problem_type: "single_label_classification": cross-entropy on class ids, or on
            (B, num_labels) soft targets (each row a distribution over the classes: Mixup,
            CutMix, label smoothing); "multi_label_classification": BCE on multi-hot
            targets; "regression": MSE; None: MSE for one output, else cross-entropy for
            class ids and BCE for float targets of the logits' shape.
    """
    if problem_type == "regression" or (problem_type is None and num_labels == 1):
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        return F.mse_loss(logits, labels.to(logits.dtype))
    soft = labels.is_floating_point() and labels.shape == logits.shape
    if problem_type == "multi_label_classification" or (problem_type is None and soft):
        if labels.shape != logits.shape:
            raise ValueError(
                f"multi-label targets must have the logits' shape {tuple(logits.shape)}, got "
                f"{tuple(labels.shape)}"
            )
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if soft:  # single-label soft targets: cross-entropy against each row's distribution
        return F.cross_entropy(logits, labels.to(logits.dtype))
    labels = labels.reshape(-1)
    if labels.is_floating_point() or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must be class ids of shape ({logits.shape[0]},) or class probabilities of "
            f"shape {tuple(logits.shape)}, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if input_checks_enabled():
        check_class_labels(labels, num_labels)
    return F.cross_entropy(logits, labels)
