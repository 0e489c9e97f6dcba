"""The little of ASGI the server needs, written for speed: no framework between uvicorn and the model."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from mlctl_serve.protocol import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]

JSON = b"application/json"
CLOSE = (b"connection", b"close")
#: Bodies up to this size do not count against the buffered-bytes budget: uvicorn already holds up to
#: 64 KiB per connection before the app reads, so these are bounded by the connection limit instead.
SMALL_BODY_BYTES = 64 * 1024
#: What a client may send as X-Request-Id; anything else is replaced by an id of ours.
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class PayloadTooLarge(Exception):
    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(size)
        self.size = size
        self.limit = limit


class OverBudget(Exception):
    """Taking this body would pass the replica's budget of buffered request bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class ByteBudget:
    """The request-body bytes a replica holds at once (read, parsed or waiting for the model)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class Body:
    """A request body read under the limits, and the budget it holds until ``close``."""

    __slots__ = ("_budget", "data", "held")

    def __init__(self, data: bytes, budget: ByteBudget | None, held: int) -> None:
        self.data = data
        self._budget = budget
        self.held = held

    def close(self) -> None:
        if self._budget is not None and self.held:
            self._budget.give_back(self.held)
            self.held = 0


#: Request ids of ours: a random prefix per process and a counter (unique, and cheaper than a random id each).
_ID_PREFIX = os.urandom(5).hex()
_ids = itertools.count(1)


def new_request_id() -> bytes:
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFF:06x}".encode()


def client_request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"x-request-id" and _CLIENT_ID.fullmatch(value):
            return bytes(value)
    return None


def request_id(scope: Scope) -> bytes:
    """The client's X-Request-Id when it is a sane token, else one of ours; the same on every call.

    Made on demand (errors, streams): a request answered 200 never pays for it."""
    known: bytes | None = scope.get("mlctl.request_id")
    if known is None:
        known = scope["mlctl.request_id"] = client_request_id(scope["headers"]) or new_request_id()
    return known


def error_headers(scope: Scope) -> tuple[tuple[bytes, bytes]]:
    """The headers of an error answer: its X-Request-Id (made only when there is an error to trace)."""
    return ((b"x-request-id", request_id(scope)),)


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses such requests before they get here
    return None


async def read_body(scope: Scope, receive: Receive, limit: int, budget: ByteBudget | None = None) -> Body:
    """The whole request body, refusing more than ``limit`` bytes (declared or streamed).

    Bodies larger than SMALL_BODY_BYTES take their size from ``budget`` (the declared size up front,
    streamed bodies as they arrive) and raise OverBudget when it has no room; the caller gives it
    back with ``Body.close`` once the request is answered, or it is given back here on any error.
    """
    declared = declared_length(scope)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(declared, limit)
    held = 0
    if budget is not None and declared is not None and declared > SMALL_BODY_BYTES:
        if not budget.take(declared):
            raise OverBudget(budget.limit)
        held = declared
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(None, limit)
                if budget is not None and size > SMALL_BODY_BYTES and size > held:
                    if not budget.take(size - held):
                        raise OverBudget(budget.limit)
                    held = size
                chunks.append(chunk)
            if not message.get("more_body", False):
                return Body(chunks[0] if len(chunks) == 1 else b"".join(chunks), budget, held)
    except BaseException:
        if budget is not None and held:
            budget.give_back(held)
        raise


async def respond(send: Send, status: int, body: bytes, content_type: bytes = JSON, headers: Headers = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def respond_error(send: Send, status: int, message: str, headers: Headers = ()) -> None:
    await respond(send, status, error_body(message), JSON, headers)


#: A scope key our HTTP protocol (mlctl_serve.connection) sets: register a callback for a disconnect.
ON_DISCONNECT = "mlctl.on_disconnect"


def watch_disconnect(scope: Scope, receive: Receive, on_gone: Callable[[], None]) -> asyncio.Future[Message] | None:
    """Call ``on_gone`` if the client disconnects before it is answered.

    Under our protocol a callback is registered with the connection (cheap; it is dropped once the
    response completes). Under another ASGI server a task waits in ``receive()``, which returns only
    when the connection drops once the body has been read: cancel the returned task once answered.
    """
    register = scope.get(ON_DISCONNECT)
    if register is not None:
        register(on_gone)
        return None
    task = asyncio.ensure_future(receive())
    task.add_done_callback(lambda t: on_gone() if not t.cancelled() else None)
    return task
