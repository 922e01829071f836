"""An exponential moving average (EMA) of a model's weights, kept on the model's device.

After each optimizer step every floating-point parameter and buffer of the average moves
toward the model's: ``avg = decay_t * avg + (1 - decay_t) * weight``, in one
``torch._foreach_lerp_`` over the whole model (fp32 copies, a device op: the step still
waits on nothing). ``decay_t`` is ``decay``, or with ``warmup`` the lower
``(1 + step) / (10 + step)`` while that is smaller, so that the average of a short run is not
mostly its initial weights. The averaged weights live in a copy of the model
(:attr:`ModelEma.module`, in eval mode, no gradients), which evaluates and saves like the
model itself; the trainer saves its state in each checkpoint (``ema.safetensors``) and
restores it exactly on resume.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """The moving average of ``model``'s weights.

    Args:
        model: the model whose weights are averaged (unwrapped: no DDP or compile wrapper).
            The average starts as a copy of its current weights.
        decay: the weight of the old average at each update, in [0, 1) (0.999 averages over
            about the last thousand steps).
        warmup: use ``min(decay, (1 + step) / (10 + step))`` at update ``step``.
        device: where the average lives (default: where the model is).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float,
        *,
        warmup: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        # the average in fp32, whatever the model's precision
        self.module = copy.deepcopy(model).float().eval().requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._others: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._source: int | None = None

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step ``step``.

        Args:
            step: the optimizer step just taken (1 for the first).
        """
        if self.warmup:
            return min(self.decay, (1 + step) / (10 + step))
        return self.decay

    def _bind(self, model: nn.Module) -> None:
        """Pair the average's tensors with ``model``'s (the same names in the same order)."""
        ours = dict(self.module.named_parameters()) | dict(self.module.named_buffers())
        theirs = dict(model.named_parameters()) | dict(model.named_buffers())
        if ours.keys() != theirs.keys():
            raise ValueError(
                "the EMA's model and the trained one differ in their tensors: "
                f"{sorted(ours.keys() ^ theirs.keys())[:5]}"
            )
        floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._others = []
        for name, avg in ours.items():
            src = theirs[name]
            if avg.is_floating_point() and src.dtype == avg.dtype:
                floats[0].append(avg)
                floats[1].append(src)
            else:
                self._others.append((avg, src))
        self._pairs = floats
        self._source = id(model)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average toward ``model``'s weights; reads nothing on the host.

        Args:
            model: the trained model, unwrapped (the same one at every call).
            step: the optimizer step just taken (1 for the first).
        """
        if self._pairs is None or self._source != id(model):
            self._bind(model)
        assert self._pairs is not None
        weight = 1.0 - self.decay_at(step)
        averages, sources = self._pairs
        if averages:
            torch._foreach_lerp_(averages, [s.detach() for s in sources], weight)
        for avg, src in self._others:
            if avg.is_floating_point():
                avg.lerp_(src.detach().to(avg.dtype), weight)
            else:
                avg.copy_(src)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, under the model's own names."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Set the averaged weights.

        Args:
            state: a state dict with every name of the model (strict).
        """
        self.module.load_state_dict(state)
