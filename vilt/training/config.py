"""TrainingConfig: every option of a training run, in one dataclass that round-trips to JSON
(results.json and each checkpoint record it) and to command-line flags (the recipes)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainingConfig"]

SCHEDULES = ("cosine", "linear", "constant", "wsd")
PRECISIONS = ("no", "fp16", "bf16")
NONFINITE = ("raise", "skip")


def _in_steps(value: float, total_steps: int) -> int:
    """A fraction of ``total_steps`` (``value`` < 1) or a step count (``value`` >= 1)."""
    return int(value * total_steps) if value < 1 else int(value)


@dataclass
class TrainingConfig:
    """Options of :class:`vilt.training.Trainer`. Steps are optimizer steps (one per
    ``grad_accum_steps`` batches); ``batch_size`` is per process. Every field is also a
    command-line flag (``--output-dir``, ...: :meth:`add_arguments`); out-of-range values
    raise ``ValueError`` naming the field.

    Args:
        output_dir: where the run writes metrics.csv, results.json, ``checkpoints/``, the
            final model and TensorBoard logs.
        epochs: passes over the training data (>= 1); ignored when ``max_steps`` is set.
        max_steps: the run's length in optimizer steps, overriding ``epochs`` (the run may
            end mid-epoch); None: ``epochs`` full passes (required for data without a length).
        batch_size: training examples per batch, per process.
        eval_batch_size: evaluation examples per batch, per process (None: ``batch_size``).
        lr: the peak learning rate of the body (after the warmup).
        head_lr_multiplier: the heads' learning rate is ``lr`` times this (parameters named
            by ``model.head_prefixes``: new task heads; ViLT trains its VQA head at 10x).
        weight_decay: AdamW's decoupled weight decay, except for the parameters
            ``model.no_weight_decay()`` names (biases, norms, position embeddings).
        adam_betas: AdamW's (beta1, beta2).
        adam_eps: AdamW's epsilon.
        warmup: the linear warmup to ``lr``: a fraction of the total steps (< 1) or a
            number of steps (>= 1).
        schedule: the learning rate after the warmup: "cosine" or "linear" decay to
            ``lr * min_lr_ratio``, "constant", or "wsd" (constant, then a final decay).
        cooldown: wsd only: the final linear decay, a fraction of the total steps (< 1) or a
            number of steps.
        min_lr_ratio: the decay ends at ``lr * min_lr_ratio`` (in [0, 1]).
        grad_accum_steps: batches whose gradients are summed into one optimizer step.
        max_grad_norm: clip the gradients' total norm to this (None or 0: no clipping).
        mixed_precision: "no", "fp16" or "bf16"; None: what the launcher or accelerate
            config says (else no).
        seed: seeds the model's initialisation (``set_seed``), the data order (with the
            epoch) and the DataLoader workers.
        log_every: steps between metrics.csv rows (and progress-bar figures); also when the
            host reads losses and checks ``on_nonfinite``.
        eval_every: steps between evaluations of the eval data set; None: at the end only.
        save_every: steps between checkpoints; None: a checkpoint at the end only.
        keep_last: how many complete checkpoints to keep (the newest; >= 1).
        num_workers: DataLoader worker processes (0: load in the main process).
        shuffle: shuffle the training data each epoch (by seed and epoch).
        drop_last: drop each epoch's last incomplete training batch.
        resume: True: continue from the newest usable checkpoint in
            ``output_dir/checkpoints`` (none there: start anew; some, none usable: refuse);
            a path: from that checkpoint; False: start anew.
        compile: ``torch.compile`` the model (accelerate's inductor backend).
        fused: AdamW's kernel: True fused, False foreach; None: fused where torch has it
            for the device, else foreach.
        on_nonfinite: when a loss or gradient is NaN or inf: "raise" (at the next read,
            naming the step where it first happened) or "skip" that step's update.
        max_consecutive_skips: with "skip": stop with an error once this many steps in a row
            were skipped (checked every ``log_every`` steps; None: no limit).
        layer_decay: layer-wise learning-rate decay for fine-tuning: the final norm and
            heads train at ``lr``, block i of N at ``lr * decay**(N - i)``, the embeddings
            at ``lr * decay**(N + 1)`` (e.g. 0.75; None: off).
        ema_decay: keep an exponential moving average of the weights with this decay per step
            (e.g. 0.999), evaluated beside them (``ema_eval_*``) and saved to
            ``output_dir/ema`` (None: off).
        ema_warmup: average early steps with the lower decay (1 + step) / (10 + step), so
            the average does not remember the initial weights.
        save_best: keep a copy of the model at its best evaluation by this metric in
            ``output_dir/best`` (accuracy, loss, ema_accuracy, ... or a full ``eval_*`` /
            ``ema_eval_*`` name; ``ema_`` metrics keep the averaged weights); None: off.
        save_best_mode: "max" or "min": whether higher ``save_best`` values are better
            (None: min for a loss, else max).
        early_stop_patience: stop when ``save_best`` has not improved for this many
            evaluations in a row (needs ``save_best`` and ``eval_every``); None: off.
        save_model: ``save_pretrained(output_dir)`` the model (and processor) at the end.
        tensorboard: log to TensorBoard through accelerate's trackers (when installed).
        extra: a recipe's own options, recorded in results.json and checkpoints as is.
    """

    output_dir: str = "runs/vilt"
    epochs: int = 1
    max_steps: int | None = None  # when set, overrides epochs (the run may end mid-epoch)
    batch_size: int = 32
    eval_batch_size: int | None = None  # default: batch_size
    lr: float = 1e-4
    head_lr_multiplier: float = 10.0  # for the params named by model.head_prefixes
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup: float = 0.1  # < 1: a fraction of the total steps; >= 1: a number of steps
    schedule: str = "cosine"  # cosine | linear | constant | wsd (after the warmup)
    cooldown: float = 0.2  # wsd: the final decay, a fraction of the total steps (< 1) or steps
    min_lr_ratio: float = 0.0  # the decay ends at lr * min_lr_ratio
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    # no | fp16 | bf16; None: what the launcher or accelerate config says (else no)
    mixed_precision: str | None = None
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None  # None: evaluate at the end only
    save_every: int | None = None  # None: a checkpoint at the end only
    keep_last: int = 2
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = False
    resume: bool | str = False  # True: latest checkpoint in output_dir (if any); or a path
    compile: bool = False  # torch.compile through accelerate's dynamo backend
    fused: bool | None = None  # AdamW kernel: None picks fused where torch has it, else foreach
    on_nonfinite: str = field(
        default="raise",
        metadata={
            "help": "when a loss or gradient is NaN or inf: raise (at the next log_every check, "
            "naming the step where it first happened) or skip that step's update "
            "(default: %(default)s)"
        },
    )
    max_consecutive_skips: int | None = field(
        default=20,
        metadata={
            "help": "with --on-nonfinite skip: stop with an error once this many steps in a row "
            "were skipped (checked every log_every steps; none: no limit) "
            "(default: %(default)s)"
        },
    )
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "layer-wise learning-rate decay for fine-tuning: the final norm and heads "
            "train at --lr, block i of N at lr * decay^(N - i), the embeddings at "
            "lr * decay^(N + 1) (e.g. 0.75; none: off) (default: %(default)s)"
        },
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "keep an exponential moving average of the weights with this decay per "
            "step (e.g. 0.999), evaluated beside them (ema_eval_*) and saved to "
            "OUTPUT_DIR/ema (none: off) (default: %(default)s)"
        },
    )
    ema_warmup: bool = field(
        default=True,
        metadata={
            "help": "average early steps with the lower decay (1 + step) / (10 + step), so the "
            "average does not remember the initial weights (default: %(default)s)"
        },
    )
    save_best: str | None = field(
        default=None,
        metadata={
            "help": "keep a copy of the model at its best evaluation by this metric in "
            "OUTPUT_DIR/best (accuracy, loss, ema_accuracy, ... or a full eval_* / ema_eval_* "
            "name; ema_ metrics keep the averaged weights) (default: %(default)s)"
        },
    )
    save_best_mode: str | None = field(
        default=None,
        metadata={
            "help": "max or min: whether higher --save-best values are better (default: min "
            "for a loss, else max)"
        },
    )
    early_stop_patience: int | None = field(
        default=None,
        metadata={
            "help": "stop when --save-best has not improved for this many evaluations in a "
            "row (needs --eval-every) (default: %(default)s)"
        },
    )
    save_model: bool = True  # save_pretrained(output_dir) at the end
    tensorboard: bool = True  # through accelerate's trackers, when tensorboard is installed
    extra: dict[str, Any] = field(default_factory=dict)  # recipe options, recorded as is

    def __post_init__(self) -> None:
        self.output_dir = str(self.output_dir)
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]
        _check(self.epochs >= 1, "epochs", self.epochs, "must be >= 1")
        _check(self.max_steps is None or self.max_steps >= 0, "max_steps", self.max_steps)
        for name in ("batch_size", "grad_accum_steps", "log_every", "keep_last"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        for name in ("eval_batch_size", "eval_every", "save_every"):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, value, "must be None or >= 1")
        _check(self.lr > 0, "lr", self.lr, "must be > 0")
        _check(self.head_lr_multiplier > 0, "head_lr_multiplier", self.head_lr_multiplier)
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay)
        _check(self.warmup >= 0, "warmup", self.warmup, "must be a fraction < 1 or a step count")
        _check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio)
        _check(self.cooldown >= 0, "cooldown", self.cooldown, "must be a fraction < 1 or steps")
        _check(self.num_workers >= 0, "num_workers", self.num_workers)
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _check(
            self.mixed_precision is None or self.mixed_precision in PRECISIONS,
            "mixed_precision",
            self.mixed_precision,
            f"None or one of {PRECISIONS}",
        )
        _check(self.on_nonfinite in NONFINITE, "on_nonfinite", self.on_nonfinite, str(NONFINITE))
        _check(
            self.max_consecutive_skips is None or self.max_consecutive_skips >= 1,
            "max_consecutive_skips",
            self.max_consecutive_skips,
            "must be None or >= 1",
        )
        if self.max_grad_norm == 0:
            self.max_grad_norm = None
        _check(
            self.layer_decay is None or 0 < self.layer_decay <= 1,
            "layer_decay",
            self.layer_decay,
            "must be None or in (0, 1]",
        )
        _check(
            self.ema_decay is None or 0 <= self.ema_decay < 1,
            "ema_decay",
            self.ema_decay,
            "must be None or in [0, 1)",
        )
        _check(
            self.save_best_mode in (None, "max", "min"),
            "save_best_mode",
            self.save_best_mode,
            "must be None, max or min",
        )
        _check(
            self.early_stop_patience is None or self.early_stop_patience >= 1,
            "early_stop_patience",
            self.early_stop_patience,
            "must be None or >= 1",
        )
        if self.early_stop_patience is not None:
            _check(
                bool(self.save_best),
                "early_stop_patience",
                self.early_stop_patience,
                "watches the save_best metric: set save_best too",
            )
            _check(
                self.eval_every is not None,
                "early_stop_patience",
                self.early_stop_patience,
                "counts evaluations: set eval_every too",
            )
        if self.save_best == "":
            self.save_best = None

    @property
    def best_mode(self) -> str:
        """``save_best_mode``, or its default: min for a loss, else max."""
        if self.save_best_mode is not None:
            return self.save_best_mode
        return "min" if (self.save_best or "").endswith("loss") else "max"

    def warmup_steps(self, total_steps: int) -> int:
        """The warmup in steps: a fraction of ``total_steps`` or a step count.

        Args:
            total_steps: the run's optimizer steps.
        """
        return _in_steps(self.warmup, total_steps)

    def cooldown_steps(self, total_steps: int) -> int:
        """The wsd schedule's final decay in steps: a fraction of ``total_steps`` or a count.

        Args:
            total_steps: the run's optimizer steps.
        """
        return _in_steps(self.cooldown, total_steps)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> TrainingConfig:
        """The config :meth:`to_dict` wrote (results.json's, a checkpoint's), with changes.

        Args:
            data: field name -> value.
            **overrides: fields that replace ``data``'s.

        Raises:
            ValueError: for a name that is not a field, or a value out of range.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainingConfig: unknown fields {unknown}")
        return cls(**{**data, **overrides})

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied (and checked).

        Args:
            **changes: field name -> new value.

        Raises:
            TypeError: for a name that is not a field.
            ValueError: for a value out of range.
        """
        return dataclasses.replace(self, **changes)

    # -- command line -------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, **defaults: Any) -> None:
        """Add ``--output-dir``, ``--lr``, ... (one flag per field but ``extra``); ``defaults``
        replace the dataclass defaults (a recipe's own choices). A field's ``help`` metadata
        becomes its flag's help.

        Args:
            parser: the parser to add the flags to.
            **defaults: field name -> the flag's default instead of the dataclass's.
        """
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            default = defaults.get(f.name, _default(f))
            flag = "--" + f.name.replace("_", "-")
            kind = hints[f.name]
            help_text = f.metadata.get("help")
            if f.name == "resume":
                parser.add_argument(
                    flag,
                    nargs="?",
                    const=True,
                    default=default,
                    help="resume from the latest checkpoint, or from the one given",
                )
            elif kind is bool:
                parser.add_argument(
                    flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
                )
            elif f.name == "adam_betas":
                parser.add_argument(flag, type=float, nargs=2, default=default, help=help_text)
            else:
                parser.add_argument(flag, type=_scalar(kind), default=default, help=help_text)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **extra: Any) -> TrainingConfig:
        """The config from parsed flags (see :meth:`add_arguments`).

        Args:
            args: the parsed flags; fields without a flag keep their defaults.
            **extra: a recipe's own options, kept as the config's ``extra``.

        Raises:
            ValueError: for a value out of range.
        """
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        return cls(**{n: getattr(args, n) for n in names if hasattr(args, n)}, extra=extra)


def _check(ok: bool, name: str, value: Any, why: str = "out of range") -> None:
    if not ok:
        raise ValueError(f"TrainingConfig.{name}={value!r}: {why}")


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def _scalar(kind: Any) -> Any:
    """The argparse type of an ``int``, ``float | None``... annotation."""
    args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    base = args[0]

    def parse(text: str) -> Any:
        if text.lower() in ("none", "null", ""):
            return None
        return base(text)

    return parse
