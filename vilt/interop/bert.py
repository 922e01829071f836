"""BERT's text embeddings for a ViLT made ``from_vit(..., text=...)``: transformers' BertModel
(or BertFor...) checkpoints, local or by hub name, read without unpickling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..modeling.pretrained import CheckpointError
from ..textfiles import TextFileError, read_text
from .reader import CONFIG_NAME, read_weights, resolve

# BERT's embedding names -> vilt's TextEmbeddings names (older checkpoints say gamma/beta)
_NAMES = {
    "word_embeddings.weight": "word_embeddings.weight",
    "position_embeddings.weight": "position_embeddings.weight",
    "token_type_embeddings.weight": "token_type_embeddings.weight",
    "LayerNorm.weight": "norm.weight",
    "LayerNorm.bias": "norm.bias",
    "LayerNorm.gamma": "norm.weight",
    "LayerNorm.beta": "norm.bias",
}


def _bert_directory(path_or_name: str) -> tuple[Path, dict[str, Any]]:
    local = resolve(path_or_name)
    if local is None or not (local / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path_or_name}: not a BERT checkpoint directory or hub name")
    try:
        config = json.loads(read_text(local / CONFIG_NAME))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{local / CONFIG_NAME}: not valid JSON ({err})") from err
    except TextFileError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(config, dict) or config.get("model_type") != "bert":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise CheckpointError(
            f"{path_or_name}: holds a {kind!r} model, not a BERT (model_type 'bert')"
        )
    return local, config


def read_bert_config(path_or_name: str) -> dict[str, Any]:
    """The config.json of a BERT checkpoint (no weights read): what a job needs to size a
    ViLT before building it."""
    return _bert_directory(path_or_name)[1]


def read_bert_text_embeddings(path_or_name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, text-embedding tensors in vilt's names) of a BERT checkpoint.

    Args:
        path_or_name: a transformers BERT checkpoint directory (BertModel or BertFor...), or a
            hub name resolved through the local huggingface_hub cache.

    Returns:
        The checkpoint's config.json as a dict, and its word, position and token-type
        embeddings and LayerNorm in ``TextEmbeddings``' names (``norm.weight``, ...).

    Raises:
        CheckpointError: when it is not a BERT directory (no config.json, or a model_type
            other than "bert"), its weights cannot be read, or an embedding weight is missing.
    """
    local, config = _bert_directory(path_or_name)
    weights = read_weights(local)
    state = {}
    for prefix in ("embeddings.", "bert.embeddings."):
        for theirs, ours in _NAMES.items():
            if prefix + theirs in weights:
                state[ours] = weights[prefix + theirs]
    missing = sorted(set(_NAMES.values()) - set(state))
    if missing:
        raise CheckpointError(
            f"{path_or_name}: BERT checkpoint lacks embeddings: {', '.join(missing)}"
        )
    return config, state
