"""The best model of a run by one evaluation metric, and early stopping on it.

``TrainingConfig.save_best`` names the metric ("accuracy", "loss", "ema_accuracy", or a full
``eval_*`` / ``ema_eval_*`` name); at each evaluation a better value replaces
``<output_dir>/best/`` (the model in ``save_pretrained`` format and ``best.json``: metric,
value, step, mode, which weights), written beside it and renamed into place, so a crash
leaves the previous best whole. An ``ema_`` metric keeps the moving average's weights. With
``early_stop_patience`` the run stops after that many evaluations in a row without a better
value. The state (best value and step, evaluations since) travels in each checkpoint, so a
resumed run keeps counting.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["BEST_DIR", "BestModel", "resolve_metric"]

BEST_DIR = "best"
BEST_FILE = "best.json"


def resolve_metric(name: str, known: Iterable[str]) -> str:
    """The evaluation key ``name`` stands for: itself, ``eval_<name>``, or for ``ema_<name>``
    ``ema_eval_<name>``. Losses are always accepted (their parts are only known once a model
    ran); another name must be one of ``known``.

    Args:
        name: what ``save_best`` says ("accuracy", "ema_loss", "eval_vqa_accuracy", ...).
        known: the evaluation keys the run will report.

    Raises:
        ValueError: naming the metrics there are.
    """
    known = set(known)
    if name.startswith("ema_"):
        rest = name.removeprefix("ema_")
        candidates = [name, "ema_" + (rest if rest.startswith("eval_") else "eval_" + rest)]
    else:
        candidates = [name, name if name.startswith("eval_") else "eval_" + name]
    for key in candidates:
        if key in known:
            return key
    key = candidates[-1]
    if key.endswith("loss"):
        return key
    raise ValueError(
        f"save_best={name!r}: not a metric of this run; known: "
        + ", ".join(sorted(k.removeprefix("eval_") for k in known if k.startswith("eval_")))
        + (" (and ema_ of each)" if any(k.startswith("ema_") for k in known) else "")
    )


class BestModel:
    """Tracks one metric over the evaluations, keeps the best model, decides early stops.

    Args:
        metric: the evaluation key to watch (see :func:`resolve_metric`).
        mode: "max" or "min".
        output_dir: the run's directory; the copy goes to ``output_dir/best``.
        patience: evaluations without improvement before stopping (None: never stop).
    """

    def __init__(
        self, metric: str, mode: str, output_dir: str | os.PathLike, patience: int | None = None
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.metric, self.mode, self.patience = metric, mode, patience
        self.path = Path(output_dir) / BEST_DIR
        self.value: float | None = None
        self.step: int | None = None
        self.evals_since = 0
        self.stopped_at: int | None = None

    @property
    def uses_ema(self) -> bool:
        """Whether the metric is the moving average's (its weights are the ones kept)."""
        return self.metric.startswith("ema_")

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` evaluations in a row brought no better value."""
        return self.patience is not None and self.evals_since >= self.patience

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (a tie does not; NaN never does).

        Args:
            value: the metric's new value.
        """
        if math.isnan(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def update(self, metrics: Mapping[str, float], step: int) -> bool:
        """Count one evaluation; whether it is the best so far (the caller then saves).

        Args:
            metrics: the evaluation's results (``eval_*``, ``ema_eval_*``).
            step: the optimizer step it was made at.
        """
        if self.metric not in metrics:
            raise KeyError(
                f"save_best: the evaluation has no {self.metric!r}; it has {sorted(metrics)}"
            )
        value = float(metrics[self.metric])
        if self.improves(value):
            self.value, self.step, self.evals_since = value, step, 0
            return True
        self.evals_since += 1
        if self.should_stop and self.stopped_at is None:
            self.stopped_at = step
        return False

    def save(self, model: torch.nn.Module) -> Path:
        """Write ``model`` (``save_pretrained``) and best.json to ``best/``, replacing the
        previous best only once the new one is complete. Main process only.

        Args:
            model: the weights to keep (the model's or the average's).
        """
        tmp = self.path.with_name(f".tmp-{BEST_DIR}")
        old = self.path.with_name(f".old-{BEST_DIR}")
        for stale in (tmp, old):
            shutil.rmtree(stale, ignore_errors=True)
        model.save_pretrained(tmp)
        record = {
            "metric": self.metric,
            "value": self.value,
            "step": self.step,
            "mode": self.mode,
            "weights": "ema" if self.uses_ema else "model",
        }
        (tmp / BEST_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(tmp, self.path)
        shutil.rmtree(old, ignore_errors=True)
        return self.path

    def state(self) -> dict[str, Any]:
        """What a checkpoint records (and :meth:`load` takes back)."""
        return {
            "metric": self.metric,
            "value": self.value,
            "step": self.step,
            "evals_since": self.evals_since,
            "stopped_at": self.stopped_at,
        }

    def load(self, state: Mapping[str, Any] | None) -> None:
        """Continue from a checkpoint's record (one of another metric is ignored).

        Args:
            state: what :meth:`state` returned when the checkpoint was saved, or None.
        """
        if not state or state.get("metric") != self.metric:
            return
        self.value, self.step = state.get("value"), state.get("step")
        self.evals_since = int(state.get("evals_since", 0))
        self.stopped_at = state.get("stopped_at")

    def summary(self) -> dict[str, Any]:
        """What results.json reports."""
        out: dict[str, Any] = {
            "best": {
                "metric": self.metric,
                "value": self.value,
                "step": self.step,
                "mode": self.mode,
                "path": BEST_DIR if self.step is not None else None,
                "weights": "ema" if self.uses_ema else "model",
            }
        }
        if self.patience is not None:
            out["early_stopping"] = {
                "patience": self.patience,
                "stopped": self.stopped_at is not None,
                "step": self.stopped_at,
            }
        return out
