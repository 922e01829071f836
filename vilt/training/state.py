"""TrainState: where a run is (the data position and counters), as checkpoints record it."""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import TrainingConfig

__all__ = ["TrainState"]


@dataclasses.dataclass
class TrainState:
    """The data position (epoch, batches of it consumed by each process, optimizer steps) and
    the run's counters. The sampler's order follows from (seed, epoch), so this is all a
    resumed run needs to find its place.

    Attributes:
        epoch: the current epoch, from 0.
        batch_in_epoch: batches of ``epoch`` consumed by this process.
        global_step: optimizer steps taken.
        samples_seen: training samples consumed, across processes.
        skipped_batches: batches that trained nothing: a non-finite loss
            (``on_nonfinite="skip"``), or, under several processes, a batch its collator
            emptied, replaced by a zero loss to stay paired.
        skipped_steps: optimizer steps skipped for a non-finite loss or gradient.
        skip_streak: skipped steps in a row, up to the last read of the loss.
        elapsed_s: training wall time in seconds before this session.
    """

    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` consumed by this process
    global_step: int = 0
    samples_seen: int = 0  # across processes
    # batches that trained nothing: a non-finite loss (on_nonfinite="skip"), or under several
    # processes a batch its collator emptied (None), replaced by a zero loss to stay paired
    skipped_batches: int = 0
    skipped_steps: int = 0  # optimizer steps that met a non-finite loss or gradient
    skip_streak: int = 0  # the last consecutive ones, up to the last read
    elapsed_s: float = 0.0  # training wall time before this session

    def record(
        self, config: TrainingConfig, *, world_size: int, total_steps: int, elapsed_s: float
    ) -> dict[str, Any]:
        """What a checkpoint's ``trainer_state.json`` holds: this state, the sampler seed and
        the shape of the run (to warn when a resumed run differs).

        Args:
            config: the run's training config (seed, batch size, accumulation, all settings).
            world_size: the number of processes.
            total_steps: the optimizer steps the run will take in all.
            elapsed_s: training wall time in seconds so far, this session included (it
                replaces the state's ``elapsed_s`` in the record).
        """
        return {
            **dataclasses.asdict(self),
            "elapsed_s": elapsed_s,
            "seed": config.seed,
            "world_size": world_size,
            "batch_size": config.batch_size,
            "grad_accum_steps": config.grad_accum_steps,
            "total_steps": total_steps,
            "config": config.to_dict(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainState:
        """The state saved in a checkpoint's ``trainer_state.json``.

        Args:
            record: what :meth:`record` wrote; keys that are not fields are ignored, and
                fields it lacks (an older checkpoint) keep their defaults.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})
