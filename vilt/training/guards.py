"""The training step's guards against non-finite values, and what they cost: no host read
in the step; the host learns of a non-finite value at the trainer's next read point (every
``log_every`` steps, before a save, at the end).

- ``on_nonfinite="raise"``: a NaN or infinite loss (or gradient norm, where clipping computes
  it) raises FloatingPointError at the next read, naming the step where it first happened:
  up to ``log_every`` steps late. Every save reads first, so nothing after that step is saved.
- ``on_nonfinite="skip"``: the update of a step that met a non-finite loss or gradient on any
  process is skipped on the device, the way ``torch.amp.GradScaler`` skips one: torch's fused
  AdamW (and every optimizer with ``_step_supports_amp_scaling``) reads an
  ``optimizer.found_inf`` tensor inside its kernel and, where it is 1, leaves parameters and
  moments untouched and takes back the step count. ``found_inf`` comes from the gradient
  norm after DDP's all-reduce, so every process skips the same steps; :func:`carry_nonfinite`
  makes a non-finite loss on any one process show in that norm. With gradient accumulation
  the whole step is skipped; the step still counts (``global_step``, the learning-rate
  schedule), as before. Optimizers without such a kernel (foreach AdamW) fall back to a
  host read of each loss (:func:`checked_on_host`); under fp16 the gradient scaler skips.
  ``max_consecutive_skips`` skipped steps in a row, or a run whose every step was skipped,
  raise FloatingPointError (:func:`account`, :func:`check_trained`).
- Under DDP a process whose collator emptied its batch (None) runs :func:`stand_in_loss`, a
  zero loss that keeps its gradient sync paired with the others, and counts the batch as
  skipped.
- No checkpoint or model is saved with NaN or inf in its weights (:func:`check_weights`, one
  host read per save).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch
from torch import nn

from .config import TrainingConfig
from .progress import Reading
from .sharded import all_finite
from .state import TrainState

__all__ = [
    "account",
    "carry_nonfinite",
    "check_trained",
    "check_weights",
    "checked_on_host",
    "ddp_module",
    "first_nonfinite_parameter",
    "found_inf",
    "skips_on_device",
    "stand_in_loss",
    "total_norm",
]

logger = logging.getLogger("vilt.training")


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours ``optimizer.found_inf`` (torch's fused kernels)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def found_inf(grad_norm: torch.Tensor) -> torch.Tensor:
    """1.0 where ``grad_norm`` is NaN or inf, else 0.0: float32, as the fused kernels read it."""
    return torch.isfinite(grad_norm).logical_not().to(torch.float32)


def carry_nonfinite(loss: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """``loss``, plus a term of value 0 whose gradient on ``anchor`` is 0 where the loss is
    finite and NaN where it is not: a non-finite loss then always shows in the gradients, and
    through DDP's all-reduce in every process's gradient norm, even where its own backward
    would give finite gradients.

    Args:
        loss: the batch's loss (0-dim, with its graph).
        anchor: a trainable parameter (the smallest will do) to carry the flag."""
    flag = loss.detach().float() * 0.0  # 0.0, or NaN for a NaN or infinite loss
    return loss + (flag * anchor.sum()).to(loss.dtype)


def total_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """The 2-norm of all gradients as one vector (a device tensor; None without gradients)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    if hasattr(nn.utils, "get_total_norm"):  # torch >= 2.6
        return nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def ddp_module(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """The DistributedDataParallel wrapper of a prepared model (under torch.compile's too)."""
    while model is not None:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model
        model = getattr(model, "_orig_mod", None)
    return None


def stand_in_loss(ddp: nn.parallel.DistributedDataParallel) -> torch.Tensor:
    """A zero loss that reaches every trainable parameter, registered with DDP as a forward
    would register it: the backward of a process whose collator emptied its batch then
    joins the gradient all-reduce (and the forward's buffer broadcast) that the other
    processes start, so they stay paired without a collective to agree on skipping.

    DDP has no public call for "a forward without inputs"; its own forward is
    ``_post_forward(module(*_pre_forward(...)))``, which this follows."""
    ddp._pre_forward()
    params = [p for p in ddp.parameters() if p.requires_grad]
    zero = torch.stack([p.sum().float() for p in params]).sum() * 0.0
    return ddp._post_forward(zero)


def check_weights(model: nn.Module, what: str, step: int) -> None:
    """Refuse to save NaN or inf weights: FloatingPointError naming the first such tensor.

    Args:
        model: the bare model about to be saved.
        what: what would be saved ("checkpoint", "model"), for the message.
        step: the optimizer step, for the message."""
    name = first_nonfinite_parameter(model)
    if name is not None:
        raise FloatingPointError(f"{name} holds NaN or inf at step {step}: no {what} saved")


def first_nonfinite_parameter(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding a NaN or inf (one host read; under
    FSDP2 also one all-reduce, every process must call it), or None: the check before a
    checkpoint or the final model is saved."""
    named = [(n, t) for n, t in [*model.named_parameters(), *model.named_buffers()]]
    named = [(n, t) for n, t in named if t.is_floating_point() and t.numel()]
    if not named:
        return None
    finite = all_finite([t for _, t in named])  # FSDP2: every process's shards
    return next((name for (name, _), ok in zip(named, finite, strict=True) if not ok), None)


def checked_on_host(loss: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``on_nonfinite="skip"`` with an optimizer that cannot skip on the device: read the loss
    (a host read per batch) and replace a non-finite one by a zero loss that reaches every
    trainable parameter (under DDP the gradient sync then stays paired)."""
    if math.isfinite(loss.detach().float().item()):
        return loss
    return sum(p.sum() * 0.0 for p in model.parameters() if p.requires_grad)


# -- at a read ---------------------------------------------------------------------------------
def account(reading: Reading, state: TrainState, config: TrainingConfig) -> None:
    """Add a reading's samples and skips to ``state`` and apply the non-finite rules:
    ``on_nonfinite="raise"`` raises on the first non-finite step; with "skip", a run of
    ``max_consecutive_skips`` skipped steps raises, shorter ones are logged.

    Args:
        reading: what a read found (:meth:`~vilt.training.progress.StepWindow.read`).
        state: the run's counters, updated in place.
        config: ``on_nonfinite``, ``max_consecutive_skips`` and ``log_every``."""
    state.samples_seen += reading.samples
    state.skipped_batches += reading.nonfinite_batches + reading.stood_in
    if reading.first_bad is not None and config.on_nonfinite == "raise":
        raise FloatingPointError(
            f"{describe(reading)}; set on_nonfinite='skip' to skip such steps (found at the "
            f"check after step {reading.steps[-1]}: the trainer reads the loss every "
            f"log_every={config.log_every} steps and before saving, so nothing was saved since)"
        )
    limit = config.max_consecutive_skips
    for step, bad in zip(reading.steps, reading.bad, strict=True):
        state.skipped_steps += bad
        state.skip_streak = state.skip_streak + 1 if bad else 0
        if limit and state.skip_streak >= limit:
            raise FloatingPointError(
                f"{limit} steps in a row (steps {step - limit + 1} to {step}) met a non-finite "
                f"loss or gradient and were skipped (max_consecutive_skips={limit}; "
                f"{describe(reading)}): the run is not training; lower the learning rate or "
                "check the data"
            )
    if reading.first_bad is not None:
        skipped = [str(s) for s, bad in zip(reading.steps, reading.bad, strict=True) if bad]
        logger.warning(
            "%s: the update of step(s) %s skipped (%d batch(es) with a non-finite loss)",
            describe(reading),
            ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""),
            reading.nonfinite_batches,
        )


def check_trained(state: TrainState) -> None:
    """A run whose every step was skipped trained nothing: say so rather than save it."""
    if state.global_step and state.skipped_steps >= state.global_step:
        raise FloatingPointError(
            f"every one of the {state.global_step} steps met a non-finite loss or gradient and "
            "was skipped (on_nonfinite='skip'): the run trained nothing and saves no model; "
            "lower the learning rate or check the data"
        )


def describe(reading: Reading) -> str:
    """The first non-finite step of a reading, as the errors and warnings name it."""
    step, epoch, loss, norm = reading.first_bad  # type: ignore[misc]
    where = f"at step {step} (epoch {epoch})"
    if loss is not None and not math.isfinite(loss):
        return f"loss is {loss} {where}"
    return f"the gradient norm is {norm} {where}"
