"""Which checkpoint a run resumes from, and whether it is whole.

A checkpoint directory (``checkpoints/step_00000120/``) is *complete* when its
``trainer_state.json`` (written last) and every file it lists are there; it is *usable*
when, besides, each file has the size and SHA-256 the state recorded when it was saved, its
format version is one this vilt reads, and its safetensors and JSON files parse.

``resume=True`` verifies the checkpoints newest first and resumes from the first usable one,
saying which it passed over and why (a disk that filled up, a file truncated by a copy, a
bit flipped in storage). With checkpoints present but none usable it refuses, naming each
problem, rather than start over and overwrite them; with none at all it says that it starts
from step 0. A checkpoint named by path must be usable: no other is tried.

Settings that differ from the checkpoint's run (:func:`changed_settings`) are applied from
the resume point, never silently kept from the checkpoint: the learning rate and its
schedule, the optimizer's hyperparameters, the length of the run (epochs, max_steps), the
batch size (the data position is then approximate). The run says which changed, and
results.json records the settings used and the changes. Changing what orders the data
(``seed``, ``shuffle``) mid-run is refused: the rest of the epoch would repeat some samples
and skip others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..modeling.pretrained import CheckpointError

__all__ = [
    "CHECKPOINT_PATTERN",
    "changed_settings",
    "checksums",
    "complete_checkpoints",
    "find_resume",
    "is_complete",
    "latest_checkpoint",
    "problem_with",
    "resolve_resume",
    "settings_applied",
]

logger = logging.getLogger("vilt.training")

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
STATE_NAME = "trainer_state.json"
MODEL_NAME = "model.safetensors"
FORMAT_VERSION = 2  # the newest read: 1 (one process, DDP), 2 (FSDP2: sharded/)
_CHUNK = 1 << 20
# TrainingConfig fields that change neither the weights nor the data order: not reported
_BOOKKEEPING = {"output_dir", "resume", "log_every", "eval_every", "save_every", "keep_last",
                "num_workers", "eval_batch_size", "tensorboard", "save_model", "compile", "extra"}  # fmt: skip
# fields whose change mid-run cannot be applied: the sampler's order follows (seed, epoch)
_DATA_ORDER = ("seed", "shuffle")


def _step(path: Path) -> int:
    return int(CHECKPOINT_PATTERN.match(path.name).group(1))  # type: ignore[union-attr]


def _steps(root: Path) -> list[Path]:
    """The step directories under ``root`` (temporary ones aside), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=_step)


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((path / STATE_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


# -- finding --------------------------------------------------------------------------------------
def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a finished checkpoint (its state file and every file it lists)."""
    path = Path(path)
    state = _read_state(path) if CHECKPOINT_PATTERN.match(path.name) else None
    if state is None:
        return False
    return all((path / name).is_file() for name in state.get("files", [MODEL_NAME]))


def complete_checkpoints(root: str | os.PathLike) -> list[Path]:
    """The complete checkpoints under ``root``, oldest (lowest step) first."""
    return [p for p in _steps(Path(root)) if is_complete(p)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step under ``root`` (temporary and
    half-written directories are ignored), or None. Its files are not verified: see
    :func:`find_resume` for the checkpoint a run resumes from.

    Args:
        root: a checkpoints directory (``<output_dir>/checkpoints``); missing: None.
    """
    found = complete_checkpoints(root)
    return found[-1] if found else None


# -- verifying ------------------------------------------------------------------------------------
def checksums(path: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each file's size and SHA-256, as the state records them when saving.

    Args:
        path: the checkpoint directory.
        names: its files, relative to it.
    """
    return {name: {"bytes": (path / name).stat().st_size, "sha256": _sha256(path / name)}
            for name in names}  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def problem_with(path: str | os.PathLike) -> str | None:
    """Why checkpoint ``path`` cannot be resumed from (naming the file), or None when it can:
    a missing or unreadable state, an unknown format version, a file missing, of another
    size or SHA-256 than when saved, or a safetensors or JSON file that does not parse."""
    path = Path(path)
    state = _read_state(path)
    if state is None:
        return f"{STATE_NAME} is missing or not valid JSON (a save that did not finish?)"
    version = state.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"{STATE_NAME}: format {version!r} is not a format version number"
    if version > FORMAT_VERSION:
        return (
            f"{STATE_NAME}: format {version} is newer than this vilt reads (1 to "
            f"{FORMAT_VERSION}); upgrade vilt"
        )
    recorded = state.get("checksums") or {}
    for name in state.get("files", [MODEL_NAME]):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        expected = recorded.get(name)
        if expected is not None:
            size = file.stat().st_size
            if size != expected.get("bytes"):
                return f"{name} has {size:,} bytes, {expected.get('bytes'):,} when saved"
            if _sha256(file) != expected.get("sha256"):
                return f"{name} does not have the SHA-256 it had when saved (corrupt)"
        why = _parse_problem(file)
        if why:
            return f"{name}: {why}"
    return None


def _parse_problem(file: Path) -> str | None:
    """Whether a checkpoint file parses as its kind (safetensors header, JSON)."""
    if file.suffix == ".json":
        try:
            json.loads(file.read_text("utf-8"))
        except (OSError, ValueError) as err:
            return f"not valid JSON ({err})"
    elif file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own error types
            return f"not a readable safetensors file ({err})"
    return None


# -- choosing -------------------------------------------------------------------------------------
def find_resume(resume: bool | str | None, root: str | os.PathLike) -> tuple[Path | None, str]:
    """The checkpoint a ``resume`` option names, and a line saying what was chosen and why
    ("" when nothing needs saying).

    Args:
        resume: False or None (no resume), True or "latest" (the newest usable checkpoint
            under ``root``), or a checkpoint directory.
        root: the run's checkpoint directory.

    Raises:
        FileNotFoundError: a path that is not a checkpoint directory.
        CheckpointError: a named checkpoint that is not usable, or checkpoints under ``root``
            none of which is; the message names each problem.
    """
    if resume is None or resume is False or resume == "":
        return None, ""
    if resume is True or str(resume).lower() in ("true", "latest"):
        found = _steps(Path(root))
        passed: list[str] = []
        for path in reversed(found):
            why = problem_with(path)
            if why is None:
                note = f"resuming from {path}"
                if passed:
                    note += f", the newest usable checkpoint ({'; '.join(passed)})"
                return path, note
            passed.append(f"{path.name} passed over: {why}")
        if found:
            raise CheckpointError(
                f"resume: no usable checkpoint under {root} ({'; '.join(passed)}); move them "
                "away to start over, or resume from one by path after repairing it"
            )
        return None, f"resume: no checkpoint under {root} yet: starting from step 0"
    path = Path(resume)
    if not path.is_dir() or _read_state(path) is None:
        raise FileNotFoundError(f"resume={resume!r}: not a complete checkpoint directory")
    why = problem_with(path)
    if why is not None:
        raise CheckpointError(f"resume={resume!r}: {why}")
    return path, f"resuming from {path}"


def resolve_resume(resume: bool | str | None, root: str | os.PathLike) -> Path | None:
    """The checkpoint :func:`find_resume` chooses; its note is logged.

    Args:
        resume: as :func:`find_resume`'s.
        root: the run's checkpoint directory.
    """
    path, note = find_resume(resume, root)
    if note:
        logger.warning(note)
    return path


# -- changed settings -----------------------------------------------------------------------------
def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, list[Any]]:
    """The settings that differ between a checkpoint's run and this one, as {name: [saved,
    now]} (bookkeeping such as log_every left out).

    Args:
        saved: the checkpoint's ``config`` (``TrainingConfig.to_dict()``) and run shape
            (``world_size``).
        current: the same for this run.

    Raises:
        ValueError: a change of what orders the data (``seed``, ``shuffle``).
    """
    changes = {
        name: [saved.get(name), value]
        for name, value in current.items()
        if name not in _BOOKKEEPING and name in saved and saved[name] != value
    }
    refused = [name for name in _DATA_ORDER if name in changes]
    if refused:
        what = ", ".join(f"{n}={changes[n][0]!r} (now {changes[n][1]!r})" for n in refused)
        raise ValueError(
            f"resume: the checkpoint's run had {what}: changing the data order mid-run would "
            "repeat some samples and skip others; resume with the same value, or start a new "
            "run (without --resume, or in another output directory)"
        )
    return changes


@contextlib.contextmanager
def settings_applied(optimizer: Any, scheduler: Any) -> Iterator[None]:
    """Load a checkpoint into ``optimizer`` and ``scheduler`` inside the block; this run's
    hyperparameters are then put back: the optimizer's (learning rate, weight decay, betas,
    eps: its checkpoint holds the old ones) and the schedule's (``base_lrs`` and the factor
    of the current step; the factor function is this run's, for its own length). With
    unchanged settings this gives the numbers the checkpoint held, so resumption stays exact.

    Args:
        optimizer: the (inner) torch optimizer, built from this run's config.
        scheduler: its ``LambdaLR``, built for this run's total steps.
    """
    own = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    yield
    groups = optimizer.param_groups  # load_state_dict made new group dicts
    for group, values in zip(groups, own, strict=True):
        group.update(values)
    scheduler.base_lrs = [g["initial_lr"] for g in groups]
    step = scheduler.last_epoch
    rates = [base * f(step) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]  # fmt: skip
    for group, rate in zip(groups, rates, strict=True):
        group["lr"] = rate
    scheduler._last_lr = rates
