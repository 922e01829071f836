"""The loss, learning rate and throughput of the steps since the last ``metrics.csv`` row."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["StepWindow"]


class StepWindow:
    """Loss, samples and time since the last log row."""

    def __init__(self) -> None:
        self.loss_sum, self.batches, self.samples = 0.0, 0, 0
        self.parts: dict[str, float] = {}
        self.start = time.perf_counter()
        self.lr, self.grad_norm = 0.0, None
        self.step_losses: list[float] = []
        self.step_samples = 0
        self._pending_samples = 0
        self.last: dict[str, Any] = {}
        self.last_logged_loss: float | None = None

    def add(self, loss: float, samples: int, output: Any) -> None:
        self.loss_sum += loss
        self.batches += 1
        self.samples += samples
        self._pending_samples += samples
        self.step_losses.append(loss)
        for name in getattr(output, "keys", list)():
            value = getattr(output, name, None)
            if name.endswith("_loss") and isinstance(value, torch.Tensor) and value.ndim == 0:
                self.parts[name] = self.parts.get(name, 0.0) + value.detach().float().item()

    def end_step(self, lr: float, grad_norm: torch.Tensor | None) -> None:
        self.lr, self.grad_norm = lr, grad_norm
        losses, self.step_losses = self.step_losses, []
        self.step_samples, self._pending_samples = self._pending_samples, 0
        self.last = {"loss": sum(losses) / len(losses) if losses else float("nan"), "lr": lr}

    def flush(self, accelerator: Any) -> dict[str, Any]:
        """The window's means across processes; resets the window."""
        names = sorted(self.parts)
        local = [self.loss_sum, float(self.batches), float(self.samples)]
        local += [self.parts[n] for n in names]
        totals = torch.tensor(local, dtype=torch.float64, device=accelerator.device)
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, reduction="sum")
        totals = totals.tolist()
        batches = max(totals[1], 1.0)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        row: dict[str, Any] = {"loss": totals[0] / batches, "lr": self.lr}
        row.update({n: totals[3 + i] / batches for i, n in enumerate(names)})
        if self.grad_norm is not None:
            row["grad_norm"] = float(self.grad_norm)
        row["samples_per_s"] = totals[2] / elapsed
        self.last_logged_loss = row["loss"]
        self.loss_sum, self.batches, self.samples, self.parts = 0.0, 0, 0, {}
        self.start = time.perf_counter()
        return row
