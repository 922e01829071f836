"""What the steps since the last read did, kept on the device until the trainer reads it.

The training step hands each batch's loss (and the output's ``*_loss`` parts) and each
step's gradient norm to a :class:`StepWindow`, which keeps references to those device
tensors and their sizes: no copy, no kernel, no host read. :meth:`StepWindow.read` (at
``log_every`` boundaries, before a checkpoint, at the end) stacks everything into one
vector and moves it to the host in one transfer; under several processes that vector is
gathered first (padded to the longest: two small collectives), which also carries each
process's stop request. The
readings add up until :meth:`StepWindow.flush` makes a ``metrics.csv`` row of them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch

__all__ = ["Reading", "StepWindow"]

_HEAD = 6  # loss sum, finite batches, their samples, non-finite batches, stand-ins, stop


@dataclasses.dataclass
class Reading:
    """What one read found, over every process.

    ``bad[i]``: step ``steps[i]`` met a non-finite loss on some process, or a non-finite
    gradient norm (when those are checked). ``first_bad``: (step, epoch, loss, grad norm) of
    the first such step, the loss being a non-finite value where one was met, else the
    step's finite loss (None when unknown) and the grad norm None when not computed."""

    steps: list[int]
    bad: list[bool]
    loss_sum: float = 0.0  # over batches with a finite loss
    batches: int = 0  # batches with a finite loss
    samples: int = 0  # their samples
    nonfinite_batches: int = 0
    stood_in: int = 0  # batches a collator emptied, replaced by a zero loss (several processes)
    parts: dict[str, float] = dataclasses.field(default_factory=dict)
    grad_norm: float | None = None  # the last step's
    first_bad: tuple[int, int, float | None, float | None] | None = None
    stop: int | None = None  # a stop request (signal number) on any process


class StepWindow:
    """The steps since the last read (device tensors), and the readings since the last row.

    Args:
        check_grad_norm: whether a non-finite gradient norm marks a step as bad (not under
            fp16's loss scaling, where an overflow is the scaler's business)."""

    def __init__(self, *, check_grad_norm: bool = True) -> None:
        self.check_grad_norm = check_grad_norm
        self._clear()
        self.lr = 0.0
        self.last_logged_loss: float | None = None
        self._row = Reading(steps=[], bad=[])
        self._start = time.perf_counter()

    def _clear(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._samples: list[int] = []
        self._step_of: list[int] = []  # each batch's step, as an index into self._steps
        self._parts: list[dict[str, torch.Tensor]] = []
        self._norms: list[torch.Tensor | None] = []
        self._steps: list[int] = []
        self._epochs: list[int] = []
        self._stood_in = 0
        self._last_step = slice(0, 0)  # the last closed step's batches in self._losses

    # -- the step: references only --------------------------------------------------------
    def add(self, loss: torch.Tensor, samples: int, output: Any) -> None:
        """One batch's loss, sample count and the output's scalar ``*_loss`` parts. Kept by
        reference: a model whose outputs live in buffers that the next call overwrites (CUDA
        graph replays, not used by ``TrainingConfig.compile``) would need copies here.

        Args:
            loss: the batch's loss, a 0-dim device tensor.
            samples: the batch's size.
            output: the model's output; its 0-dim ``*_loss`` fields are logged as columns."""
        self._losses.append(loss.detach())
        self._samples.append(samples)
        self._step_of.append(len(self._steps))
        parts = {}
        for name in getattr(output, "keys", list)():
            value = getattr(output, name, None)
            if name.endswith("_loss") and isinstance(value, torch.Tensor) and value.ndim == 0:
                parts[name] = value.detach()
        self._parts.append(parts)

    def add_stand_in(self) -> None:
        """A batch its collator emptied, replaced by a zero loss (several processes)."""
        self._stood_in += 1

    def end_step(self, step: int, epoch: int, lr: float, grad_norm: torch.Tensor | None) -> None:
        """Close an optimizer step.

        Args:
            step: its number (``global_step`` once taken).
            epoch: the epoch it belongs to.
            lr: the learning rate it used (of the first parameter group).
            grad_norm: its gradient norm before clipping, if computed (a device tensor)."""
        first = self._last_step.stop if self._steps else 0
        self._last_step = slice(first, len(self._losses))
        self._steps.append(step)
        self._epochs.append(epoch)
        self._norms.append(grad_norm)
        self.lr = lr

    @property
    def pending(self) -> bool:
        """Whether steps were closed since the last read (the same on every process)."""
        return bool(self._steps)

    def step_loss(self) -> torch.Tensor | None:
        """The last step's mean loss over its finite batches, a 0-dim device tensor (NaN
        when it had none): a few kernels, no host read."""
        mine = self._losses[self._last_step]
        if not mine:
            return None
        losses = torch.stack([t.float() for t in mine])
        finite = losses.isfinite()
        return torch.where(finite, losses, 0.0).sum() / finite.sum()

    # -- the read: one transfer -------------------------------------------------------------
    def read(self, accelerator: Any, stop: int | None = None) -> Reading:
        """Everything since the last read, over every process (a padded gather under several),
        in one device-to-host transfer. Every process must call it at the same steps.

        Args:
            accelerator: the run's Accelerator (its device and processes).
            stop: this process's stop request (a signal number), exchanged with the others."""
        vector, names = self._vector(accelerator.device, stop)
        if accelerator.num_processes > 1:
            vector = accelerator.pad_across_processes(vector)
            rows = accelerator.gather(vector).view(accelerator.num_processes, -1).tolist()
        else:
            rows = [vector.tolist()]
        reading = self._reading(rows, names)
        self._clear()
        self._add_to_row(reading)
        return reading

    def _vector(self, device: torch.device, stop: int | None) -> tuple[torch.Tensor, list[str]]:
        """[loss sum, finite batches, samples, non-finite batches, stand-ins, stop, per step:
        non-finite batches, per step: sum of the non-finite losses, per step: grad norm,
        the parts' sums]."""
        n_steps = len(self._steps)
        names = sorted({name for parts in self._parts for name in parts})
        zeros = torch.zeros(n_steps, device=device)
        host = torch.tensor([self._stood_in, stop or 0], dtype=torch.float32, device=device)
        if self._losses:
            losses = torch.stack([t.float() for t in self._losses]).to(device)
            finite = losses.isfinite()
            samples = torch.tensor(self._samples, dtype=torch.float32, device=device)
            index = torch.tensor(self._step_of, device=device)
            head = torch.stack(
                [
                    torch.where(finite, losses, 0.0).sum(),
                    finite.sum().float(),
                    (samples * finite).sum(),
                    (~finite).sum().float(),
                ]
            )
            bad = zeros.index_add(0, index, (~finite).float())
            values = zeros.index_add(0, index, torch.where(finite, 0.0, losses))
            zero = losses.new_zeros(())
            parts = [
                torch.where(
                    finite, torch.stack([p.get(n, zero).float() for p in self._parts]), 0.0
                ).sum()
                for n in names
            ]
        else:
            head, bad, values, parts = torch.zeros(4, device=device), zeros, zeros, []
        norms = zeros
        if self._norms and all(n is not None for n in self._norms):
            norms = torch.stack([n.float() for n in self._norms if n is not None]).to(device)
        pieces = [head, host, bad, values, norms]
        if parts:
            pieces.append(torch.stack(parts))
        return torch.cat(pieces), names

    def _reading(self, rows: list[list[float]], names: list[str]) -> Reading:
        n = len(self._steps)
        total = [sum(col) for col in zip(*rows, strict=True)]
        norms = rows[0][_HEAD + 2 * n : _HEAD + 3 * n]  # the same on every process
        has_norms = bool(self._norms) and all(x is not None for x in self._norms)
        bad = []
        for i in range(n):
            grad_bad = self.check_grad_norm and has_norms and not math.isfinite(norms[i])
            bad.append(total[_HEAD + i] > 0 or grad_bad)
        reading = Reading(
            steps=list(self._steps),
            bad=bad,
            loss_sum=total[0],
            batches=round(total[1]),
            samples=round(total[2]),
            nonfinite_batches=round(total[3]),
            stood_in=round(total[4]),
            parts={name: total[_HEAD + 3 * n + i] for i, name in enumerate(names)},
            grad_norm=norms[-1] if has_norms and n else None,
            stop=round(max(row[5] for row in rows)) or None,
        )
        if True in bad:
            i = bad.index(True)
            nonfinite = [row[_HEAD + n + i] for row in rows if row[_HEAD + i] > 0]
            loss = nonfinite[0] if nonfinite else None
            reading.first_bad = (
                self._steps[i],
                self._epochs[i],
                loss,
                norms[i] if has_norms else None,
            )
        return reading

    # -- the metrics.csv row ----------------------------------------------------------------
    def _add_to_row(self, reading: Reading) -> None:
        row = self._row
        row.steps += reading.steps
        row.loss_sum += reading.loss_sum
        row.batches += reading.batches
        row.samples += reading.samples
        row.nonfinite_batches += reading.nonfinite_batches
        for name, value in reading.parts.items():
            row.parts[name] = row.parts.get(name, 0.0) + value
        if reading.grad_norm is not None:
            row.grad_norm = reading.grad_norm

    def flush(self, with_grad_norm: bool = True) -> dict[str, Any]:
        """The means of the readings since the last row (call :meth:`read` first): loss and
        parts over the batches with a finite loss (NaN when there were none), the lr, the
        last step's grad norm, samples per second. Starts a new row."""
        row, batches = self._row, self._row.batches
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        out: dict[str, Any] = {
            "loss": row.loss_sum / batches if batches else float("nan"),
            "lr": self.lr,
        }
        out.update(
            {n: v / batches if batches else float("nan") for n, v in sorted(row.parts.items())}
        )
        if with_grad_norm and row.grad_norm is not None:
            out["grad_norm"] = row.grad_norm
        out["samples_per_s"] = row.samples / elapsed
        self.last_logged_loss = out["loss"] if batches else None
        self._row = Reading(steps=[], bad=[])
        self._start = time.perf_counter()
        return out
