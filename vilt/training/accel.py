"""The Accelerator a TrainingConfig asks for, and what its trackers are told."""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import is_tensorboard_available

from .config import TrainingConfig

__all__ = ["build_accelerator", "process_state", "tracker_config", "uses_tensorboard"]


def uses_tensorboard(config: TrainingConfig) -> bool:
    """TensorBoard logging is on when asked for and installed; otherwise silently off."""
    return config.tensorboard and is_tensorboard_available()


def build_accelerator(config: TrainingConfig) -> Accelerator:
    """Mixed precision (the config's, else the launcher's: ``accelerate launch
    --mixed_precision`` or an accelerate config), gradient accumulation, TensorBoard (when
    installed) under ``output_dir``, torch.compile on request; DDP over gloo when torchrun
    starts several processes on a machine without GPUs."""
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum_steps,
        log_with="tensorboard" if uses_tensorboard(config) else None,
        project_dir=str(config.output_dir),
        dynamo_backend="inductor" if config.compile else "no",
        cpu=_launched_without_accelerator(),
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        atexit.unregister(_close_process_group)  # once, however many accelerators are built
        atexit.register(_close_process_group)
    return accelerator


def _close_process_group() -> None:
    """Close the process group when the interpreter exits, if the script did not: a process
    that exits with gloo's threads still running can abort ("terminate called without an
    active exception", exit 134) after its run finished and saved."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def process_state() -> PartialState:
    """This process's place in the run. Code that asks before the Accelerator exists must ask
    here: accelerate keeps the first answer, and a plain ``PartialState()`` under torchrun on
    a machine without GPUs would make every process believe it trains alone."""
    return PartialState(cpu=_launched_without_accelerator())


def _launched_without_accelerator() -> bool:
    """Whether a launcher (torchrun) started several processes on a machine without GPUs:
    accelerate then needs ``cpu=True``, or each process would train alone."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    return launched and not torch.cuda.is_available() and not xpu


def tracker_config(config: TrainingConfig) -> dict[str, Any]:
    """The config as TensorBoard hparams accept: scalars and strings only."""
    out = {}
    for key, value in config.to_dict().items():
        if isinstance(value, bool | int | float | str):
            out[key] = value
        elif value is not None:
            out[key] = str(value)
    return out
