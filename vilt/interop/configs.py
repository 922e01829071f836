"""Config translation: transformers config.json <-> vilt config dicts.

Field names already agree (vilt's configs follow transformers'), so translation is mostly
choosing the fields that change the computation and refusing the settings one side cannot
express, rather than silently computing something else.
"""

from __future__ import annotations

from typing import Any

from ..config import ACTIVATIONS, ViltConfig, ViTConfig, to_pair
from ..modeling.pretrained import CheckpointError, architecture_of
from .keymaps import TRANSFORMERS_TO_VILT, VILT_TO_TRANSFORMERS

# Fields both sides share, by family; every one of them reaches the computation or the labels.
COMMON_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
    "qkv_bias",
    "image_size",
    "patch_size",
    "num_channels",
    "initializer_range",
)
VILT_FIELDS = (
    *COMMON_FIELDS,
    "vocab_size",
    "type_vocab_size",
    "modality_type_vocab_size",
    "max_position_embeddings",
    "max_image_length",
    "num_images",
    "pad_token_id",
)
# problem_type: transformers' choice of loss for a classifier (vilt's ViT reads it the same way)
FIELDS = {"vit": (*COMMON_FIELDS, "problem_type"), "vilt": VILT_FIELDS}
CONFIG_CLASSES = {"vit": ViTConfig, "vilt": ViltConfig}


def _labels(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("id2label"):  # as written: the config checks its keys and names
        return {"id2label": data["id2label"]}
    for key in ("num_labels", "_num_labels"):  # older configs without label names
        if isinstance(data.get(key), int):
            return {"num_labels": data[key]}
    return {}


def config_from_transformers(data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """A vilt config dict (with model_type and the vilt architecture) from a transformers
    config.json.

    Args:
        data: the parsed transformers config.json of a ViT or ViLT model.
        source: how error messages name the file (e.g. its path).

    Returns:
        The fields vilt's config shares with it, the labels, ``model_type`` ("vit" or "vilt")
        and ``architectures`` (one vilt class name).

    Raises:
        CheckpointError: naming the field vilt cannot reproduce (another model_type, an
            unsupported hidden_act, a ViT pooler other than tanh(Linear(D, D)), or an
            ``architectures`` that is not a list of class names).
    """
    family = data.get("model_type")
    if family not in FIELDS:
        raise CheckpointError(
            f"{source}: model_type {family!r} is not a ViT or ViLT model (expected 'vit' or 'vilt')"
        )
    act = data.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(
            f"{source}: hidden_act {act!r} is not supported; vilt supports {', '.join(ACTIVATIONS)}"
        )
    if family == "vit":
        size = data.get("pooler_output_size") or data.get("hidden_size")
        if size != data.get("hidden_size", 768) or data.get("pooler_act", "tanh") != "tanh":
            raise CheckpointError(
                f"{source}: a pooler of size {size} with {data.get('pooler_act')!r} is not "
                "supported; vilt's ViT pooler is tanh(Linear(hidden_size, hidden_size))"
            )
    out = {k: data[k] for k in FIELDS[family] if k in data}
    for key in ("image_size", "patch_size"):
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    out.update(_labels(data))
    out["model_type"] = family
    arch = architecture_of(data, source)
    out["architectures"] = [TRANSFORMERS_TO_VILT.get(arch, arch)]
    return out


def config_to_transformers(config: ViTConfig | ViltConfig, architecture: str) -> dict[str, Any]:
    """transformers' config.json for a vilt config and model class name.

    Args:
        config: the model's config.
        architecture: the vilt class name (e.g. "ViltForQuestionAnswering"); it becomes the
            transformers class in ``architectures``.

    Returns:
        The config.json contents as a dict, with labels (``LABEL_i`` when unnamed).

    Raises:
        CheckpointError: when the model computes something transformers' class cannot
            (layer scale, mean pooling, a non-square ViLT image or patch size).
        KeyError: for an architecture with no transformers counterpart.
    """
    family = config.model_type
    if config.layer_scale_init_value:
        raise CheckpointError(
            f"{type(config).__name__}.layer_scale_init_value={config.layer_scale_init_value!r}: "
            "transformers' ViT and ViLT have no layer scale, so this model cannot be exported"
        )
    if family == "vit" and config.pooling != "cls":
        raise CheckpointError(
            f"ViTConfig.pooling={config.pooling!r} cannot be exported: transformers' "
            "ViTForImageClassification classifies the class token ('cls')"
        )
    if family == "vilt":
        for key in ("image_size", "patch_size"):
            pair = to_pair(getattr(config, key))
            if pair[0] != pair[1]:
                raise CheckpointError(
                    f"ViltConfig.{key}={pair!r} is not square; transformers' ViLT takes one "
                    "integer for it"
                )
    values = config.to_dict()
    out: dict[str, Any] = {k: values[k] for k in FIELDS[family]}
    for key in ("image_size", "patch_size"):
        if isinstance(out[key], list) and family == "vilt":
            out[key] = out[key][0]  # transformers' ViLT takes integers (square, checked above)
    num_labels = config.num_labels
    id2label = config.id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    out["id2label"] = {str(k): v for k, v in id2label.items()}
    out["label2id"] = config.label2id or {v: k for k, v in id2label.items()}
    if family == "vit":
        out["pooler_output_size"] = config.hidden_size
        out["pooler_act"] = "tanh"
    else:
        out["tie_word_embeddings"] = True
    out["model_type"] = family
    out["architectures"] = [VILT_TO_TRANSFORMERS[architecture]]
    return out
