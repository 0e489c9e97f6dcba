"""A small, fast HTTP/1.1 load generator on asyncio.

A small, fast HTTP/1.1 load generator on asyncio: keep-alive connections, one request at a time
each, latencies recorded per request. No HTTP library: the client must cost less than the servers it
measures (a Python HTTP client library would be the bottleneck at a few thousand requests/s).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


@dataclass
class Target:
    """Where the load goes: host, port, path and the request body."""

    host: str
    port: int
    tls: bool
    path: str
    body: bytes
    method: str = "POST"

    @classmethod
    def from_url(cls, url: str, body: bytes, method: str = "POST") -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname or "127.0.0.1", port, tls, path, body, method)

    def request_bytes(self) -> bytes:
        head = (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        return head.encode() + self.body


@dataclass
class Samples:
    """What the load produced: one latency and one status per request (status 0: connection error)."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


class _Connection:
    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        context = ssl.create_default_context() if self.target.tls else None
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.target.host, self.target.port, ssl=context), self.timeout
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> int:
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status


async def run_load(
    target: Target,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    rate: float | None = None,
    timeout_s: float = 30.0,
    on_tick: Callable[[Samples], None] | None = None,
    tick_s: float = 0.5,
) -> Samples:
    """Drive ``target`` with ``concurrency`` connections for ``duration_s`` or ``max_requests`` requests.

    With ``rate`` (requests/s), each connection paces itself to ``rate / concurrency`` and the rate is a
    ceiling, never exceeded; without it, each connection sends its next request as soon as it has an answer.
    """
    samples = Samples()
    request = target.request_bytes()
    issued = 0
    samples.started = time.perf_counter()
    deadline = samples.started + duration_s
    interval = concurrency / rate if rate else 0.0

    async def worker(index: int) -> None:
        nonlocal issued
        connection = _Connection(target, timeout_s)
        next_at = samples.started + (interval * index / concurrency if interval else 0.0)
        try:
            while True:
                now = time.perf_counter()
                if now >= deadline or issued >= max_requests:
                    return
                if interval:
                    if next_at > now:
                        await asyncio.sleep(min(next_at - now, deadline - now))
                        if time.perf_counter() >= deadline:
                            return
                    next_at += interval
                issued += 1
                started = time.perf_counter()
                try:
                    status = await asyncio.wait_for(connection.exchange(request), timeout_s)
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    asyncio.TimeoutError,
                    ValueError,
                ):
                    connection.close()
                    status = 0
                samples.latencies.append(time.perf_counter() - started)
                samples.statuses.append(status)
        finally:
            connection.close()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(tick_s)
            if on_tick is not None:
                on_tick(samples)

    tick = asyncio.ensure_future(ticker()) if on_tick else None
    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        if tick is not None:
            tick.cancel()
    samples.finished = time.perf_counter()
    return samples


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run with uvloop when it is installed (it roughly doubles what one core can send)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
