"""Training checkpoints that survive any crash, and load without unpickling.

Layout: ``<output_dir>/checkpoints/step_00000120/`` holding

- ``model.safetensors``: the (unwrapped) model's state dict;
- ``optimizer.pt``: the optimizer state dict (tensors and numbers only; read back with
  ``torch.load(weights_only=True)``);
- under FSDP2, instead of those two: ``sharded/``, each process's shards of the model and
  optimizer state in safetensors files written with torch.distributed.checkpoint, and
  ``optimizer_groups.json``, the optimizer's hyperparameters (see :mod:`.sharded`);
- ``scheduler.json``, ``scaler.json`` (fp16 only): their state dicts;
- ``<name>.safetensors`` for each extra state the trainer keeps (``ema``: the moving average
  of the weights);
- ``rng_<rank>.json`` / ``rng_<rank>.safetensors``: each process's python, numpy, torch and
  CUDA random states (accelerate's ``save_state`` pickles these; we do not);
- ``processor/`` (when the Trainer has one): the processor the run trains with;
- ``trainer_state.json``, written last: the data position (epoch, batches consumed in that
  epoch, global step, sampler seed) and the run's record. A directory without it is not a
  checkpoint.

A checkpoint is written into ``checkpoints/.tmp-step_...`` and renamed into place with one
``os.replace`` of the directory, so a crash (even SIGKILL) while saving leaves the previous
checkpoints intact and at most a temporary directory, which readers ignore and the next save
removes. Only the last ``keep_last`` complete checkpoints are kept.

Single-process, DDP (any ``MULTI_*`` accelerate mode) and FSDP2 runs are supported; FSDP1,
DeepSpeed and Megatron-LM are refused (see ``supported``). A sharded checkpoint resumes
under FSDP2 only, and a DDP one under DDP or one process: loading either into the other kind
of run is refused with a message saying so. Sharded checkpoints are format 2 (vilt that
reads format 1 only refuses them as newer than it reads).

Every process needs to see the checkpoint directory (one machine, or a filesystem all
machines share): each writes its own random states, and under FSDP2 its own shards, there.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from ..atomic import flush_to_disk, honour_umask
from ..modeling.pretrained import CheckpointError
from . import sharded
from .resume import (
    CHECKPOINT_PATTERN,
    MODEL_NAME,
    STATE_NAME,
    checksums,
    complete_checkpoints,
    is_complete,
    latest_checkpoint,
    resolve_resume,
)

__all__ = [
    "CHECKPOINT_PATTERN",
    "bare_model",
    "capture_rng",
    "complete_checkpoints",
    "is_complete",
    "latest_checkpoint",
    "load_checkpoint",
    "read_state",
    "resolve_resume",
    "restore_rng",
    "save_checkpoint",
    "save_model",
    "supported",
]

OPTIMIZER_NAME = "optimizer.pt"
GROUPS_NAME = "optimizer_groups.json"  # FSDP2: the parameter groups of the sharded optimizer
_FORMAT_WHOLE, _FORMAT_SHARDED = 1, 2  # trainer_state.json's "format" (resume.FORMAT_VERSION)
SCHEDULER_NAME = "scheduler.json"
SCALER_NAME = "scaler.json"
PROCESSOR_DIR = "processor"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


def bare_model(accelerator: Any, model: torch.nn.Module) -> torch.nn.Module:
    """The model without DDP and torch.compile wrappers: its own parameter names."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def supported(accelerator: Any) -> bool:
    """Whether these checkpoints can hold this run's state: one process, DDP or FSDP2 (not
    FSDP1, DeepSpeed or Megatron-LM).

    Args:
        accelerator: the run's Accelerator."""
    if sharded.is_sharded(accelerator):
        return True
    return accelerator.distributed_type not in (
        DistributedType.FSDP,
        DistributedType.DEEPSPEED,
        DistributedType.MEGATRON_LM,
    )


def _refuse_unsupported(accelerator: Any) -> None:
    if not supported(accelerator):
        raise NotImplementedError(
            f"vilt checkpoints hold single-process, DDP and FSDP2 runs, not "
            f"{accelerator.distributed_type} (for FSDP set fsdp_version: 2)"
        )


# -- random states ------------------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """This process's random states: JSON-able python/numpy states and torch/CUDA tensors."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    data = {
        "python": {"version": version, "state": list(mt), "gauss_next": gauss},
        "numpy": {
            "name": name,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    return data, tensors


def restore_rng(data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Set the random states that :func:`capture_rng` returned."""
    py = data["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = data["numpy"]
    keys = np.asarray(npy["keys"], dtype=np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors, key=_cuda_index) if k.startswith("cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def _cuda_index(key: str) -> int:
    return int(key.split("_")[1]) if key.startswith("cuda_") else -1


# -- saving -------------------------------------------------------------------------------------
def save_checkpoint(
    accelerator: Any,
    root: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep_last: int | None = None,
    processor: Any = None,
    extra_states: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of the current step (``state["global_step"]``) under ``root``,
    atomically, then keep only the last ``keep_last``. Every process must call this.
    ``processor`` (anything with ``save_pretrained``) is saved into its ``processor/``, so
    that a resumed run reads the ids and image settings it trained with.

    Args:
        accelerator: the run's Accelerator (one process, DDP or FSDP2).
        root: the checkpoints directory (``<output_dir>/checkpoints``), made when missing.
        model: the prepared model; its unwrapped state is saved.
        optimizer: the prepared optimizer.
        scheduler: anything with a JSON-able ``state_dict()`` (the LambdaLR).
        state: the trainer's record, JSON-able, with an int ``global_step`` (names the
            directory: ``step_00000120``).
        keep_last: keep this many complete checkpoints, the newest (None or 0: all).
        processor: anything with ``save_pretrained``, saved into ``processor/``.
        extra_states: name -> an object whose ``state_dict()`` holds tensors (the EMA),
            each written as ``<name>.safetensors``.

    Returns:
        The checkpoint's directory, ``root/step_<global_step:08d>``.

    Raises:
        NotImplementedError: under FSDP1, DeepSpeed or Megatron-LM.
        TypeError: for a ``state`` or scheduler state that is not JSON-serialisable.
    """
    _refuse_unsupported(accelerator)
    root = Path(root)
    name = f"step_{int(state['global_step']):08d}"
    final, tmp = root / name, root / f"{_TMP_PREFIX}{name}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(_TMP_PREFIX + "*"):  # left by a crash during an earlier save
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()

    rank = accelerator.process_index
    rng_data, rng_tensors = capture_rng()
    _write_json(tmp / f"rng_{rank}.json", rng_data)
    save_file(rng_tensors, str(tmp / f"rng_{rank}.safetensors"))
    is_sharded = sharded.is_sharded(accelerator)
    if is_sharded:  # every process writes its shards
        inner = getattr(optimizer, "optimizer", optimizer)
        groups = sharded.save_sharded(tmp, bare_model(accelerator, model), inner)
    else:
        model_state = bare_model(accelerator, model).state_dict()
    if main:
        if is_sharded:
            _write_json(tmp / GROUPS_NAME, groups)
        else:
            save_file(_unshare(model_state), str(tmp / MODEL_NAME), metadata={"format": "pt"})
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_NAME)
        _write_json(tmp / SCHEDULER_NAME, scheduler.state_dict())
        if accelerator.scaler is not None:
            _write_json(tmp / SCALER_NAME, accelerator.scaler.state_dict())
        if processor is not None:
            processor.save_pretrained(tmp / PROCESSOR_DIR)
        for extra, holder in (extra_states or {}).items():
            save_file(_unshare(holder.state_dict()), str(tmp / f"{extra}.safetensors"))
    accelerator.wait_for_everyone()

    if main:
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        for name in files:  # safetensors writes 0600: the umask decides, as for any new file
            honour_umask(tmp / name)
            flush_to_disk(tmp / name)
        record = {"format": _FORMAT_SHARDED if is_sharded else _FORMAT_WHOLE, **state}
        record["files"] = files
        if is_sharded:
            record["sharded"] = True  # format 2: FSDP2 shards under sharded/
            _fsync_dir(tmp / sharded.SHARDED_DIR)
        record["checksums"] = checksums(tmp, files)  # verified before a resume
        _write_json(tmp / STATE_NAME, record)  # last: its presence marks a complete checkpoint
        _fsync_dir(tmp)
        old = None
        if final.exists():  # the same step saved again (e.g. at the end right after a resume)
            old = root / f"{_OLD_PREFIX}{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if keep_last:
            for stale in complete_checkpoints(root)[:-keep_last]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_model(
    accelerator: Any, model: torch.nn.Module, path: str | os.PathLike, *, processor: Any = None
) -> None:
    """``save_pretrained(path, processor=...)`` of the trained model, whole: under FSDP2 its
    shards are gathered first (onto the main process's CPU) into an unsharded copy. Every
    process must call this; the main process writes.

    Args:
        accelerator: the run's Accelerator.
        model: the prepared model.
        path: the output directory.
        processor: saved with the model as one set of files (see ``save_pretrained``)."""
    bare = bare_model(accelerator, model)
    if not sharded.is_sharded(accelerator):
        if accelerator.is_main_process:
            bare.save_pretrained(path, processor=processor)
        return
    state = accelerator.get_state_dict(bare)  # a collective; whole tensors on the main process
    if accelerator.is_main_process:
        whole = sharded.plain_class(bare)(bare.config)
        whole.load_state_dict(state)
        whole.save_pretrained(path, processor=processor)
    accelerator.wait_for_everyone()


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies safetensors accepts: contiguous, no two names on one storage."""
    out, seen = {}, set()
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset())
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def _write_json(path: Path, data: Any) -> None:
    try:
        text = json.dumps(data, indent=1, sort_keys=True, allow_nan=True)
    except TypeError as err:
        raise TypeError(f"{path.name}: state is not JSON-serialisable ({err})") from err
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- loading ------------------------------------------------------------------------------------
def load_checkpoint(
    accelerator: Any,
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_random: bool = True,
    extra_states: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into the (prepared) model, optimizer, scheduler and scaler, set this
    process's random states, and return its trainer state (the data position).

    Args:
        accelerator: the run's Accelerator, of the same kind (FSDP2 or not) as the run that
            saved the checkpoint.
        path: a checkpoint directory (``.../checkpoints/step_00000120``).
        model: the prepared model.
        optimizer: the prepared optimizer (None: not loaded).
        scheduler: anything with ``load_state_dict`` (None: not loaded).
        restore_random: set this process's python, numpy, torch and CUDA random states; a
            checkpoint without this rank's states sets ``state["rng_restored"] = False``.
        extra_states: name -> an object with ``load_state_dict``, loaded from
            ``<name>.safetensors``; the names the checkpoint lacks are listed under
            ``state["missing_extra_states"]``.

    Returns:
        The checkpoint's ``trainer_state.json`` (global_step, epoch, batch_in_epoch, config,
        ...), plus ``missing_extra_states`` (and ``rng_restored`` when False).

    Raises:
        FileNotFoundError: for a directory that is not a complete checkpoint.
        NotImplementedError: under FSDP1, DeepSpeed or Megatron-LM.
        CheckpointError: for a sharded checkpoint in a run without FSDP2 or the reverse, or
            a file that cannot be loaded (the message names it).
    """
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(
            f"{path}: not a complete checkpoint (no {STATE_NAME} or files missing)"
        )
    _refuse_unsupported(accelerator)
    state = read_state(path)
    _same_kind(path, state, accelerator)
    if state.get("sharded"):
        groups = _read_json(path / GROUPS_NAME) if optimizer is not None else None
        inner = getattr(optimizer, "optimizer", optimizer)
        with _naming(path / sharded.SHARDED_DIR):
            sharded.load_sharded(path, bare_model(accelerator, model), inner, groups)
    else:
        with _naming(path / MODEL_NAME):
            bare_model(accelerator, model).load_state_dict(load_file(str(path / MODEL_NAME)))
        if optimizer is not None:
            with _naming(path / OPTIMIZER_NAME):
                opt_state = torch.load(path / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
                optimizer.load_state_dict(opt_state)
    if scheduler is not None:
        with _naming(path / SCHEDULER_NAME):
            scheduler.load_state_dict(_read_json(path / SCHEDULER_NAME))
    if accelerator.scaler is not None and (path / SCALER_NAME).is_file():
        with _naming(path / SCALER_NAME):
            accelerator.scaler.load_state_dict(_read_json(path / SCALER_NAME))
    state["missing_extra_states"] = []
    for extra, holder in (extra_states or {}).items():
        if (path / f"{extra}.safetensors").is_file():
            with _naming(path / f"{extra}.safetensors"):
                holder.load_state_dict(load_file(str(path / f"{extra}.safetensors"), device="cpu"))
        else:
            state["missing_extra_states"].append(extra)
    rank = accelerator.process_index
    rng_json, rng_file = path / f"rng_{rank}.json", path / f"rng_{rank}.safetensors"
    if restore_random and rng_json.is_file() and rng_file.is_file():
        with _naming(rng_file):
            restore_rng(_read_json(rng_json), load_file(str(rng_file)))
    elif restore_random:
        state["rng_restored"] = False  # saved with fewer processes: the caller reseeds
    return state


def _same_kind(path: Path, state: dict[str, Any], accelerator: Any) -> None:
    """A sharded (FSDP2) checkpoint resumes under FSDP2 only; a whole one not under it."""
    saved, now = bool(state.get("sharded")), sharded.is_sharded(accelerator)
    if saved != now:
        kinds = {True: "an FSDP2 run (sharded state)", False: "a run without FSDP"}
        raise CheckpointError(
            f"{path}: holds {kinds[saved]}, and this is {kinds[now]}; resume it the way it "
            "was trained (accelerate launch with the same kind of config), or start anew"
        )


@contextlib.contextmanager
def _naming(file: Path) -> Iterator[None]:
    """Errors of the libraries that read a checkpoint file, as a CheckpointError naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{file}: cannot be loaded ({type(err).__name__}: {err})") from err


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The trainer state (data position, counters, config) a checkpoint records."""
    return _read_json(Path(path) / STATE_NAME)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
