"""The little of ASGI the server needs, written for speed: no framework between uvicorn and the model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from mlctl_serve.protocol import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]

JSON = b"application/json"


class PayloadTooLarge(Exception):
    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(size)
        self.size = size
        self.limit = limit


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes (declared or streamed)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = 0
            if declared > limit:
                raise PayloadTooLarge(declared, limit)
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(None, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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


def watch_disconnect(receive: Receive, on_gone: Callable[[], None]) -> asyncio.Future[Message]:
    """Call ``on_gone`` if the client disconnects; cancel the returned task once answered.

    Only valid after the body has been read: uvicorn's next ``receive()`` then returns only when the
    connection drops (or the response completes).
    """
    task = asyncio.ensure_future(receive())
    task.add_done_callback(lambda t: on_gone() if not t.cancelled() else None)
    return task
