"""Data loaders, and the training sampler: a permutation that depends only on (seed, epoch).

Every process draws the same order (accelerate then hands each process its share of the
batches), and a resumed run draws the order it had before the interruption, so skipping the
batches already seen lands exactly where it stopped. It owns its generator and never touches
the global random state.

DataLoader workers leave stop signals to the main process: a SIGTERM sent to the whole
process group, as schedulers and container runtimes send it, would otherwise kill the workers
first and end the run with "DataLoader worker ... killed by signal" instead of a checkpoint.
Each worker starts with SIGTERM and SIGINT blocked (:func:`worker_context`: blocked before
the fork, so that no thread a worker makes, OpenMP's included, ever takes them), and its
``worker_init_fn`` (:func:`leave_stops_to_main`) ends it only on a SIGTERM from the main
process, the way torch ends a worker it cannot join.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing import context as mp_context
from multiprocessing.context import BaseContext

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from .config import TrainingConfig

__all__ = ["EpochSampler", "leave_stops_to_main", "make_loader", "worker_context"]

_STOPS = {signal.SIGTERM, signal.SIGINT}


class EpochSampler(Sampler[int]):
    """Indices 0..length-1, shuffled by ``(seed, epoch)`` (in order when ``shuffle`` is
    False). Call ``set_epoch`` before each epoch (accelerate's data loaders do).

    Args:
        length: the data set's length.
        seed: the seed of every epoch's permutation (with the epoch).
        shuffle: permute the indices; False: 0..length-1 in order every epoch.
    """

    def __init__(self, length: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of the epoch about to start.

        Args:
            epoch: the epoch (0-based); the order is a function of (seed, epoch) alone.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=gen).tolist())


class _StopsBlocked:
    """A Process whose child starts with SIGTERM and SIGINT blocked: the mask is set around
    the fork (a forked or spawned child inherits the parent thread's mask)."""

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return super().start()  # type: ignore[misc]
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            return super().start()  # type: ignore[misc]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# module-level classes, so that a spawned worker can unpickle its Process
class _QuietSpawnProcess(_StopsBlocked, mp_context.SpawnProcess):
    pass


class _QuietSpawnContext(mp_context.SpawnContext):
    Process = _QuietSpawnProcess


_QUIET_CONTEXTS: dict[str, type[BaseContext]] = {"spawn": _QuietSpawnContext}
if hasattr(mp_context, "ForkContext"):  # not on Windows

    class _QuietForkProcess(_StopsBlocked, mp_context.ForkProcess):
        pass

    class _QuietForkContext(mp_context.ForkContext):
        Process = _QuietForkProcess

    class _QuietForkServerProcess(_StopsBlocked, mp_context.ForkServerProcess):
        pass

    class _QuietForkServerContext(mp_context.ForkServerContext):
        Process = _QuietForkServerProcess

    _QUIET_CONTEXTS |= {"fork": _QuietForkContext, "forkserver": _QuietForkServerContext}


def worker_context() -> BaseContext | None:
    """The default multiprocessing context, except that its processes start with SIGTERM and
    SIGINT blocked, so that every thread of a DataLoader worker (OpenMP's too, made before its
    ``worker_init_fn`` runs) leaves them pending for :func:`leave_stops_to_main`. None where
    signal masks do not exist (Windows): the default context."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    method = multiprocessing.get_start_method()
    return _QUIET_CONTEXTS[method]() if method in _QUIET_CONTEXTS else None


def leave_stops_to_main(worker_id: int, *, main_pid: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: SIGINT and SIGTERM from outside are left to
    the main process, which saves a checkpoint and ends the workers itself.

    SIGINT (Ctrl-C reaches the whole foreground group) is ignored. SIGTERM, blocked since the
    worker started (:func:`worker_context`), is watched by a thread that ends the worker only
    when the main process sent it (torch terminates a worker it cannot join that way); from
    anyone else it is ignored. Where the system cannot tell who sent a signal (no
    ``sigwaitinfo``), SIGTERM is ignored.

    Args:
        worker_id: the worker's number (unused; the DataLoader passes it).
        main_pid: the process that owns the DataLoader.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)  # blocked already when started by us

    def watch() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == main_pid:  # asked to stop: a clean exit, as torch expects
                os._exit(0)

    threading.Thread(target=watch, name="vilt-worker-stop", daemon=True).start()


def make_loader(
    dataset: Dataset,
    config: TrainingConfig,
    *,
    train: bool,
    collate_fn: Callable | None = None,
    generator: torch.Generator | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset``: an :class:`EpochSampler` (shuffled for training) for
    map-style data, none for streams. ``generator`` seeds the workers; passing one keeps
    starting an epoch from drawing on the global random state. Workers leave stop signals to
    this process (:func:`leave_stops_to_main`).

    Args:
        dataset: a map-style or iterable data set.
        config: its batch_size (eval_batch_size when not training, default batch_size),
            seed, shuffle and drop_last (both for training only) and num_workers.
        train: a training loader (shuffled, drop_last) rather than an evaluation one.
        collate_fn: items -> batch (e.g. a :class:`~vilt.data.VQACollator`); None:
            torch's default.
        generator: the loader's generator (default: a new one seeded with ``config.seed``).
        pin_memory: pin batches in page-locked memory (for a CUDA device).
    """
    sampler = None
    if not isinstance(dataset, IterableDataset):
        sampler = EpochSampler(len(dataset), seed=config.seed, shuffle=config.shuffle and train)
    return DataLoader(
        dataset,
        batch_size=config.batch_size if train else (config.eval_batch_size or config.batch_size),
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.num_workers,
        pin_memory=pin_memory,
        drop_last=config.drop_last and train,
        worker_init_fn=functools.partial(leave_stops_to_main, main_pid=os.getpid()),
        multiprocessing_context=worker_context() if config.num_workers else None,
        generator=generator
        if generator is not None
        else torch.Generator().manual_seed(config.seed),
    )
