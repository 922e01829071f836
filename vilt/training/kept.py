"""What a run keeps of its weights besides the last ones: their moving average
(``ema_decay``, :mod:`~vilt.training.ema`) and the best model by a metric (``save_best``,
with early stopping, :mod:`~vilt.training.best`).

The :class:`~vilt.training.Trainer` calls one :class:`KeptWeights` at its step boundaries,
evaluations, checkpoints and end; with neither option set every call does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import guards
from .best import BestModel, resolve_metric
from .config import TrainingConfig
from .ema import ModelEma
from .evaluate import evaluate

__all__ = ["EMA_DIR", "KeptWeights"]

logger = logging.getLogger("vilt.training")
EMA_DIR = "ema"  # where the final averaged weights go, under output_dir


class KeptWeights:
    """The EMA and the best model of one run, as its config asks.

    Args:
        model: the model before ``accelerator.prepare`` (the average starts as its copy).
        config: the run's TrainingConfig (``ema_decay``, ``ema_warmup``, ``save_best``,
            ``save_best_mode``, ``early_stop_patience``, ``output_dir``).
        metrics: the run's evaluation metrics (names that ``save_best`` may use).
        device: where the average lives.
        sharded: the run shards its model (FSDP2), which neither the EMA nor the best-model
            copy supports yet (both copy whole tensors): a ValueError when either is asked.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainingConfig,
        metrics: Mapping[str, Any],
        device: torch.device,
        *,
        sharded: bool = False,
    ) -> None:
        if sharded and (config.ema_decay is not None or config.save_best):
            raise ValueError(
                "ema_decay and save_best do not run under FSDP2 yet (they copy whole weights): "
                "train without them, or under DDP"
            )
        self.ema: ModelEma | None = None
        if config.ema_decay is not None:
            self.ema = ModelEma(model, config.ema_decay, warmup=config.ema_warmup, device=device)
        self.best: BestModel | None = None
        if config.save_best:
            if config.save_best.startswith("ema_") and self.ema is None:
                raise ValueError(f"save_best={config.save_best!r} needs ema_decay")
            known = ["eval_loss", *(f"eval_{name}" for name in metrics)]
            known += [f"ema_{k}" for k in known] if self.ema is not None else []
            metric = resolve_metric(config.save_best, known)
            self.best = BestModel(
                metric, config.best_mode, config.output_dir, config.early_stop_patience
            )

    @property
    def should_stop(self) -> bool:
        """Early stopping: the best metric has not improved for ``patience`` evaluations."""
        return self.best is not None and self.best.should_stop

    def after_step(self, model: torch.nn.Module, step: int) -> None:
        """After optimizer step ``step`` of the (unwrapped) model: update the average."""
        if self.ema is not None:
            self.ema.update(model, step)

    def evaluate(
        self, accelerator: Any, loader: Any, metrics: Mapping[str, Any]
    ) -> dict[str, float]:
        """The average's evaluation as ``ema_eval_<name>`` (empty without an EMA), under the
        run's autocast as the model's is."""
        if self.ema is None:
            return {}
        with accelerator.autocast():
            out = evaluate(accelerator, self.ema.module, loader, metrics, prefix="ema_eval_")
        out.pop("ema_eval_samples", None)  # the same samples as the model's
        return out

    def after_eval(
        self, accelerator: Any, model: torch.nn.Module, evaluated: Mapping[str, float], step: int
    ) -> None:
        """Count an evaluation for the best model and early stopping; save ``best/`` when it
        is the best so far (the average's weights for an ``ema_`` metric). Every process."""
        if self.best is None or not self.best.update(evaluated, step):
            return
        keep = self.ema.module if self.best.uses_ema and self.ema is not None else model
        guards.check_weights(keep, "best model", step)
        if accelerator.is_main_process:
            self.best.save(keep)
        accelerator.wait_for_everyone()

    def extra_states(self) -> dict[str, Any]:
        """What checkpoints hold beside the model (``ema.safetensors``)."""
        return {"ema": self.ema} if self.ema is not None else {}

    def record(self) -> dict[str, Any]:
        """What a checkpoint's trainer state adds: the best metric's progress."""
        return {"best": self.best.state()} if self.best is not None else {}

    def restore(self, saved: Mapping[str, Any], model: torch.nn.Module, path: Path) -> None:
        """Continue from a loaded checkpoint's state (see ``load_checkpoint``)."""
        if self.ema is not None and "ema" in saved.get("missing_extra_states", ()):
            logger.warning("%s holds no EMA: the average starts from its weights", path)
            self.ema.load_state_dict(model.state_dict())
        if self.best is not None:
            self.best.load(saved.get("best"))

    def results(self) -> dict[str, Any]:
        """What results.json adds: the best metric, value and step, and early stopping."""
        return self.best.summary() if self.best is not None else {}

    def save_final(self, output_dir: Path, step: int) -> None:
        """The final average beside the final model, in ``output_dir/ema`` (main process)."""
        if self.ema is not None:
            guards.check_weights(self.ema.module, "EMA model", step)
            self.ema.module.save_pretrained(output_dir / EMA_DIR)
