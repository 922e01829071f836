"""ViLT initialised from a ViT, as the paper trains it, and text positions that grow.

``ViltForPreTraining.from_vit(source)`` (any ViLT class) takes from a ViT checkpoint (vilt's
or transformers' format, a directory or hub name, or a ViT model object) its patch
projection, image class token, position embeddings (resampled when the ViLT patch grid
differs), every encoder block and the final norm. The text embeddings, the modality-type
table, the pooler and the heads start fresh, unless ``text=`` names a BERT checkpoint, whose
word, position and token-type embeddings and their norm seed the text side (as ViLT uses
bert-base-uncased's). The ViLT config follows the ViT's sizes; overriding one that the ViT's
weights fix (width, depth, heads, patch size, ...) is an error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import ViltConfig, to_pair
from .embeddings import resample_positions
from .pretrained import Checkpoint, CheckpointError, CheckpointWarning, read_checkpoint

# ViT config fields its weights fix: a ViLT made from it must agree on each.
FIXED_BY_VIT = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "qkv_bias",
    "patch_size",
    "num_channels",
    "layer_scale_init_value",
)
# ViT config fields the ViLT follows unless overridden.
FOLLOWED_FROM_VIT = (
    "image_size",
    "layer_norm_eps",
    "initializer_range",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "drop_path_rate",
)
# BERT config fields the text side follows unless overridden.
FOLLOWED_FROM_TEXT = ("vocab_size", "type_vocab_size", "pad_token_id")

# (config dict, text-embedding state in ViLT's TextEmbeddings names) of a BERT checkpoint;
# registered by vilt.interop, which reads transformers' formats.
TextReader = Callable[[str], tuple[dict[str, Any], dict[str, torch.Tensor]]]
TEXT_READERS: list[TextReader] = []


def register_text_reader(reader: TextReader) -> TextReader:
    """Add the reader ``from_vit(text=...)`` uses for BERT checkpoints."""
    if reader not in TEXT_READERS:
        TEXT_READERS.append(reader)
    return reader


def _vit_weights(source: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(config dict, state dict in ViTModel's names, a name for messages) of ``source``."""
    from .vit import ViTForImageClassification, ViTModel

    if isinstance(source, nn.Module):
        vit = source.vit if isinstance(source, ViTForImageClassification) else source
        if not isinstance(vit, ViTModel):
            raise TypeError(
                f"from_vit takes a ViTModel or ViTForImageClassification (or a checkpoint "
                f"path), got {type(source).__name__}"
            )
        state = {k: v.detach().clone() for k, v in vit.state_dict().items()}
        return vit.config.to_dict(), state, type(source).__name__
    if isinstance(source, Checkpoint):  # read already (a job reads it once for its sizes)
        ckpt, name = source, source.source
    else:
        name = os.fspath(source)
        ckpt = read_checkpoint(name, ViTModel)
    if ckpt.config.get("model_type") != "vit":
        raise CheckpointError(
            f"{name}: holds a {ckpt.config.get('model_type')!r} model; from_vit needs a ViT"
        )
    state = {k.removeprefix("vit."): v for k, v in ckpt.state_dict.items()}
    return ckpt.config, state, name


def _check_overrides(vit: dict[str, Any], overrides: dict[str, Any], name: str) -> None:
    for field in FIXED_BY_VIT:
        if field not in overrides or field not in vit:
            continue
        ours, theirs = overrides[field], vit[field]
        if field == "patch_size":
            ours, theirs = to_pair(ours), to_pair(theirs)
        if ours != theirs:
            raise CheckpointError(
                f"{name}: the ViT has {field}={vit[field]!r}, which its weights fix; "
                f"from_vit cannot build a ViLT with {field}={overrides[field]!r}"
            )


def vilt_config_from_vit(
    vit_config: dict[str, Any],
    text_config: dict[str, Any] | None = None,
    *,
    source: str = "the ViT",
    **overrides: Any,
) -> ViltConfig:
    """The config of a ViLT made ``from_vit``: the ViT's sizes, the BERT text checkpoint's
    vocabulary (when given), then ``overrides``; an override the ViT's weights contradict is
    an error.

    Args:
        vit_config: the ViT checkpoint's config (vilt's field names).
        text_config: the BERT checkpoint's config.json, or None.
        source: how to name the ViT in errors.
        **overrides: ViltConfig fields.

    Raises:
        CheckpointError: an override contradicts the ViT.
    """
    _check_overrides(vit_config, overrides, source)
    fields = {f: vit_config[f] for f in FIXED_BY_VIT + FOLLOWED_FROM_VIT if f in vit_config}
    if text_config is not None:
        fields.update({f: text_config[f] for f in FOLLOWED_FROM_TEXT if f in text_config})
    return ViltConfig.from_dict(fields, **overrides)


def build_from_vit(cls: type, source: Any, text: str | None, overrides: dict[str, Any]) -> Any:
    """The body of ``from_vit`` (see the module docstring)."""
    vit_config, vit_state, name = _vit_weights(source)
    text_config, text_state = None, {}
    if text is not None:
        if not TEXT_READERS:
            raise CheckpointError("no BERT reader registered: import vilt (it registers one)")
        text_config, text_state = TEXT_READERS[0](os.fspath(text))
    config = vilt_config_from_vit(vit_config, text_config, source=name, **overrides)
    model = cls(config)
    prefix = "vilt." if getattr(cls, "base_model_prefix", "") == "vilt" else ""
    loaded: dict[str, torch.Tensor] = {}
    old_grid = _grid(vit_config)
    for key, value in vit_state.items():
        if key == "embeddings.position_embeddings":
            value = resample_positions(value, old_grid, config.patch_grid)
        if key.startswith("embeddings."):
            loaded[f"{prefix}embeddings.image.{key.removeprefix('embeddings.')}"] = value
        elif key.startswith("encoder."):
            loaded[prefix + key] = value
    positions = config.max_position_embeddings
    for key, value in text_state.items():
        if key == "position_embeddings.weight":
            if value.shape[0] < positions:
                raise CheckpointError(
                    f"{text}: has {value.shape[0]} text positions, fewer than "
                    f"max_position_embeddings={positions}"
                )
            value = value[:positions]
        loaded[f"{prefix}embeddings.text.{key}"] = value
    own = model.state_dict()
    wrong = [k for k, v in loaded.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{name}: does not fit {cls.__name__}: {', '.join(wrong)}")
    model.load_state_dict(loaded, strict=False)
    unused = sorted(k for k in vit_state if not k.startswith(("embeddings.", "encoder.")))
    new = sorted(k for k in own if k not in loaded)
    model.loading_info = {
        "from_vit": sorted(k for k in loaded if ".text." not in k),
        "from_text": sorted(k for k in loaded if ".text." in k),
        "newly_initialized": new,
        "unused": unused,
        "notes": [],
    }
    if old_grid != config.patch_grid:
        model.loading_info["notes"].append(
            f"position embeddings resampled from {old_grid[0]}x{old_grid[1]} to "
            f"{config.patch_grid[0]}x{config.patch_grid[1]} patches"
        )
    warnings.warn(_summary(cls, name, text, model.loading_info), CheckpointWarning, stacklevel=3)
    return model


def _grid(config: dict[str, Any]) -> tuple[int, int]:
    (ih, iw), (ph, pw) = (
        to_pair(config.get("image_size", 224)),
        to_pair(config.get("patch_size", 16)),
    )
    return ih // ph, iw // pw


def _summary(cls: type, name: str, text: str | None, info: dict[str, list[str]]) -> str:
    blocks = {k.split(".blocks.")[1].split(".")[0] for k in info["from_vit"] if ".blocks." in k}
    parts = [
        f"{cls.__name__} from ViT {name}: patch projection, class token, positions, "
        f"{len(blocks)} blocks and the final norm ({len(info['from_vit'])} tensors)"
    ]
    if text is not None:
        parts.append(f"text embeddings from {text} ({len(info['from_text'])} tensors)")
    fresh = sorted({k.removeprefix("vilt.").rsplit(".", 1)[0] for k in info["newly_initialized"]})
    parts.append("newly initialised: " + ", ".join(fresh))
    parts += info["notes"]
    if info["unused"]:
        parts.append("unused: " + ", ".join(info["unused"]))
    return "; ".join(parts)


def resize_text_positions(backbone: Any, n: int) -> None:
    """Give ``backbone`` (a ViltModel) ``n`` text positions. Rows the table already has keep
    their values, so a text that fit before gives the same outputs; new rows repeat the learned
    rows after position 0 ([CLS]'s) in order, as BERT's table is extended to longer texts;
    ``n`` below the current size drops the last rows."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"a text needs at least 2 positions ([CLS] and a token), got {n!r}")
    text = backbone.embeddings.text
    old = text.position_embeddings.weight
    count, d = old.shape
    if n == count:
        return
    table = nn.Embedding(n, d, device=old.device, dtype=old.dtype)
    with torch.no_grad():
        keep = min(n, count)
        table.weight[:keep] = old[:keep]
        if n > count:
            source = 1 + torch.arange(n - count, device=old.device) % max(count - 1, 1)
            table.weight[count:] = old[source.clamp(max=count - 1)]
    table.weight.requires_grad_(old.requires_grad)
    text.position_embeddings = table
    text.max_positions = n
    backbone.config.max_position_embeddings = n


class ViltStartingPoints:
    """``from_vit`` and ``resize_text_positions`` for ViltModel and every ViLT task model."""

    @classmethod
    def from_vit(cls, source: Any, *, text: str | os.PathLike | None = None, **overrides: Any):
        """A model of this class initialised from a ViT (the ViLT paper's starting point).

        Args:
            source: a ViT checkpoint (vilt or transformers format; a directory or hub name,
                or a ``Checkpoint`` already read with ``read_checkpoint``) or a ViTModel /
                ViTForImageClassification object.
            text: optionally a BERT checkpoint (transformers' format) whose text embeddings
                seed the text side; its tokenizer is the one to train with.
            **overrides: ViltConfig fields (num_labels, max_position_embeddings, image_size,
                ...); those the ViT's weights fix must agree with it.

        Returns:
            The model; ``loading_info`` lists what came from the ViT (``from_vit``), from
            the text checkpoint (``from_text``) and what was initialised
            (``newly_initialized``), and one CheckpointWarning says the same.

        Raises:
            CheckpointError: the source is not a ViT, or an override contradicts it.
        """
        return build_from_vit(cls, source, None if text is None else os.fspath(text), overrides)

    def resize_text_positions(self, n: int) -> None:
        """Hold texts of up to ``n`` tokens (``config.max_position_embeddings`` becomes ``n``).

        Texts that fit the old table give the same outputs; new positions start as copies of
        the learned ones after [CLS]'s. Saved and reloaded like any config change. A processor
        made for the old size keeps truncating there: set its ``max_length`` to ``n``.

        Args:
            n: the number of text positions, at least 2.
        """
        backbone = getattr(self, "vilt", self)
        resize_text_positions(backbone, n)
