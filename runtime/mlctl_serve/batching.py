"""Dynamic batching: requests queue, one model thread runs them in batches.

A batch closes when it holds ``max_rows`` rows or when its first request has waited ``delay_s``;
with no delay, a batch is whatever queued while the model was busy (the lowest latency at low load,
large batches under load). The queue is bounded: when it is full, ``submit`` refuses at once, so an
overload costs a fast 503 instead of memory and latency.

Requests whose future is already done when their turn comes (timed out, client gone) are dropped
without touching the model.

A library could do this (LitServe, Ray Serve, BentoML all batch), but each is a whole server with its
own process model and per-request overhead several times ours; the loop below is the part we need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mlctl_serve.metrics import Metrics

Payload = TypeVar("Payload")


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` requests already."""


@dataclass
class Job(Generic[Payload]):
    payload: Payload
    rows: int
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


class Batcher(Generic[Payload]):
    """Collects jobs into batches and runs ``run_batch`` on them in ``executor`` (one thread)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Job[Payload]]], Sequence[Any]],
        *,
        max_rows: int,
        delay_s: float,
        max_queue: int,
        executor: Executor,
        metrics: Metrics,
    ) -> None:
        self.run_batch = run_batch
        self.max_rows = max_rows
        self.delay_s = delay_s
        self.max_queue = max_queue
        self.executor = executor
        self.metrics = metrics
        self._queue: collections.deque[Job[Payload]] = collections.deque()
        self._queued_rows = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()

    def submit(self, payload: Payload, rows: int) -> asyncio.Future[Any]:
        """Queue a job; its future resolves to the job's result. Raises QueueFull."""
        if len(self._queue) >= self.max_queue:
            raise QueueFull
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(Job(payload, rows, future))
        self._queued_rows += rows
        self.metrics.queue_depth.set(len(self._queue))
        self._wake.set()
        return future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.delay_s > 0:
                await self._fill(self._queue[0].enqueued + self.delay_s)
            batch = self._take()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, batch)
            except Exception as exc:  # the model failed: every job of the batch gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)

    async def _fill(self, deadline: float) -> None:
        """Wait for more rows until the batch is full or the deadline passes."""
        while self._queued_rows < self.max_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

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
        self.metrics.queue_depth.set(len(queue))
        return batch
