"""Dynamic batching: requests queue, one model thread takes them in batches and runs them.

A batch closes when it holds ``max_rows`` rows or when its first request has waited ``delay_s``;
with no delay, a batch is whatever queued while the model was busy (the lowest latency at low load,
large batches under load). The queue is bounded: ``reserve`` answers at once whether there is room,
before the request's body is read or parsed, so an overload costs a fast 503 instead of memory,
latency and parsing work.

The model thread drives itself: it waits for work on a condition, takes the next batch as soon as
the last one is done and hands the answers back to the event loop in one callback per batch. The
model never waits for an event-loop turn to get its next batch, so a loop busy refusing a storm of
requests slows the answers a little but never the model.

When a batch raises, it is split in halves and each half retried, down to single requests: every
request that can be answered is answered, and only the ones that make the model fail get the error
(a batch with one bad request of n costs about 2 log2 n extra model calls).

Requests whose future is already done when their turn comes (timed out, client gone) are dropped
without touching the model.

A library could do this (LitServe, Ray Serve, BentoML all batch), but each is a whole server with its
own process model and per-request overhead several times ours; the loop below is the part we need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mlctl_serve.metrics import Metrics

Payload = TypeVar("Payload")
log = logging.getLogger("mlctl_serve")


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` requests already."""


class ShuttingDown(Exception):
    """The server stopped before the request reached the model."""


@dataclass
class Job(Generic[Payload]):
    payload: Payload
    rows: int
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


class Batcher(Generic[Payload]):
    """Collects jobs into batches and runs ``run_batch`` on them on the model thread.

    ``run_batch(jobs)`` returns one result per job, in order, or raises; it runs on the thread of
    ``executor`` (one worker), which it occupies until ``stop``.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Job[Payload]]], Sequence[Any]],
        *,
        max_rows: int,
        delay_s: float,
        max_queue: int,
        metrics: Metrics,
    ) -> None:
        self.run_batch = run_batch
        self.max_rows = max_rows
        self.delay_s = delay_s
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: collections.deque[Job[Payload]] = collections.deque()
        self._queued_rows = 0
        #: Slots promised to requests whose body is still being read or parsed.
        self._reserved = 0
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False  # the model thread sleeps on _cond
        self._kick_pending = False  # a call_soon(_kick) is scheduled
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: ThreadFuture[None] | None = None

    # --- the event loop's side -----------------------------------------------------------------------

    def start(self, executor: Executor) -> None:
        """Start taking batches on ``executor``'s thread (after whatever it runs now, e.g. loading)."""
        self._loop = asyncio.get_running_loop()
        self._worker = executor.submit(self._drain)

    async def stop(self) -> None:
        """Stop the model thread after its current batch; queued jobs fail with ShuttingDown."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            left = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        for job in left:
            if not job.future.done():
                job.future.set_exception(ShuttingDown())
        if self._worker is not None and not self._worker.done():
            # The batch in progress finishes (the model cannot be interrupted); bounded by its own time.
            await asyncio.wrap_future(self._worker)

    def has_room(self) -> bool:
        return len(self._queue) + self._reserved < self.max_queue

    def reserve(self) -> bool:
        """Promise a queue slot to a request about to be read; False when the queue is full.

        Call before reading the body; then ``submit`` (which uses the slot) or ``release``.
        """
        if len(self._queue) + self._reserved >= self.max_queue:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """Give back a reserved slot the request will not use (bad request, client gone)."""
        self._reserved -= 1

    def submit(self, payload: Payload, rows: int, *, reserved: bool = False) -> asyncio.Future[Any]:
        """Queue a job; its future resolves to the job's result. Raises QueueFull or ShuttingDown."""
        if reserved:
            self._reserved -= 1
        elif len(self._queue) + self._reserved >= self.max_queue:
            raise QueueFull
        if self._stopping:
            raise ShuttingDown
        loop = self._loop or asyncio.get_running_loop()
        job = Job(payload, rows, loop.create_future())
        with self._cond:
            self._queue.append(job)
            self._queued_rows += rows
            kick = self._waiting and not self._kick_pending
            if kick:
                self._kick_pending = True
        if kick:
            # Wake an idle model thread once this turn of the event loop has queued all it read: a
            # batch then holds every request that arrived together, not just the first of them.
            loop.call_soon(self._kick)
        self.metrics.queue_depth.set(len(self._queue))
        return job.future

    def _kick(self) -> None:
        with self._cond:
            self._kick_pending = False
            self._cond.notify()

    @property
    def depth(self) -> int:
        return len(self._queue)

    # --- the model thread ------------------------------------------------------------------------------

    def _drain(self) -> None:
        worked = 0.0  # how long the last batch took; 0 after waiting idle
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._waiting = True
                    self._cond.wait()
                    self._waiting = False
                    worked = 0.0
                if self._stopping:
                    return
                if self.delay_s > 0:
                    self._fill(self._queue[0].enqueued + self.delay_s)
                elif (
                    worked
                    and self._queued_rows < self.max_rows
                    and len(self._queue) + self._reserved < self.max_queue  # else nobody more can join
                ):
                    self._yield_turn(worked)
                batch = self._take()
            self.metrics.queue_depth.set(len(self._queue))
            if batch:
                started = time.perf_counter()
                self._run(batch)
                worked = time.perf_counter() - started

    def _yield_turn(self, worked: float) -> None:
        """Right after a batch, with less than a full one queued: let the event loop finish its turn.

        The loop is likely reading requests that arrived during the batch; it kicks the model thread
        at the end of its turn, and the next batch holds them all (fewer, fuller batches: less model
        and GIL overhead per request). Never longer than the batch itself took, so a loop busy for long
        (a storm of refusals) gets no more than half of the time.
        """
        if not self._kick_pending:
            assert self._loop is not None
            self._kick_pending = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: stop() comes next
                self._loop.call_soon_threadsafe(self._kick)
        self._waiting = True
        self._cond.wait(max(worked, 0.0002))
        self._waiting = False

    def _fill(self, deadline: float) -> None:
        """Wait (holding the condition) for more rows until the batch is full or the deadline passes."""
        while self._queued_rows < self.max_rows and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._waiting = True
            self._cond.wait(remaining)
            self._waiting = False

    def _take(self) -> list[Job[Payload]]:
        batch: list[Job[Payload]] = []
        rows = 0
        queue = self._queue
        while queue and (not batch or rows + queue[0].rows <= self.max_rows):
            job = queue.popleft()
            self._queued_rows -= job.rows
            if job.future.done():
                continue  # timed out or the client left: never reaches the model
            batch.append(job)
            rows += job.rows
        return batch

    def _run(self, batch: list[Job[Payload]]) -> None:
        """Run a batch; when it raises, retry its halves, so only the requests that fail get an error."""
        try:
            results = self.run_batch(batch)
        except Exception as exc:
            if len(batch) == 1:
                self._answer(batch, None, exc)
                return
            self.metrics.batch_splits.inc()
            middle = len(batch) // 2
            self._run(batch[:middle])
            self._run(batch[middle:])
            return
        self._answer(batch, results, None)

    def _answer(self, batch: list[Job[Payload]], results: Sequence[Any] | None, error: Exception | None) -> None:
        assert self._loop is not None
        # RuntimeError: the event loop is closed; the server is gone and nobody waits for these answers.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_deliver, batch, results, error)


def _deliver(batch: list[Job[Any]], results: Sequence[Any] | None, error: Exception | None) -> None:
    if error is not None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(error)
        return
    assert results is not None
    for job, result in zip(batch, results, strict=True):
        if not job.future.done():
            job.future.set_result(result)
