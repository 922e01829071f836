"""The sharded state of FSDP2 runs (``fully_shard``, accelerate's ``fsdp_version: 2``), as
checkpoints hold it: written and read with torch.distributed.checkpoint (DCP), in safetensors
files, with nothing unpickled.

Every process writes its own shards of the model's parameters and of the optimizer's moments
into ``sharded/shard-<rank + 1>-model-00001-of-00001.safetensors`` through DCP's
``HuggingFaceStorageWriter``; each file's JSON header records where its pieces lie in the
whole tensors. Reading, ``HuggingFaceStorageReader`` rebuilds the layout from those headers
and each process reads the parts its own shards cover. The optimizer's parameter groups
(hyperparameters, the same on every process) are not tensors: the caller keeps them as JSON.

Why not DCP's default ``FileSystemWriter`` (what accelerate's ``save_state`` uses): it keeps
the checkpoint's layout in a ``.metadata`` file that its reader loads with ``pickle.load``,
and every value that is not a tensor as ``torch.save`` bytes loaded with
``torch.load(weights_only=False)``; a crafted checkpoint would run code on resume. The
collectives DCP runs between the processes of one job exchange pickled plans, as
torch.distributed's object collectives do: those come from the job's own processes, never
from a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "SHARDED_DIR",
    "all_finite",
    "full_tensor",
    "is_sharded",
    "load_sharded",
    "plain_class",
    "save_sharded",
]

SHARDED_DIR = "sharded"


def is_sharded(accelerator: Any) -> bool:
    """Whether the run's model is sharded by FSDP2 (accelerate's ``is_fsdp2``).

    Args:
        accelerator: the run's Accelerator."""
    return bool(getattr(accelerator, "is_fsdp2", False))


def full_tensor(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A DTensor's whole value as a plain tensor (a collective where it is sharded or
    partial, as an FSDP2 gradient norm is); any other tensor, or None, as it is.

    Args:
        tensor: the tensor, or None."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def all_finite(tensors: list[torch.Tensor]) -> list[bool]:
    """Whether each tensor holds only finite values (one host read). For DTensors the
    answer covers every process's shard (one all-reduce), so that all processes agree.

    Args:
        tensors: floating-point tensors, plain or DTensors (all processes pass the same)."""
    from torch.distributed.tensor import DTensor

    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    flags = torch.stack([torch.isfinite(t).all() for t in local]).float()
    if any(isinstance(t, DTensor) for t in tensors):
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
    return [bool(v) for v in flags.tolist()]


def plain_class(module: nn.Module) -> type[nn.Module]:
    """The model's own class: ``fully_shard`` swaps a module's class for an ``FSDP<name>``
    subclass, which cannot build an unsharded copy.

    Args:
        module: a module, sharded or not."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def _tensors_only(state: dict[str, Any], where: str) -> None:
    for key, value in state.items():
        if isinstance(value, dict):
            _tensors_only(value, f"{where}.{key}")
        elif not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{where}.{key} is a {type(value).__name__}, not a tensor: sharded checkpoints "
                "hold tensors (the optimizer's parameter groups go to JSON)"
            )


def save_sharded(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> list[dict[str, Any]]:
    """Write this process's shards of the model and optimizer state under
    ``directory/sharded/``; every process must call it. Returns the optimizer's parameter
    groups (with parameter names), for the caller to keep as JSON.

    Args:
        directory: the checkpoint directory (shared by all processes).
        model: the bare FSDP2 model (no DDP or torch.compile wrapper).
        optimizer: the torch optimizer over its parameters."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    optim_state = get_optimizer_state_dict(model, optimizer)
    state = {"model": get_model_state_dict(model), "optimizer": optim_state["state"]}
    _tensors_only(state, "state")
    writer = dcp.HuggingFaceStorageWriter(str(Path(directory) / SHARDED_DIR), save_distributed=True)
    dcp.save(state, storage_writer=writer)
    return optim_state["param_groups"]


def load_sharded(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    param_groups: list[dict[str, Any]] | None = None,
) -> None:
    """Read the shards under ``directory/sharded/`` into the model and (given) optimizer;
    every process must call it. Reads safetensors files only.

    Args:
        directory: the checkpoint directory.
        model: the bare FSDP2 model, built and sharded as the saving run's was.
        optimizer: the torch optimizer over its parameters, or None (model only).
        param_groups: the optimizer's parameter groups that :func:`save_sharded` returned."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:  # a fresh optimizer's moments are made here, then overwritten
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)["state"]
    reader = dcp.HuggingFaceStorageReader(str(Path(directory) / SHARDED_DIR))
    dcp.load(state, storage_reader=reader)
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        if param_groups is None:
            raise ValueError("load_sharded: the optimizer's param_groups are needed with it")
        loaded = {"state": state["optimizer"], "param_groups": param_groups}
        set_optimizer_state_dict(model, optimizer, loaded)
