"""The micro-batcher (vilt.serving.batching): concurrent submissions share batches of at most
max_batch, each gets its own result in order, a failing item fails alone, a slow batch times
its requests out with 503, a full queue refuses with 503, and closing runs what was queued."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vilt.serving.batching import MicroBatcher
from vilt.serving.engine import RequestError


def run_async(coro):
    return asyncio.run(coro)


def make(run, **options) -> tuple[MicroBatcher, list[list]]:
    seen: list[list] = []

    def recorded(items):
        seen.append(list(items))
        return run(items)

    executor = ThreadPoolExecutor(1)
    return MicroBatcher(recorded, executor=executor, **options), seen


def test_concurrent_items_share_batches_and_each_gets_its_own_result():
    batcher, seen = make(lambda items: [x * 10 for x in items], max_batch=4, max_wait=0.2)

    async def main():
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i, timeout=5) for i in range(10)))
        await batcher.close()
        return results

    assert run_async(main()) == [i * 10 for i in range(10)]
    assert [len(b) for b in seen] == [4, 4, 2]  # at most max_batch, in arrival order
    assert [x for b in seen for x in b] == list(range(10))
    assert batcher.stats() == {"2": 1, "4": 2}


def test_max_batch_one_runs_every_item_alone():
    batcher, seen = make(lambda items: items, max_batch=1, max_wait=0.2)

    async def main():
        batcher.start()
        out = await asyncio.gather(*(batcher.submit(i, timeout=5) for i in range(3)))
        await batcher.close()
        return out

    assert run_async(main()) == [0, 1, 2]
    assert seen == [[0], [1], [2]]


def test_a_failing_item_fails_alone_and_the_others_get_their_results():
    def run(items):
        if "bad" in items:
            raise ValueError("cannot run bad")
        return [s.upper() for s in items]

    batcher, seen = make(run, max_batch=8, max_wait=0.2)

    async def main():
        batcher.start()
        out = await asyncio.gather(
            *(batcher.submit(s, timeout=5) for s in ("a", "bad", "c")), return_exceptions=True
        )
        await batcher.close()
        return out

    a, bad, c = run_async(main())
    assert (a, c) == ("A", "C")
    assert isinstance(bad, ValueError) and "cannot run bad" in str(bad)
    assert seen[0] == ["a", "bad", "c"] and ["bad"] in seen  # retried one by one


def test_a_request_that_waits_too_long_gets_503_and_is_not_run_later():
    gate = threading.Event()

    def slow(items):
        gate.wait(5)
        return items

    batcher, seen = make(slow, max_batch=1, max_wait=0)

    async def main():
        batcher.start()
        first = asyncio.ensure_future(batcher.submit("first", timeout=5))
        await asyncio.sleep(0.05)  # "first" is running and holds the model thread
        with pytest.raises(RequestError) as err:
            await batcher.submit("late", timeout=0.1)
        gate.set()
        assert await first == "first"
        await batcher.close()
        return err.value

    err = run_async(main())
    assert err.status == 503 and "timeout" in err.message
    assert seen == [["first"]]  # the timed-out request was dropped, not run


def test_a_full_queue_refuses_with_503_and_close_runs_what_was_queued():
    gate = threading.Event()

    def slow(items):
        gate.wait(5)
        return items

    batcher, seen = make(slow, max_batch=1, max_wait=0, max_queue=2)

    async def main():
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(0, timeout=5))]
        await asyncio.sleep(0.05)  # 0 runs and holds the model thread
        tasks += [asyncio.ensure_future(batcher.submit(i, timeout=5)) for i in (1, 2)]
        await asyncio.sleep(0.05)  # 1 and 2 wait: the queue is full
        with pytest.raises(RequestError) as err:
            await batcher.submit(3, timeout=5)
        gate.set()
        closing = asyncio.ensure_future(batcher.close())
        results = await asyncio.gather(*tasks)
        await closing
        with pytest.raises(RequestError, match="shutting down"):
            await batcher.submit(4, timeout=5)
        return err.value, results

    err, results = run_async(main())
    assert err.status == 503 and "2 requests are already waiting" in err.message
    assert results == [0, 1, 2] and seen == [[0], [1], [2]]


def test_the_first_item_waits_at_most_max_wait_for_company():
    batcher, seen = make(lambda items: items, max_batch=8, max_wait=0.05)

    async def main():
        batcher.start()
        start = time.perf_counter()
        await batcher.submit("alone", timeout=5)
        waited = time.perf_counter() - start
        await batcher.close()
        return waited

    assert run_async(main()) < 2.0  # not the 5 s timeout: the wait ended, the batch ran
    assert seen == [["alone"]]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda x: x, executor=ThreadPoolExecutor(1), max_batch=0)
    with pytest.raises(ValueError, match="max_wait"):
        MicroBatcher(lambda x: x, executor=ThreadPoolExecutor(1), max_wait=-1)
