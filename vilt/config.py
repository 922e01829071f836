"""Model configurations: dataclasses whose field names follow transformers' ViTConfig/ViltConfig.

Both configs round-trip through JSON (``to_dict``/``from_dict``, ``save``/``load``), validate
themselves on construction, and come in named presets (``ViTConfig.from_preset("vit-small/16")``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .config_checks import check_field_types
from .textfiles import TextFileError, read_text

ACTIVATIONS = (
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
    "tanh",
)

PROBLEM_TYPES = (None, "single_label_classification", "multi_label_classification", "regression")

C = TypeVar("C", bound="_BaseConfig")


class ConfigError(ValueError):
    """A configuration value that cannot build a model; the message names the field."""


def to_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from one size (a square) or a pair of sizes.

    Args:
        value: an int, or a sequence of two ints (a tuple, or a list read from JSON).

    Raises:
        ValueError: for a sequence that is not two long.
    """
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"expected one size or (height, width), got {value!r}")
    h, w = value
    return (int(h), int(w))


@dataclass
class _BaseConfig:
    """Fields and behaviour shared by every vilt config."""

    model_type: ClassVar[str] = ""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    image_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    num_channels: int = 3
    initializer_range: float = 0.02
    # Regularisation for training from scratch (timm's names in ours): stochastic depth whose
    # rate rises linearly over the blocks to drop_path_rate, and per-channel scales on each
    # residual branch initialised at layer_scale_init_value (0: no layer scale). Off by
    # default: the public checkpoints have neither.
    drop_path_rate: float = 0.0
    layer_scale_init_value: float = 0.0
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self._check_types()
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        if isinstance(self.patch_size, list):
            self.patch_size = tuple(self.patch_size)
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            if self.label2id is None:
                self.label2id = {v: k for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        if self.label2id is not None:
            self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
        self.validate()

    # -- validation ---------------------------------------------------------------------------
    def _check_types(self) -> None:
        """Every field's JSON type, before any value is used (see :mod:`vilt.config_checks`)."""
        check_field_types(self)

    def _positive_fields(self) -> tuple[str, ...]:
        return (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "num_channels",
        )

    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot build a model."""
        name = type(self).__name__
        for f in self._positive_fields():
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}.{f} must be a positive integer, got {value!r}")
        for f in ("image_size", "patch_size"):
            try:
                sizes = to_pair(getattr(self, f))
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{name}.{f} must be one size or (height, width), got {getattr(self, f)!r}"
                ) from None
            for v in sizes:
                if v <= 0:
                    raise ConfigError(f"{name}.{f} must be positive, got {getattr(self, f)!r}")
        ih, iw = to_pair(self.image_size)
        ph, pw = to_pair(self.patch_size)
        if ph > ih or pw > iw:
            raise ConfigError(
                f"{name}.patch_size {self.patch_size!r} is larger than image_size {self.image_size!r}"
            )
        if ih % ph or iw % pw:  # the strided convolution would drop the last rows or columns
            raise ConfigError(
                f"{name}.image_size {self.image_size!r} is not a whole number of patches of "
                f"patch_size {self.patch_size!r}"
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ConfigError(
                f"{name}.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"{name}.hidden_act {self.hidden_act!r} is not supported; "
                f"choose one of {', '.join(ACTIVATIONS)}"
            )
        for f in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, f)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}.{f} must be in [0, 1), got {value!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(
                f"{name}.drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}"
            )
        if self.layer_scale_init_value < 0:
            raise ConfigError(
                f"{name}.layer_scale_init_value must be >= 0 (0: off), got "
                f"{self.layer_scale_init_value!r}"
            )
        if self.layer_norm_eps <= 0:
            raise ConfigError(
                f"{name}.layer_norm_eps must be positive, got {self.layer_norm_eps!r}"
            )
        if self.num_labels < 0:
            raise ConfigError(f"{name}.num_labels must be >= 0, got {self.num_labels!r}")

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Rows and columns of the learned position-embedding grid."""
        ih, iw = to_pair(self.image_size)
        ph, pw = to_pair(self.patch_size)
        return ih // ph, iw // pw

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("image_size", "patch_size"):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        if out["id2label"] is not None:
            out["id2label"] = {str(k): v for k, v in out["id2label"].items()}
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], **overrides: Any) -> C:
        """Build from a dict, ignoring keys that are not fields (e.g. model_type, architectures)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}; "
                f"known fields: {', '.join(sorted(names))}"
            )
        kwargs = {k: v for k, v in data.items() if k in names}
        relabelled = "num_labels" in overrides and "id2label" not in overrides
        stale = relabelled and len(kwargs.get("id2label") or ()) not in (0, overrides["num_labels"])
        if stale:  # the checkpoint's label names no longer fit the new head
            kwargs["id2label"] = None
            kwargs["label2id"] = None
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON to ``path`` (a file path)."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json_string())

    @classmethod
    def load(cls: type[C], path: str | os.PathLike, **overrides: Any) -> C:
        """Read a config written by ``save`` (or a transformers config.json of the same family)."""
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
        except TextFileError as err:
            raise ConfigError(str(err)) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return type(self).from_dict(self.to_dict(), **changes)

    @classmethod
    def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
        """A named preset (see ``PRESETS``), optionally with fields overridden."""
        known = sorted(k for k, (c, _) in PRESETS.items() if c is cls)
        if name not in PRESETS or PRESETS[name][0] is not cls:
            raise ConfigError(
                f"unknown {cls.__name__} preset {name!r}; known presets: {', '.join(known)}"
            )
        return cls(**{**PRESETS[name][1], **overrides})


@dataclass
class ViTConfig(_BaseConfig):
    """Image-only Vision Transformer. Defaults are ViT-B/16 at 224 (google/vit-base-patch16-224).

    Field names and meanings follow transformers' ``ViTConfig``; construction checks every
    field and raises :class:`ConfigError` naming the first one that cannot build a model.

    Args:
        hidden_size: width of every token (the model dimension D).
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: heads per attention; must divide ``hidden_size``.
        intermediate_size: hidden width of each block's MLP.
        hidden_act: the MLP's activation, one of ``ACTIVATIONS`` ("gelu", "relu", ...).
        hidden_dropout_prob: dropout on embeddings and block outputs, in [0, 1).
        attention_probs_dropout_prob: dropout on the attention probabilities, in [0, 1).
        layer_norm_eps: epsilon of every LayerNorm (> 0).
        qkv_bias: whether the query, key and value projections have a bias.
        image_size: input (height, width) in pixels, or one int for a square; a whole number
            of patches, it sets the learned position grid.
        patch_size: (height, width) of a patch in pixels, or one int for a square.
        num_channels: channels of the input images (3 for RGB).
        initializer_range: standard deviation of the normal weight initialisation.
        drop_path_rate: stochastic-depth rate of the last block, rising linearly from 0 over
            the blocks, in [0, 1) (0: off).
        layer_scale_init_value: initial per-channel scale on each residual branch (0: none).
        num_labels: outputs of the classification head; set from ``id2label`` when given.
        id2label: class index to label name, or None; JSON's string keys become ints.
        label2id: label name to class index; derived from ``id2label`` when None.
        pooling: what ``ViTForImageClassification`` classifies: "cls" (the class token) or
            "mean" (the mean patch token).
        problem_type: the classification loss: None (decided from the labels), or one of
            "single_label_classification" (cross-entropy on class ids or soft targets),
            "multi_label_classification" (BCE) and "regression" (MSE).

    Raises:
        ConfigError: for a field of the wrong type or an impossible value.
    """

    model_type: ClassVar[str] = "vit"

    pooling: str = "cls"  # "cls" or "mean": what ViTForImageClassification classifies
    # The loss of ViTForImageClassification (transformers' field and names): None decides from
    # the labels' dtype and shape (one output: MSE; class ids: cross-entropy; float targets of
    # the logits' shape: multi-label BCE); "single_label_classification" takes class ids or
    # soft targets (rows of class probabilities: Mixup, CutMix, label smoothing) with
    # cross-entropy; "multi_label_classification" BCE; "regression" MSE.
    problem_type: str | None = None

    def validate(self) -> None:
        super().validate()
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"ViTConfig.pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(
                f"ViTConfig.problem_type must be None or one of {', '.join(PROBLEM_TYPES[1:])}, "
                f"got {self.problem_type!r}"
            )


@dataclass
class ViltConfig(_BaseConfig):
    """Vision-and-language transformer. Defaults are ViLT-B/32 at 384 (dandelin/vilt-b32-mlm).

    Field names and meanings follow transformers' ``ViltConfig``; construction checks every
    field and raises :class:`ConfigError` naming the first one that cannot build a model.

    Args:
        hidden_size: width of every token (the model dimension D).
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: heads per attention; must divide ``hidden_size``.
        intermediate_size: hidden width of each block's MLP.
        hidden_act: the MLP's activation, one of ``ACTIVATIONS`` ("gelu", "relu", ...).
        hidden_dropout_prob: dropout on embeddings and block outputs, in [0, 1).
        attention_probs_dropout_prob: dropout on the attention probabilities, in [0, 1).
        layer_norm_eps: epsilon of every LayerNorm (> 0).
        qkv_bias: whether the query, key and value projections have a bias.
        image_size: (height, width) in pixels of the learned position grid (resized to each
            image), or one int for a square; a whole number of patches. Default 384.
        patch_size: (height, width) of a patch in pixels, or one int for a square. Default 32.
        num_channels: channels of the input images (3 for RGB).
        initializer_range: standard deviation of the normal weight initialisation.
        drop_path_rate: stochastic-depth rate of the last block, rising linearly from 0 over
            the blocks, in [0, 1) (0: off).
        layer_scale_init_value: initial per-channel scale on each residual branch (0: none).
        num_labels: outputs of the classification head; set from ``id2label`` when given.
        id2label: class index to label name, or None; JSON's string keys become ints.
        label2id: label name to class index; derived from ``id2label`` when None.
        vocab_size: size of the word-embedding table (the tokenizer's vocabulary).
        type_vocab_size: size of the text token-type (segment) embedding table.
        modality_type_vocab_size: size of the modality-type table: 0 text, 1 the image, 2 a
            second image (NLVR2); at least 2.
        max_position_embeddings: longest text sequence (the text position table's size).
        max_image_length: in training, how many patches per image to sample at random; -1
            keeps every patch (evaluation always keeps every patch).
        num_images: images per text for NLVR2-style models; -1 unset (2 is used there).
        pad_token_id: the padding token's id, whose word embedding gets no gradient; or None.
        pooled_only: run the last block for the [CLS] token only in models whose heads read
            the pooled state alone (same logits, less work; ``last_hidden_state`` is (B, 1, D)).
        wpa_weight: weight of the word-patch alignment loss in ``ViltForPreTraining`` (0: off;
            the ViLT paper trains with 0.1).

    Raises:
        ConfigError: for a field of the wrong type or an impossible value.
    """

    model_type: ClassVar[str] = "vilt"

    image_size: int | tuple[int, int] = 384
    patch_size: int | tuple[int, int] = 32
    vocab_size: int = 30522
    type_vocab_size: int = 2
    modality_type_vocab_size: int = 2
    max_position_embeddings: int = 40
    max_image_length: int = -1
    num_images: int = -1
    pad_token_id: int | None = None
    # The models whose heads read the pooled [CLS] state alone (VQA, ITM, NLVR2, ViltModel's
    # pooler) run the last block for that token only: the same logits and gradients for
    # less work; last_hidden_state is then (B, 1, D). Models that read every text position
    # (MLM, pretraining) and calls asking for hidden states or attentions run in full.
    pooled_only: bool = False
    # ViltForPreTraining adds word-patch alignment (an optimal-transport distance between a
    # pair's words and patches, lowered for matched pairs, raised for mismatched) at this
    # weight; 0 leaves it out. The ViLT paper trains with 0.1.
    wpa_weight: float = 0.0

    def _positive_fields(self) -> tuple[str, ...]:
        return (
            *super()._positive_fields(),
            "vocab_size",
            "type_vocab_size",
            "max_position_embeddings",
        )

    def validate(self) -> None:
        super().validate()
        if self.modality_type_vocab_size < 2:
            raise ConfigError(
                "ViltConfig.modality_type_vocab_size must be >= 2 (text and image), "
                f"got {self.modality_type_vocab_size!r}"
            )
        if self.max_image_length == 0 or self.max_image_length < -1:
            raise ConfigError(
                "ViltConfig.max_image_length must be -1 (keep every patch) or positive, "
                f"got {self.max_image_length!r}"
            )
        if self.num_images != -1 and self.num_images < 1:
            raise ConfigError(f"ViltConfig.num_images must be -1 or >= 1, got {self.num_images!r}")
        if self.num_images > 1 and self.modality_type_vocab_size < self.num_images + 1:
            raise ConfigError(
                f"ViltConfig.num_images={self.num_images} needs modality_type_vocab_size >= "
                f"{self.num_images + 1}, got {self.modality_type_vocab_size}"
            )
        if not self.wpa_weight >= 0:
            raise ConfigError(f"ViltConfig.wpa_weight must be >= 0, got {self.wpa_weight!r}")
        if not isinstance(self.pooled_only, bool):
            raise ConfigError(
                f"ViltConfig.pooled_only must be true or false, got {self.pooled_only!r}"
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"ViltConfig.pad_token_id {self.pad_token_id} is outside the vocabulary "
                f"(vocab_size {self.vocab_size})"
            )


# a small ViLT for 64x64 images as 64 patches: vilt-small, and (16 heads, 48x48) vilt-small-h16
_VILT_SMALL: dict[str, Any] = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
    image_size=64,
    patch_size=8,
    vocab_size=1000,
    max_position_embeddings=40,
    layer_norm_eps=1e-6,
)

PRESETS: dict[str, tuple[type[_BaseConfig], dict[str, Any]]] = {
    # public ViT shapes
    "vit-tiny/16": (ViTConfig, dict(hidden_size=192, num_attention_heads=3, intermediate_size=768)),
    "vit-small/16": (
        ViTConfig,
        dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536),
    ),
    "vit-base/16": (ViTConfig, dict()),
    "vit-base/32": (ViTConfig, dict(patch_size=32)),
    "vit-large/16": (
        ViTConfig,
        dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        ),
    ),
    # small shapes for CPU training and tests
    "vit-micro": (
        ViTConfig,
        dict(
            hidden_size=96,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=192,
            image_size=32,
            patch_size=4,
            layer_norm_eps=1e-6,
        ),
    ),
    # 16x16 images as 16 patches of 4x4, mean-pooled: small images (the digits recipe's)
    "vit-nano": (
        ViTConfig,
        dict(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            image_size=16,
            patch_size=4,
            layer_norm_eps=1e-6,
            pooling="mean",
        ),
    ),
    # the ViT of vilt-small-h16's shape (width 128, 4 layers, 16 heads, 48x48 as 36 patches
    # of 8 px): a ViT trained at it starts that ViLT (from_vit)
    "vit-mini-h16": (
        ViTConfig,
        dict(
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=16,
            intermediate_size=256,
            image_size=48,
            patch_size=8,
            layer_norm_eps=1e-6,
        ),
    ),
    "vit-test": (
        ViTConfig,
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        ),
    ),
    # ViLT
    "vilt-b32": (ViltConfig, dict()),
    "vilt-small": (ViltConfig, _VILT_SMALL),
    # vilt-small with 16 heads of 8 dims (the same weights as 4 of 32) at 48x48: 36 patches
    "vilt-small-h16": (ViltConfig, {**_VILT_SMALL, "num_attention_heads": 16, "image_size": 48}),
    "vilt-test": (
        ViltConfig,
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            vocab_size=100,
            max_position_embeddings=16,
        ),
    ),
}


def preset_names() -> list[str]:
    """Every preset name, ViT and ViLT."""
    return sorted(PRESETS)


def get_preset(name: str, **overrides: Any) -> ViTConfig | ViltConfig:
    """The config for a preset name of either family.

    Args:
        name: a preset name (see :func:`preset_names`), e.g. "vit-small/16" or "vilt-b32".
        **overrides: config fields to change from the preset.

    Returns:
        A ViTConfig or ViltConfig, as the preset's family.

    Raises:
        ConfigError: for an unknown preset name, an unknown field or an invalid value.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    cls, _ = PRESETS[name]
    return cls.from_preset(name, **overrides)
