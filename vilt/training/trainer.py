"""The training loop: one ``Trainer`` on accelerate for CPU, one GPU, DDP and mixed precision.

    set_seed(config.seed)                       # before building the model: same init
    model = vilt.ViltForQuestionAnswering.from_pretrained(...)
    trainer = Trainer(model, config, train_dataset=train, eval_dataset=test,
                      collate_fn=VQACollator(processor))
    results = trainer.train()                   # also writes output_dir/results.json

Each optimizer step (``grad_accum_steps`` batches) is one step of ``max_steps``, the
schedule, ``log_every``, ``eval_every`` and ``save_every``. Resumption is exact when the run resumes
with the same number of processes, batch size and accumulation: the sampler's order depends
only on (seed, epoch), the batches already consumed in the epoch are skipped without being
loaded, and the random states are restored. Randomness inside datasets or collators should
come from their own generators seeded by (seed, epoch, index), as vilt.data's do; draws from
the global random state in DataLoader workers are not replayed.

The step never waits on the device (:mod:`~vilt.training.step`): losses, their parts and
gradient norms stay there until a *read point*: every ``log_every`` steps (the
``metrics.csv`` row), before each checkpoint or saved model, and at the end, where the host
reads them in one transfer (under several processes: a gather, which also exchanges the
stop requests; between reads the only collective is DDP's gradient all-reduce). So
``on_nonfinite="raise"`` raises at the next read (up to ``log_every`` steps late), naming
the step where it first happened; "skip" skips the update on the device; several processes
stop at the next read after a SIGTERM, all at the same step; nothing non-finite is ever
saved (see :mod:`~vilt.training.guards`).
"""

from __future__ import annotations

import itertools
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import guards
from .accel import build_accelerator, tracker_config, uses_tensorboard
from .config import TrainingConfig
from .evaluate import evaluate
from .interrupt import StopRequests
from .kept import KeptWeights
from .loaders import make_loader
from .metrics import Metric, metrics_for
from .optim import build_optimizer, build_scheduler, describe_param_groups
from .progress import StepWindow
from .records import MetricsLog, data_skips, text_truncation, write_json_atomic
from .resume import changed_settings, find_resume, settings_applied
from .sharded import is_sharded
from .state import TrainState
from .step import TrainStep

__all__ = ["SIGTERM_EXIT_CODE", "Trainer"]

logger = logging.getLogger("vilt.training")
Callback = Callable[["Trainer", dict[str, Any]], None]
Evaluator = Callable[["Trainer"], dict[str, float]]
_END = object()
SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a job ended by SIGTERM


class Trainer:
    """Trains ``model`` (called as ``model(**inputs)``, returning an output with ``.loss``).

    The host reads the step's figures only at read points (every ``log_every`` steps,
    before saving, at the end); see the module docstring for what that means for
    ``on_nonfinite``, stop requests and several processes. The constructor builds the
    accelerator (unless given), the optimizer, the loaders and the schedule, and seeds the
    global random state with ``config.seed``; :meth:`train` runs.

    Args:
        model: the model to train; its output has ``.loss`` (and whatever the metrics read).
        config: the run's options (:class:`~vilt.training.TrainingConfig`).
        train_dataset: the training data, map-style (shuffled per epoch by seed and epoch)
            or iterable (then ``config.max_steps`` is required).
        eval_dataset: data evaluated every ``config.eval_every`` steps and at the end (None:
            no evaluation).
        collate_fn: items -> batch (e.g. :class:`~vilt.data.VQACollator`); a batch of None
            (every item skipped) is dropped. None: torch's default collation.
        eval_collate_fn: the evaluation data's collator (default: ``collate_fn``).
        metrics: name -> metric for :meth:`evaluate` (default: :func:`metrics_for` the
            model's task); the loss is always reported.
        callbacks: ``callback(trainer, record)`` after each optimizer step, where ``record``
            holds step, epoch, loss (the step's mean over its finite batches as a 0-dim
            device tensor: reading it waits for the device, which the trainer itself never
            does between reads), lr and the step's eval metrics if it evaluated.
        accelerator: an Accelerator to use instead of one built from the config (its mixed
            precision and gradient accumulation then apply; TensorBoard is not set up).
        processor: saved with the final model (``save_pretrained(output_dir,
            processor=...)``), as one set of files: the output directory never pairs the new
            model with another processor; and into each checkpoint, for a resumed run.
        evaluators: ``evaluator(trainer)`` runs after each evaluation of ``eval_dataset`` on
            every process and returns more figures, ``{"eval_name": value}``, logged with it
            in metrics.csv and the results: metrics that are not per-sample rows (retrieval
            recall).
        prepare_inputs: ``prepare_inputs(model, inputs) -> inputs`` in each training step,
            on the device, before the forward (e.g. :class:`~vilt.training.HardNegatives`).

    Raises:
        ValueError: for an ``accelerator`` whose gradient accumulation differs from
            ``config.grad_accum_steps``, training data without a length and no
            ``max_steps``, or a model without trainable parameters.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainingConfig,
        *,
        train_dataset: Dataset,
        eval_dataset: Dataset | None = None,
        collate_fn: Callable | None = None,
        eval_collate_fn: Callable | None = None,
        metrics: Mapping[str, Metric] | None = None,
        callbacks: Sequence[Callback] = (),
        accelerator: Accelerator | None = None,
        processor: Any = None,
        evaluators: Sequence[Evaluator] = (),
        prepare_inputs: Callable[[torch.nn.Module, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.processor = processor
        self.output_dir = Path(config.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator = accelerator or build_accelerator(config)
        if self.accelerator.gradient_accumulation_steps != config.grad_accum_steps:
            raise ValueError(
                f"the accelerator accumulates {self.accelerator.gradient_accumulation_steps} "
                f"batches, TrainingConfig.grad_accum_steps={config.grad_accum_steps}"
            )
        self._trackers = accelerator is None and uses_tensorboard(config)
        if not ckpt.supported(self.accelerator):
            logger.warning("no checkpoints under %s", self.accelerator.distributed_type)
        set_seed(config.seed)
        self.metrics = dict(metrics_for(model) if metrics is None else metrics)
        self.callbacks = list(callbacks)
        self.evaluators = list(evaluators)
        self.collate_fn = collate_fn
        self.eval_collate_fn = eval_collate_fn or collate_fn
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self._loader_gen = torch.Generator()
        acc = self.accelerator
        optimizer = build_optimizer(model, config, device=acc.device)
        if config.layer_decay is not None:
            lines = describe_param_groups(optimizer.param_groups, config.lr)
            acc.print(f"layer-wise lr decay {config.layer_decay:g}:\n  " + "\n  ".join(lines))
        self.kept = KeptWeights(  # EMA, best model
            model, config, self.metrics, acc.device, sharded=is_sharded(acc)
        )
        train_loader = self._loader(train_dataset, collate_fn, train=True)
        eval_loader = None
        if eval_dataset is not None:
            eval_loader = self._loader(eval_dataset, self.eval_collate_fn, train=False)
        self.model, self.optimizer, self.train_loader = acc.prepare(model, optimizer, train_loader)
        self.eval_loader = acc.prepare(eval_loader) if eval_loader is not None else None
        self._bare = self.unwrapped_model  # the same parameters, without wrappers
        self.steps_per_epoch = self._steps_per_epoch()
        if config.max_steps is None and self.steps_per_epoch is None:
            raise ValueError("the training data has no length: set TrainingConfig.max_steps")
        self.total_steps = (
            config.max_steps
            if config.max_steps is not None
            else config.epochs * self.steps_per_epoch
        )
        # Not prepared: accelerate would step it once per process; ours counts optimizer steps.
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        self.scheduler = build_scheduler(inner, config, total_steps=self.total_steps)
        self.state = TrainState()
        self.stop = StopRequests()
        self.resumed_from: Path | None = None
        self.resume_changes: dict[str, list[Any]] = {}  # {setting: [checkpoint's, this run's]}
        self._at_boundary = True
        self._last_saved_step: int | None = None
        self._last_eval: dict[str, float] = {}
        self._eval_step: int | None = None
        self._session_start = time.perf_counter()
        self._window = StepWindow(check_grad_norm=getattr(self.accelerator, "scaler", None) is None)
        self._step = TrainStep(
            acc, self.model, self.optimizer, self.scheduler, config, self._window, prepare_inputs
        )

    # -- setup ----------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, collate_fn: Callable | None, *, train: bool) -> DataLoader:
        return make_loader(
            dataset,
            self.config,
            train=train,
            collate_fn=collate_fn,
            generator=self._loader_gen if train else None,
            pin_memory=self.accelerator.device.type == "cuda",
        )

    def _steps_per_epoch(self) -> int | None:
        try:
            batches = len(self.train_loader)
        except TypeError:
            return None
        return max(math.ceil(batches / self.config.grad_accum_steps), 1)

    def _set_epoch(self, epoch: int) -> None:
        self._loader_gen.manual_seed(self.config.seed * 1_000_003 + epoch)
        self.train_loader.set_epoch(epoch)
        for obj in (self.train_dataset, self.collate_fn):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def _resume(self, path: Path) -> None:
        """Load checkpoint ``path`` and continue from it with this run's settings (a changed
        learning rate, schedule or length applies from here; see :mod:`.resume`)."""
        acc, cfg = self.accelerator, self.config
        record = ckpt.read_state(path)
        shape = {"world_size": acc.num_processes}
        changes = changed_settings(
            {**record.get("config", {}), "world_size": record.get("world_size")},
            {**cfg.to_dict(), **shape},
        )
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        with settings_applied(inner, self.scheduler):
            saved = ckpt.load_checkpoint(
                acc,
                path,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                extra_states=self.kept.extra_states(),
            )
        self.state = TrainState.from_record(saved)
        self.kept.restore(saved, self.unwrapped_model, path)
        self.resume_changes = changes
        if changes:
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
            acc.print(f"resume: settings changed since {path.name}, applied from step "
                      f"{self.state.global_step}: {listed}")  # fmt: skip
        if {"world_size", "batch_size", "grad_accum_steps"} & set(changes):
            acc.print("resume: the data position is approximate, resumption not exact")
        if saved.get("rng_restored") is False:
            set_seed(cfg.seed + self.state.global_step + acc.process_index)
        if self.steps_per_epoch is not None and self.state.batch_in_epoch >= len(self.train_loader):
            self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
        self.resumed_from = path
        self._last_saved_step = self.state.global_step

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train to ``max_steps`` or ``epochs`` (resuming first if the config says so),
        evaluate, save, and return what ``results.json`` holds.

        SIGTERM: checkpoint at the next step boundary (several processes: at the next read),
        then ``SystemExit(143)``. Ctrl-C (or a KeyboardInterrupt from a callback): checkpoint
        at the boundary, then KeyboardInterrupt. FloatingPointError: a non-finite loss or
        gradient (``on_nonfinite="raise"``), too many skipped steps, or non-finite weights
        (nothing is saved then).
        """
        acc = self.accelerator
        self._session_start = time.perf_counter()
        resume, note = find_resume(self.config.resume, self.config.checkpoint_dir)
        if note:
            acc.print(note)  # which checkpoint, and which were passed over and why
        log = None
        if acc.is_main_process:
            resume_step = ckpt.read_state(resume)["global_step"] if resume else None
            log = MetricsLog(self.output_dir / "metrics.csv", resume_step=resume_step)
        if self._trackers:
            acc.init_trackers("vilt", config=tracker_config(self.config))
        if resume is not None:
            self._resume(resume)  # last: restores the random states the loop continues from
        pbar = tqdm(
            total=self.total_steps,
            initial=self.state.global_step,
            desc="train",
            disable=not acc.is_local_main_process,
            dynamic_ncols=True,
        )
        self.model.train()
        with self.stop:
            try:
                self._loop(log, pbar)
            except KeyboardInterrupt:
                self._save_on_interrupt()
                raise
            finally:
                pbar.close()
            guards.check_trained(self.state)
            final_eval: dict[str, float] = {}
            if self.eval_loader is not None:
                if self._eval_step == self.state.global_step:
                    final_eval = self._last_eval
                else:
                    final_eval = self.evaluate()
                    step = self.state.global_step
                    self.kept.after_eval(self.accelerator, self.unwrapped_model, final_eval, step)
                    self._log_row(log, {"step": step, **final_eval})
            self._save()
        return self._finish(final_eval)

    def _done(self) -> bool:
        if self.kept.should_stop:
            return True  # early stopping
        if self.config.max_steps is None and self.state.epoch >= self.config.epochs:
            return True  # skipped batches leave steps of total_steps untaken: no extra epoch
        return self.state.global_step >= self.total_steps

    def _loop(self, log: MetricsLog | None, pbar: Any) -> None:
        st = self.state
        while not self._done():
            self._set_epoch(st.epoch)
            batches: Iterator[Any] = iter(self.train_loader)
            if st.batch_in_epoch:
                batches = self._resume_epoch(st.batch_in_epoch)
            consumed = st.batch_in_epoch
            for batch in batches:
                consumed += 1
                if self._skip_batch(batch):
                    continue
                self._at_boundary = False
                if not self._step(batch, step=st.global_step + 1, epoch=st.epoch):
                    continue
                st.global_step += 1
                st.batch_in_epoch = consumed
                self.kept.after_step(self._bare, st.global_step)
                self._at_boundary = True
                pbar.update(1)
                self._after_step(log, pbar)
                if self._done():
                    return
            st.epoch, st.batch_in_epoch = st.epoch + 1, 0

    def _skip_batch(self, batch: Any) -> bool:
        """Whether to drop this batch without a step: the collator returned None (every item
        skipped as bad). One process drops it. Under DDP it is kept: the step runs a zero
        loss in its place, so that the gradient syncs stay paired with no collective.
        Other multi-process setups (FSDP, DeepSpeed) agree on it with an all-reduce per batch
        and all drop it together."""
        if self._step.ddp is not None:
            return False
        skip = batch is None
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([int(skip)], device=self.accelerator.device)
            skip = bool(self.accelerator.reduce(flag, reduction="max").item())
        return skip

    def _resume_epoch(self, skip: int) -> Iterator[Any]:
        """The batches of the current epoch after the first ``skip``, without loading those
        (map-style data) or with (streams).

        Starting an iterator may draw from the global random state (accelerate's batch
        dispatcher for streams does): in the uninterrupted run that draw came before the
        checkpoint, so it is undone here to continue from the saved state exactly."""
        loader = self.accelerator.skip_first_batches(self.train_loader, skip)
        saved = ckpt.capture_rng()
        batches = iter(loader)
        first = next(batches, _END)
        ckpt.restore_rng(*saved)
        return batches if first is _END else itertools.chain([first], batches)

    def _after_step(self, log: MetricsLog | None, pbar: Any) -> None:
        """At a step boundary: read (at log and save steps), log, evaluate, callbacks,
        checkpoint, honour stop requests."""
        acc, cfg, st = self.accelerator, self.config, self.state
        step = st.global_step
        logged = step % cfg.log_every == 0 or self._done()
        saving = bool(cfg.save_every) and step % cfg.save_every == 0
        stop = self._read() if logged or saving else None
        row: dict[str, Any] = {"step": step}
        if logged:
            row["epoch"] = round(self._epoch_progress(), 4)
            row.update(self._window.flush(with_grad_norm=bool(cfg.max_grad_norm)))
            pbar.set_postfix(
                loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.3g}", sps=f"{row['samples_per_s']:.1f}"
            )
        evaluated = {}
        periodic = cfg.eval_every and step % cfg.eval_every == 0
        if self.eval_loader is not None and (periodic or self._done()):
            evaluated = self.evaluate()
            self.kept.after_eval(acc, self.unwrapped_model, evaluated, step)
        self._log_row(log, {**row, **evaluated})
        if self.callbacks:
            record = {"step": step, "epoch": self._epoch_progress(), **evaluated}
            record.update(loss=self._window.step_loss(), lr=self._window.lr)
            for callback in self.callbacks:
                callback(self, record)
        if saving:
            self._save()
        if acc.num_processes == 1:
            stop = self.stop.requested  # several processes: exchanged at the reads
        if stop:
            self._save()
            if stop == signal.SIGINT:
                raise KeyboardInterrupt
            acc.print(f"stopped by signal {stop} at step {step}; checkpoint saved")
            raise SystemExit(SIGTERM_EXIT_CODE)

    # -- reads ----------------------------------------------------------------------------------
    def _read(self) -> int | None:
        """Read what the steps since the last read left on the device (one transfer; under
        several processes a gather), update the counters and apply ``on_nonfinite`` and
        ``max_consecutive_skips``. Returns a stop request of any process (signal number)."""
        if not self._window.pending:  # the same on every process
            return None
        reading = self._window.read(self.accelerator, self.stop.requested)
        guards.account(reading, self.state, self.config)
        return reading.stop

    def _log_row(self, log: MetricsLog | None, row: dict[str, Any]) -> None:
        if len(row) <= 1:
            return
        if log is not None:
            log.log(row)
        if self._trackers:
            values = {k: v for k, v in row.items() if k != "step"}
            self.accelerator.log(values, step=row["step"])

    def _epoch_progress(self) -> float:
        if not self.steps_per_epoch:
            return float(self.state.epoch)
        return self.state.epoch + self.state.batch_in_epoch / max(len(self.train_loader), 1)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The trained model itself (no DDP or torch.compile wrapper), e.g. to save it."""
        return ckpt.bare_model(self.accelerator, self.model)

    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Metrics over ``dataset`` (default: the eval data set), as ``eval_<name>``.

        Every process must call it (the rows are gathered across processes).

        Args:
            dataset: data to evaluate instead of ``eval_dataset``, batched with
                ``eval_batch_size`` and ``eval_collate_fn`` (else ``collate_fn``); the
                ``evaluators`` run only for the eval data set.

        Returns:
            ``eval_loss``, ``eval_<metric>`` for each metric, and ``ema_eval_*`` with
            ``ema_decay`` set.

        Raises:
            ValueError: when no ``dataset`` is given and the Trainer has no eval data set.
        """
        loader = self.eval_loader
        if dataset is not None:
            collate = self.eval_collate_fn
            loader = self.accelerator.prepare(self._loader(dataset, collate, train=False))
        if loader is None:
            raise ValueError("no eval_dataset given to the Trainer or to evaluate()")
        out = evaluate(self.accelerator, self.model, loader, self.metrics)
        out.update(self.kept.evaluate(self.accelerator, loader, self.metrics))  # ema_eval_*
        if dataset is None:
            for evaluator in self.evaluators:
                out.update(evaluator(self))
            self._last_eval, self._eval_step = out, self.state.global_step
        return out

    # -- checkpoints and the end ----------------------------------------------------------------
    def _save(self) -> Path | None:
        acc, cfg = self.accelerator, self.config
        if self._last_saved_step == self.state.global_step or not ckpt.supported(acc):
            return None
        self._read()  # a non-finite step raises here, before anything is written
        guards.check_weights(self.unwrapped_model, "checkpoint", self.state.global_step)
        elapsed = self.state.elapsed_s + time.perf_counter() - self._session_start
        record = self.state.record(
            cfg, world_size=acc.num_processes, total_steps=self.total_steps, elapsed_s=elapsed
        )
        record.update(self.kept.record())
        path = ckpt.save_checkpoint(
            acc,
            cfg.checkpoint_dir,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=record,
            keep_last=cfg.keep_last,
            processor=self.processor,
            extra_states=self.kept.extra_states(),
        )
        self._last_saved_step = self.state.global_step
        return path

    def _save_on_interrupt(self) -> None:
        if self._at_boundary:
            self._save()
            self.accelerator.print(
                f"interrupted at step {self.state.global_step}; checkpoint saved"
            )
        else:
            logger.warning(
                "interrupted inside step %d: no checkpoint of a half-done step; the last one is "
                "step %s",
                self.state.global_step + 1,
                self._last_saved_step,
            )

    def _finish(self, final_eval: dict[str, float]) -> dict[str, Any]:
        acc, cfg = self.accelerator, self.config
        session = time.perf_counter() - self._session_start
        unwrapped = self.unwrapped_model
        results = {
            "metrics": {"train_loss": self._window.last_logged_loss, **final_eval},
            "steps": self.state.global_step,
            "epochs": round(self._epoch_progress(), 4),
            "samples_seen": self.state.samples_seen,
            "skipped_batches": self.state.skipped_batches,
            "skipped_steps": self.state.skipped_steps,
            "wall_time_s": round(self.state.elapsed_s + session, 3),
            "session_time_s": round(session, 3),
            "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
            "trainable_parameters": sum(
                p.numel() for p in unwrapped.parameters() if p.requires_grad
            ),
            "world_size": acc.num_processes,
            "mixed_precision": acc.mixed_precision,
            "device": str(acc.device),
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "resume_changes": self.resume_changes,
            "data_skips": data_skips(acc, train=self.train_dataset, eval=self.eval_dataset),
            "text_truncation": text_truncation(
                acc,
                train=self.collate_fn,
                eval=self.eval_collate_fn if self.eval_dataset is not None else None,
            ),
            "config": cfg.to_dict(),
            **self.kept.results(),  # best model, early stopping
        }
        if self._window.last_logged_loss is None and self.state.global_step:
            logger.warning("train_loss is None: the last logged steps had no finite loss")
        if cfg.save_model and hasattr(unwrapped, "save_pretrained"):
            guards.check_weights(unwrapped, "model", self.state.global_step)  # every process
            ckpt.save_model(acc, self.model, self.output_dir, processor=self.processor)
            if acc.is_main_process:
                self.kept.save_final(self.output_dir, self.state.global_step)
        if acc.is_main_process:
            write_json_atomic(self.output_dir / "results.json", results)
        if self._trackers:
            acc.end_training()
        acc.wait_for_everyone()
        return results
