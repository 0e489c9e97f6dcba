"""The batcher alone: how batches form, the queue bound, dropped and failed jobs, bisection."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlctl_serve.batching import Batcher, QueueFull, ShuttingDown
from mlctl_serve.metrics import Metrics


def make(run, **options):  # type: ignore[no-untyped-def]
    defaults = {"max_rows": 4, "delay_s": 0.0, "max_queue": 8}
    defaults.update(options)
    return Batcher(run, metrics=Metrics(), **defaults)


def started(batcher: Batcher) -> Batcher:  # type: ignore[type-arg]
    batcher.start(ThreadPoolExecutor(1))
    return batcher


def test_jobs_queued_while_the_model_is_busy_run_together() -> None:
    seen: list[list[str]] = []
    busy = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        seen.append([j.payload for j in jobs])
        if len(seen) == 1:
            busy.wait(5)
        return [j.payload.upper() for j in jobs]

    async def scenario() -> list[str]:
        batcher = started(make(run))
        first = batcher.submit("a", 1)
        await asyncio.sleep(0.05)  # "a" is now in the model
        rest = [batcher.submit(p, 1) for p in "bcdef"]
        busy.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return list(results)

    assert asyncio.run(scenario()) == ["A", "B", "C", "D", "E", "F"]
    assert seen == [["a"], ["b", "c", "d", "e"], ["f"]]  # max_rows 4 splits the five that queued


def test_a_delay_waits_for_a_fuller_batch() -> None:
    seen: list[int] = []

    def run(jobs):  # type: ignore[no-untyped-def]
        seen.append(sum(j.rows for j in jobs))
        return [None] * len(jobs)

    async def scenario() -> None:
        batcher = started(make(run, delay_s=0.2, max_rows=8))
        futures = [batcher.submit(i, 2) for i in range(2)]
        await asyncio.sleep(0.05)
        futures += [batcher.submit(i, 2) for i in range(2)]  # arrives within the delay: same batch
        await asyncio.gather(*futures)
        await batcher.stop()

    asyncio.run(scenario())
    assert seen == [8]


def test_the_model_thread_takes_the_next_batch_without_waiting_for_the_event_loop() -> None:
    """A loop busy with other work (a storm of refusals) must not slow the model: batches go on."""
    seen: list[str] = []
    gate = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        gate.wait(5)
        seen.extend(j.payload for j in jobs)
        return [None] * len(jobs)

    async def scenario() -> int:
        batcher = started(make(run, max_rows=1))
        futures = [batcher.submit("a", 1)]
        await asyncio.sleep(0.05)  # "a" is in the model, held by the gate
        futures += [batcher.submit(p, 1) for p in "bcd"]
        threading.Timer(0.1, gate.set).start()
        time.sleep(0.5)  # the event loop is blocked: no callback of it runs meanwhile
        during = len(seen)
        await asyncio.gather(*futures)
        await batcher.stop()
        return during

    assert asyncio.run(scenario()) == 4  # all four batches ran while the loop was blocked


def test_requests_that_arrive_together_wait_for_each_other_when_the_model_is_idle() -> None:
    """With no delay, an idle model starts once the loop has queued everything that arrived with the
    first request, not on the first alone."""
    seen: list[int] = []

    def run(jobs):  # type: ignore[no-untyped-def]
        seen.append(len(jobs))
        return [None] * len(jobs)

    async def scenario() -> None:
        batcher = started(make(run, max_rows=8))
        await asyncio.sleep(0.05)  # the model thread is idle
        futures = [batcher.submit(i, 1) for i in range(5)]  # all in one turn of the loop
        time.sleep(0.1)  # a slow turn: the model thread must not start on the first meanwhile
        await asyncio.gather(*futures)
        await batcher.stop()

    asyncio.run(scenario())
    assert seen == [5]


def test_the_queue_is_bounded_and_reservations_count() -> None:
    gate = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        gate.wait(5)
        return [None] * len(jobs)

    async def scenario() -> None:
        batcher = started(make(run, max_queue=3, max_rows=1))
        running = batcher.submit("r", 1)
        await asyncio.sleep(0.05)
        queued = [batcher.submit(i, 1) for i in range(2)]
        assert batcher.reserve()  # the third slot, promised to a request being read
        assert not batcher.reserve()
        with pytest.raises(QueueFull):
            batcher.submit("one too many", 1)
        queued.append(batcher.submit("the reserved one", 1, reserved=True))
        assert not batcher.reserve()
        gate.set()
        await asyncio.gather(running, *queued)
        assert batcher.reserve()
        batcher.release()
        batcher.submit("room again", 1)
        await batcher.stop()

    asyncio.run(scenario())


def test_jobs_already_answered_never_reach_the_model() -> None:
    seen: list[str] = []
    gate = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        gate.wait(5)
        seen.extend(j.payload for j in jobs)
        return [None] * len(jobs)

    async def scenario() -> None:
        batcher = started(make(run))
        first = batcher.submit("first", 1)
        await asyncio.sleep(0.05)
        gone = batcher.submit("gone", 1)
        kept = batcher.submit("kept", 1)
        gone.set_exception(TimeoutError())  # what a timeout or a disconnect does
        gate.set()
        await asyncio.gather(first, kept)
        await batcher.stop()
        gone.exception()

    asyncio.run(scenario())
    assert seen == ["first", "kept"]


def test_a_failing_batch_is_bisected_so_only_the_bad_request_fails() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        gate.wait(5)
        calls.append([j.payload for j in jobs])
        if 5 in [j.payload for j in jobs]:
            raise IndexError("index out of range in self")
        return [j.payload * 10 for j in jobs]

    async def scenario() -> list[object]:
        batcher = started(make(run, max_rows=8))
        futures = [batcher.submit(i, 1) for i in range(8)]  # queued together: one batch of eight
        gate.set()
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results[:5] == [0, 10, 20, 30, 40]
    assert results[6:] == [60, 70]
    assert isinstance(results[5], IndexError)
    assert calls[0] == list(range(8))
    assert len(calls) == 7  # 8 -> 4+4 -> 2+2 (the bad half) -> 1+1: 2 log2(8) + 1 model calls
    assert [5] in calls


def test_every_bad_request_fails_alone_and_the_batcher_goes_on() -> None:
    def run(jobs):  # type: ignore[no-untyped-def]
        bad = [j.payload for j in jobs if j.payload % 3 == 0]
        if bad:
            raise ValueError(f"cannot take {bad[0]}")
        return ["ok"] * len(jobs)

    async def scenario() -> list[object]:
        batcher = started(make(run, max_rows=8))
        results = await asyncio.gather(*(batcher.submit(i, 1) for i in range(1, 9)), return_exceptions=True)
        results.append(await batcher.submit(10, 1))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert [str(r) if isinstance(r, Exception) else r for r in results] == [
        "ok",
        "ok",
        "cannot take 3",
        "ok",
        "ok",
        "cannot take 6",
        "ok",
        "ok",
        "ok",
    ]


def test_stop_fails_queued_jobs_and_refuses_new_ones() -> None:
    gate = threading.Event()
    entered = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        entered.set()
        gate.wait(5)
        return ["done"] * len(jobs)

    async def scenario() -> None:
        batcher = started(make(run, max_rows=1))
        running = batcher.submit("running", 1)
        # The first job must be in the model before the second is queued (a fixed sleep was too short
        # on a loaded machine: both were then queued and both failed).
        assert await asyncio.to_thread(entered.wait, 5)
        queued = batcher.submit("queued", 1)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        with pytest.raises(ShuttingDown):
            await queued
        with pytest.raises(ShuttingDown):
            batcher.submit("late", 1)
        gate.set()
        await stopping
        assert await running == "done"  # the batch in the model finishes

    asyncio.run(scenario())
