"""Reading transformers checkpoints: local directories and hub names, into vilt's names.

Weights come from safetensors (single or sharded) or from ``pytorch_model.bin`` read with
``torch.load(weights_only=True)`` — never a plain unpickle. Hub names resolve through
huggingface_hub's cache first, so an offline machine loads what it has cached and fails at
once, in one line, on what it has not.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..modeling.pretrained import (
    Checkpoint,
    CheckpointError,
    CheckpointWarning,
    read_vilt_checkpoint,
)
from ..processing.files import hub_snapshot, is_repo_id
from ..textfiles import TextFileError, read_text
from .configs import config_from_transformers
from .keymaps import transformers_to_vilt

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
ORIGINAL_SUFFIXES = (".ckpt", ".pt", ".pth")
# What a hub download fetches: the config, the weights, and the files that preprocess inputs.
HUB_PATTERNS = [
    CONFIG_NAME,
    "*.safetensors",
    SAFETENSORS_INDEX,
    BIN_NAME,
    BIN_INDEX,
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.txt",
]


def _has_weights(directory: Path) -> bool:
    names = (SAFETENSORS_NAME, SAFETENSORS_INDEX, BIN_NAME, BIN_INDEX)
    return (directory / CONFIG_NAME).is_file() and any((directory / n).is_file() for n in names)


def resolve(path_or_name: str | os.PathLike) -> Path | None:
    """A local path for a checkpoint path or hub name.

    Args:
        path_or_name: a local file or directory (``~`` expanded), or a hub name ("org/name"),
            looked up in huggingface_hub's cache first.

    Returns:
        The existing path or the hub snapshot directory; None when it is neither an existing
        path nor a possible hub name.

    Raises:
        CheckpointError: (one line) when a hub name cannot be resolved.
    """
    path = Path(path_or_name).expanduser()
    if path.exists():
        return path
    name = os.fspath(path_or_name)
    if not is_repo_id(name):
        return None
    local, why = hub_snapshot(name, HUB_PATTERNS, usable=_has_weights)
    if local is None:
        raise CheckpointError(
            f"{name}: not a local path, and as a hub name it cannot be resolved ({why}); "
            f"pass a local checkpoint directory instead, e.g. one made with "
            f"`hf download {name} --local-dir DIR` on a machine with network"
        )
    return local


def load_torch_file(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (weights_only=True)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({first}); vilt never "
            "unpickles arbitrary objects. Where you trust the file, re-save its tensors as "
            "safetensors and load that"
        ) from err
    return data


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors or torch weights file as a flat dict of tensors."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: cannot be read as safetensors ({err})") from err
    data = load_torch_file(path)
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a flat dict of tensors (a state dict)")
    return data


def _load_sharded(index_file: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(read_text(index_file))["weight_map"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_file}: not a shard index with a weight_map ({err})") from err
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_file.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_file}: names shard {shard}, which is not there")
        state.update(load_weights_file(shard_path))
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise CheckpointError(f"{index_file}: shards lack {', '.join(absent[:5])}")
    return state


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The weights of a transformers checkpoint directory, preferring safetensors."""
    if (directory / SAFETENSORS_NAME).is_file():
        return load_weights_file(directory / SAFETENSORS_NAME)
    if (directory / SAFETENSORS_INDEX).is_file():
        return _load_sharded(directory / SAFETENSORS_INDEX)
    if (directory / BIN_NAME).is_file():
        return load_weights_file(directory / BIN_NAME)
    if (directory / BIN_INDEX).is_file():
        return _load_sharded(directory / BIN_INDEX)
    raise CheckpointError(
        f"{directory}: has {CONFIG_NAME} but no weights "
        f"({SAFETENSORS_NAME}, {SAFETENSORS_INDEX}, {BIN_NAME} or {BIN_INDEX})"
    )


def _read_config(config_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(config_file))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_file}: not valid JSON ({err})") from err
    except TextFileError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    return data


def _drop_vit_pooler(
    state: dict[str, torch.Tensor], model_cls: type | None, architecture: str
) -> list[str]:
    """transformers' ViTForImageClassification has no pooler, yet some of its checkpoints carry
    ``vit.pooler``: keep it for a ViTModel (which uses it), drop it for anything else."""
    keys = [k for k in state if k.startswith("vit.pooler.")]
    target = model_cls.__name__ if model_cls is not None else architecture
    if not keys or target == "ViTModel":
        return []
    for k in keys:
        del state[k]
    return [f"left out {', '.join(keys)} ({target} has no pooler)"]


def read_transformers_directory(
    directory: Path, model_cls: type | None, *, source: str
) -> Checkpoint:
    """A transformers ViT/ViLT checkpoint directory as a Checkpoint in vilt's names."""
    config_file = directory / CONFIG_NAME
    data = _read_config(config_file)
    config = config_from_transformers(data, source=str(config_file))
    family = config["model_type"]
    state, notes = transformers_to_vilt(read_weights(directory), family=family, source=source)
    for note in notes:  # these change outputs: say so now, not only in loading_info
        warnings.warn(f"{source}: {note}", CheckpointWarning, stacklevel=4)
    if family == "vit":
        notes += _drop_vit_pooler(state, model_cls, config["architectures"][0])
    return Checkpoint(
        config=config,
        state_dict=state,
        architecture=config["architectures"][0],
        source=source,
        notes=notes,
        format="transformers",
    )


def read_transformers_checkpoint(path_or_name: str, model_cls: type | None) -> Checkpoint | None:
    """The registered reader: transformers directories, hub names and original ViLT .ckpt files.

    Args:
        path_or_name: a checkpoint directory, an original ViLT file (.ckpt, .pt, .pth) or a
            hub name.
        model_cls: the vilt class asked for, or None to let the checkpoint decide.

    Returns:
        The Checkpoint in vilt's names; None for anything else, so that other readers (and
        vilt's own errors) get their turn.

    Raises:
        CheckpointError: for a checkpoint it recognises but cannot read or translate.
    """
    local = resolve(path_or_name)
    if local is None:
        return None
    if local.is_file():
        if local.suffix not in ORIGINAL_SUFFIXES:
            return None
        from .original import read_original_checkpoint

        return read_original_checkpoint(local, model_cls, source=path_or_name)
    if not (local / CONFIG_NAME).is_file():
        return None
    if "vilt_format" in _read_config(local / CONFIG_NAME):  # vilt's own format, from the hub
        return read_vilt_checkpoint(str(local), model_cls)
    return read_transformers_directory(local, model_cls, source=path_or_name)
