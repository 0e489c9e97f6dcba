"""The batcher alone: how batches form, the queue bound, dropped and failed jobs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlctl_serve.batching import Batcher, QueueFull
from mlctl_serve.metrics import Metrics


def make(run, **options):  # type: ignore[no-untyped-def]
    defaults = {"max_rows": 4, "delay_s": 0.0, "max_queue": 8}
    defaults.update(options)
    executor = ThreadPoolExecutor(1)
    return Batcher(run, executor=executor, metrics=Metrics(), **defaults)


def test_jobs_queued_while_the_model_is_busy_run_together() -> None:
    seen: list[list[str]] = []
    busy = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        seen.append([j.payload for j in jobs])
        if len(seen) == 1:
            busy.wait(5)
        return [j.payload.upper() for j in jobs]

    async def scenario() -> list[str]:
        batcher = make(run)
        batcher.start()
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
        batcher = make(run, delay_s=0.2, max_rows=8)
        batcher.start()
        futures = [batcher.submit(i, 2) for i in range(2)]
        await asyncio.sleep(0.05)
        futures += [batcher.submit(i, 2) for i in range(2)]  # arrives within the delay: same batch
        await asyncio.gather(*futures)
        await batcher.stop()

    asyncio.run(scenario())
    assert seen == [8]


def test_the_queue_is_bounded() -> None:
    gate = threading.Event()

    def run(jobs):  # type: ignore[no-untyped-def]
        gate.wait(5)
        return [None] * len(jobs)

    async def scenario() -> None:
        batcher = make(run, max_queue=3, max_rows=1)
        batcher.start()
        running = batcher.submit("r", 1)
        await asyncio.sleep(0.05)
        queued = [batcher.submit(i, 1) for i in range(3)]
        with pytest.raises(QueueFull):
            batcher.submit("one too many", 1)
        gate.set()
        await asyncio.gather(running, *queued)
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
        batcher = make(run)
        batcher.start()
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


def test_a_failing_model_fails_its_batch_and_the_batcher_goes_on() -> None:
    calls = []

    def run(jobs):  # type: ignore[no-untyped-def]
        calls.append(len(jobs))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory")
        return ["ok"] * len(jobs)

    async def scenario() -> None:
        batcher = make(run)
        batcher.start()
        with pytest.raises(RuntimeError, match="CUDA out of memory"):
            await batcher.submit("a", 1)
        assert await batcher.submit("b", 1) == "ok"
        await batcher.stop()

    asyncio.run(scenario())
