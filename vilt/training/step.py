"""One training micro-step, with no host read: forward, backward and, at the end of each
accumulation group, the gradient norm, the optimizer step (skipped on the device when the
step met a non-finite value, see :mod:`~vilt.training.guards`) and the schedule.

What the host needs from it (losses, their parts, gradient norms) goes to a
:class:`~vilt.training.progress.StepWindow` as device tensors, for the trainer to read at
its read points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from accelerate import Accelerator

from . import guards
from .config import TrainingConfig
from .evaluate import batch_size_of, split_batch
from .progress import StepWindow
from .sharded import full_tensor, is_sharded

__all__ = ["TrainStep"]


class TrainStep:
    """Runs micro-steps of a prepared model, optimizer and scheduler.

    Which non-finite guard applies follows from the config, the optimizer and the precision:
    ``on_nonfinite="skip"`` skips on the device with an optimizer that honours ``found_inf``
    (fused AdamW, the default where torch has it) or under fp16 (the gradient scaler skips
    overflows itself), and otherwise falls back to reading each loss on the host.

    Args:
        accelerator: the run's Accelerator.
        model: the prepared model.
        optimizer: the prepared optimizer.
        scheduler: the learning-rate schedule, stepped once per optimizer step.
        config: the run's TrainingConfig (``on_nonfinite``, ``max_grad_norm``).
        window: where the step's figures go.
        prepare_inputs: ``prepare_inputs(bare_model, inputs) -> inputs``, run on the device
            before the forward, under the run's autocast (e.g.
            :class:`~vilt.training.negatives.HardNegatives`); it must read nothing on the
            host."""

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any,
        config: TrainingConfig,
        window: StepWindow,
        prepare_inputs: Callable[[torch.nn.Module, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.scheduler, self.config, self.window = scheduler, config, window
        self.prepare_inputs = prepare_inputs
        self.bare = accelerator.unwrap_model(model) if prepare_inputs is not None else None
        self.inner = getattr(optimizer, "optimizer", optimizer)
        scaler = getattr(accelerator, "scaler", None)  # fp16: it skips overflows itself
        skip = config.on_nonfinite == "skip"
        if skip and is_sharded(accelerator):  # its guards mix whole and sharded tensors
            raise ValueError(
                "on_nonfinite='skip' does not run under FSDP2 yet: use on_nonfinite='raise' "
                "(a NaN or inf then stops the run at the next read, before any save)"
            )
        self.found_inf = skip and scaler is None and guards.skips_on_device(self.inner)
        self.host_check = skip and scaler is None and not self.found_inf
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.anchor = min(trainable, key=torch.numel) if skip and not self.host_check else None
        self.ddp = guards.ddp_module(model) if accelerator.num_processes > 1 else None

    def __call__(self, batch: Mapping[str, Any] | None, *, step: int, epoch: int) -> bool:
        """Forward and backward of one batch (None: a DDP stand-in for a batch the collator
        emptied); the optimizer steps at the end of each group of ``grad_accum_steps``
        batches (and at the end of an epoch), as optimizer step ``step``. Returns whether it
        did."""
        acc, model = self.accelerator, self.model
        with acc.accumulate(model):
            if batch is None:
                if self.ddp is None:
                    raise ValueError("a None batch reached the step outside DDP")
                self.window.add_stand_in()
                loss = guards.stand_in_loss(self.ddp)
            else:
                inputs, _ = split_batch(batch)
                if self.prepare_inputs is not None:
                    with acc.autocast():
                        inputs = self.prepare_inputs(self.bare, inputs)
                output = model(**inputs)
                loss = getattr(output, "loss", None)
                if loss is None:
                    raise ValueError(
                        "the model returned no loss: does the batch hold its labels? "
                        f"(keys: {sorted(inputs)})"
                    )
                self.window.add(loss, batch_size_of(inputs), output)
                if self.host_check:
                    loss = guards.checked_on_host(loss, model)
                elif self.anchor is not None:
                    loss = guards.carry_nonfinite(loss, self.anchor)
            acc.backward(loss)
            grad_norm = self._grad_norm() if acc.sync_gradients else None
            lr = self.optimizer.param_groups[0]["lr"]
            if self.found_inf and grad_norm is not None:
                self.inner.found_inf = guards.found_inf(grad_norm)
            try:
                self.optimizer.step()
            finally:
                self.inner.__dict__.pop("found_inf", None)
            if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            self.window.end_step(step, epoch, lr, grad_norm)
        return acc.sync_gradients

    def _grad_norm(self) -> torch.Tensor | None:
        """The gradient norm before clipping, when clipping or the skip on the device needs it
        (a plain tensor: under FSDP2 the whole norm of the sharded gradients)."""
        if self.config.max_grad_norm:
            norm = self.accelerator.clip_grad_norm_(
                self.model.parameters(), self.config.max_grad_norm
            )
        else:
            norm = guards.total_norm(self.model.parameters()) if self.found_inf else None
        return full_tensor(norm)
