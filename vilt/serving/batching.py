"""Dynamic micro-batching: concurrent requests of one task share a forward pass.

A request waits at most ``max_wait`` seconds for others to join it, and a batch holds at most
``max_batch``; under load the queue fills while the model runs, so batches fill without waiting.
The model runs on one thread shared by every task's batcher (one forward at a time, each using
torch's intra-op threads), while the event loop goes on accepting and preparing requests.

A batch that fails is run again one request at a time, so one bad request fails alone. A
request that times out is dropped from any batch not yet started.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from .engine import RequestError

__all__ = ["MicroBatcher"]

_STOP = object()


class MicroBatcher:
    """Collects items submitted concurrently into batches for ``run``.

    Args:
        run: a batch of items -> one result per item, in order (runs on ``executor``).
        executor: where ``run`` runs (one thread: one batch at a time); or given to
            :meth:`start`.
        max_batch: the most items in one batch (1: no batching).
        max_wait: seconds the first item of a batch waits for more.
        max_queue: items waiting at most; more are refused (503).
        name: what to call this batcher in messages.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], list[Any]],
        *,
        executor: Executor | None = None,
        max_batch: int = 8,
        max_wait: float = 0.005,
        max_queue: int = 256,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        self.run = run
        self.executor = executor
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait)
        self.max_queue = int(max_queue)
        self.name = name
        self.batch_sizes: Counter[int] = Counter()  # size -> batches run
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._in_flight = 0

    def start(self, executor: Executor | None = None) -> None:
        """Start collecting (in the running event loop), running batches on ``executor``
        (default: the one given to the constructor)."""
        self.executor = executor or self.executor
        if self.executor is None:
            raise ValueError(f"{self.name}: no executor to run batches on")
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def close(self) -> None:
        """Run every item already submitted, then stop."""
        if self._task is None:
            return
        await self._queue.put(_STOP)
        await self._task
        self._task = None

    async def submit(self, item: Any, timeout: float) -> Any:
        """The result of ``item``, run in some batch within ``timeout`` seconds.

        Raises:
            RequestError: 503 when the queue is full or the time ran out.
            Exception: whatever ``run`` raised for this item.
        """
        if self._task is None or self._task.done():
            raise RequestError(503, "the server is shutting down")
        if self._queue.qsize() >= self.max_queue:
            raise RequestError(
                503, f"{self.max_queue} requests are already waiting for {self.name}; try again"
            )
        future = asyncio.get_running_loop().create_future()
        self._in_flight += 1
        try:
            await self._queue.put((item, future))
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            raise RequestError(
                503, f"no answer within the server's request timeout of {timeout:g} s; try again"
            ) from None
        finally:
            self._in_flight -= 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                try:
                    if remaining > 0:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    else:  # the wait is over: only what is already queued joins
                        item = self._queue.get_nowait()
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if item is _STOP:
                    stopping = True  # finish this batch (and nothing after it: none is left)
                    break
                batch.append(item)
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            self.batch_sizes[len(live)] += 1
            items = [item for item, _ in live]
            try:
                results = await loop.run_in_executor(self.executor, self._run_isolated, items)
            except Exception as err:  # the executor itself failed: no item ran
                results = [err] * len(items)
            for (_, future), result in zip(live, results, strict=True):
                if future.done():  # timed out while running
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _run_isolated(self, items: list[Any]) -> list[Any]:
        """``run(items)``; when it fails, each item alone, so a bad one fails by itself."""
        try:
            results = self.run(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
            return list(results)
        except Exception as err:
            if len(items) == 1:
                return [err]
        out: list[Any] = []
        for item in items:
            try:
                out.extend(self.run([item]))
            except Exception as err:
                out.append(err)
        return out

    @property
    def in_flight(self) -> int:
        """Items submitted whose result is not out yet (queued, batching or running)."""
        return self._in_flight

    def stats(self) -> dict[str, int]:
        """Batches run, by size (as strings, for JSON)."""
        return {str(size): n for size, n in sorted(self.batch_sizes.items())}
