"""The original ViLT code's checkpoints (``.ckpt`` files of the dandelin/ViLT repository).

They hold a PyTorch Lightning dict with the weights under ``state_dict``, in timm/BERT names
(``transformer.blocks.N.attn.qkv`` already fused, as vilt's). Read only with
``torch.load(weights_only=True)``; the config is inferred from the weight shapes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

from ..modeling.pretrained import Checkpoint, CheckpointError, CheckpointWarning
from .keymaps import Rule, rename
from .reader import load_torch_file

BACKBONE_RULES = [
    Rule("text_embeddings.word_embeddings", "embeddings.text.word_embeddings"),
    Rule("text_embeddings.position_embeddings", "embeddings.text.position_embeddings"),
    Rule("text_embeddings.token_type_embeddings", "embeddings.text.token_type_embeddings"),
    Rule("text_embeddings.LayerNorm", "embeddings.text.norm"),
    Rule("token_type_embeddings", "embeddings.modality_type_embeddings"),
    Rule("transformer.patch_embed.proj", "embeddings.image.patch_embeddings.proj"),
    Rule("transformer.cls_token", "embeddings.image.cls_token"),
    Rule("transformer.pos_embed", "embeddings.image.position_embeddings"),
    Rule("transformer.blocks", "encoder.blocks"),
    Rule("transformer.norm", "encoder.norm"),
    Rule("pooler.dense", "pooler.dense"),
]
HEAD_RULES = [
    Rule("vqa_classifier", "classifier"),
    Rule("nlvr2_classifier", "classifier"),
    Rule("itm_score.fc", "itm_head"),
    Rule("mlm_score.transform.dense", "mlm_head.dense"),
    Rule("mlm_score.transform.LayerNorm", "mlm_head.norm"),
    Rule("mlm_score.bias", "mlm_head.bias"),
]
# Weights of the original code that no vilt model has: timm's unused classifier, BERT buffers.
IGNORED = ("transformer.head.", "text_embeddings.position_ids")
# The transformers port's value (the original mixed 1e-6 in the blocks with 1e-12 in BERT's
# text LayerNorm); override with from_pretrained(path, layer_norm_eps=...).
LAYER_NORM_EPS = 1e-12
HEAD_DIM = 64  # ViT's head width, used when the checkpoint does not say how many heads


def _architecture(heads: set[str]) -> str:
    if "vqa_classifier" in heads:
        return "ViltForQuestionAnswering"
    if "nlvr2_classifier" in heads:
        return "ViltForImagesAndTextClassification"
    if "rank_output" in heads:
        return "ViltForImageTextMatching"
    if {"itm_score", "mlm_score"} <= heads:
        return "ViltForPreTraining"
    if "mlm_score" in heads:
        return "ViltForMaskedLM"
    if "itm_score" in heads:
        return "ViltForImageTextMatching"
    return "ViltModel"


def _shape(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{source}: not an original ViLT checkpoint (no {key})")
    return state[key].shape


def infer_config(
    state: dict[str, torch.Tensor], hparams: dict[str, Any], architecture: str, source: str
) -> dict[str, Any]:
    """A vilt ViltConfig dict from the weight shapes (and the saved hyperparameters, if any)."""
    vocab, hidden = _shape(state, "text_embeddings.word_embeddings.weight", source)
    patch = _shape(state, "transformer.patch_embed.proj.weight", source)
    positions = _shape(state, "transformer.pos_embed", source)[1] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise CheckpointError(
            f"{source}: transformer.pos_embed has {positions} patch positions, not a square grid"
        )
    layers = {k.split(".")[2] for k in state if k.startswith("transformer.blocks.")}
    config = {
        "model_type": "vilt",
        "architectures": [architecture],
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": int(hparams.get("num_heads") or hidden // HEAD_DIM),
        "intermediate_size": _shape(state, "transformer.blocks.0.mlp.fc1.weight", source)[0],
        "layer_norm_eps": LAYER_NORM_EPS,
        "qkv_bias": "transformer.blocks.0.attn.qkv.bias" in state,
        "num_channels": patch[1],
        "patch_size": patch[-1],
        "image_size": grid * patch[-1],
        "vocab_size": vocab,
        "max_position_embeddings": _shape(
            state, "text_embeddings.position_embeddings.weight", source
        )[0],
        "type_vocab_size": _shape(state, "text_embeddings.token_type_embeddings.weight", source)[0],
        "modality_type_vocab_size": _shape(state, "token_type_embeddings.weight", source)[0],
    }
    if architecture == "ViltForQuestionAnswering":
        config["num_labels"] = state["vqa_classifier.3.weight"].shape[0]
    if architecture == "ViltForImagesAndTextClassification":
        config["num_labels"] = state["nlvr2_classifier.3.weight"].shape[0]
        config["num_images"] = state["nlvr2_classifier.0.weight"].shape[1] // hidden
    return config


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    data = load_torch_file(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(data).__name__}")
    state = data.get("state_dict", data)
    hparams = data.get("hyper_parameters") or {}
    hparams = hparams.get("config", hparams) if isinstance(hparams, dict) else {}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: its state_dict is not a dict of tensors")
    return state, hparams


def read_original_checkpoint(path: Path, model_cls: type | None, *, source: str) -> Checkpoint:
    """An original ViLT checkpoint as a vilt Checkpoint (fused qkv maps one to one).

    The architecture follows from the heads present (``vqa_classifier``, ``nlvr2_classifier``,
    ``rank_output``, ``itm_score``, ``mlm_score``); the config from the weight shapes.

    Args:
        path: the ``.ckpt`` file (read with ``torch.load(weights_only=True)``).
        model_cls: the class asked for, or None; unused here (the reader registry's signature).
        source: how errors and the Checkpoint name the file (what the user passed).

    Raises:
        CheckpointError: for a file torch.load cannot read safely, or one that is not an
            original ViLT checkpoint (weights missing, or a non-square position grid).
    """
    state, hparams = _load(path)
    if not any(k.startswith("transformer.blocks.") for k in state):
        raise CheckpointError(
            f"{source}: not an original ViLT checkpoint (no transformer.blocks.N weights)"
        )
    heads = {k.split(".")[0] for k in state}
    architecture = _architecture(heads)
    config = infer_config(state, hparams, architecture, source)
    prefix = "" if architecture == "ViltModel" else "vilt."
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for key, tensor in state.items():
        if key.startswith(IGNORED) or key == "mlm_score.decoder.weight":
            continue
        if key.startswith("rank_output."):
            param = key.rsplit(".", 1)[1]
            out[f"itm_head.{param}"] = torch.cat([torch.zeros_like(tensor), tensor], dim=0)
            continue
        if key.startswith("itm_score.") and "rank_output" in heads:
            notes.append(f"left out {key} (the retrieval head rank_output is the match score)")
            continue
        renamed = rename(key, BACKBONE_RULES)
        if renamed is not None:
            out[prefix + renamed] = tensor
            continue
        renamed = rename(key, HEAD_RULES)
        out[renamed if renamed is not None else key] = tensor
    decoder = state.get("mlm_score.decoder.weight")
    words = state["text_embeddings.word_embeddings.weight"]
    if decoder is not None and not torch.equal(decoder, words):
        note = (
            "mlm_score.decoder.weight differs from the word embeddings; vilt's MLM head shares "
            "the word embeddings, so this separate decoder is not loaded"
        )
        notes.append(note)
        warnings.warn(f"{source}: {note}", CheckpointWarning, stacklevel=4)
    if "num_heads" not in hparams:
        notes.append(f"num_attention_heads inferred as hidden_size // {HEAD_DIM}")
    return Checkpoint(
        config=config,
        state_dict=out,
        architecture=architecture,
        source=source,
        notes=notes,
        format="original",
    )
