"""The local target's front: a small HTTP/1.1 proxy that lets a new server take over without a failed request.

``mlctl deploy --target local`` runs this file, by itself, inside a container of the service image
(``python -c``; it needs nothing but Python's standard library), publishing the service's port. It
forwards each request to the server named in a file (``BACKEND_FILE``), read again for every request,
on a connection of its own. A redeploy starts the new server beside the old one, waits until it is
ready, writes its address into the file, and only then stops the old server, which finishes what it
has in flight (its graceful shutdown) while every new request already goes to the new one: what a
Service's endpoints and a pod's preStop delay do in a cluster. Clients keep their connections to the
proxy, which never restarts, so no client sees a connection closed or refused.

Requests are forwarded whole and in order per client connection (no pipelining across backends);
bodies may be framed by Content-Length or chunked in both directions, and streaming responses
(server-sent events) pass through as they come. A backend that refuses the connection is tried again,
with the file read again, for a few seconds; then the client gets a 502.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Protocol

#: Where the current backend (``host:port``) is written; the proxy reads it again for each request.
BACKEND_FILE = "/tmp/mlctl-backend"
MAX_HEAD = 64 * 1024
#: How long a request waits for a backend that refuses connections (a server being replaced).
CONNECT_PATIENCE_S = 10.0
#: Hop-by-hop headers (RFC 9110 7.6.1): the proxy's own business on each side, never forwarded.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"expect"}

BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\nno server is ready\r\n"
)

_backend: tuple[float, str] = (0.0, "")


def backend() -> str:
    """The current backend, from ``BACKEND_FILE`` (cached while the file is unchanged)."""
    global _backend
    try:
        changed = os.stat(BACKEND_FILE).st_mtime_ns
    except OSError:
        return _backend[1]
    if changed != _backend[0]:
        with open(BACKEND_FILE) as handle:
            _backend = (changed, handle.read().strip())
    return _backend[1]


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The first line and the header fields of a request or response head."""
    lines = head.split(b"\r\n")
    fields = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        fields.append((name.strip(), value.strip()))
    return lines[0], fields


def field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of a header field (``name`` in lower case), or None."""
    for key, value in fields:
        if key.lower() == name:
            return value
    return None


def tokens(value: bytes | None) -> set[bytes]:
    """A comma-separated field value as lower-case tokens (``Connection: keep-alive, Upgrade``)."""
    return {token.strip().lower() for token in (value or b"").split(b",") if token.strip()}


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """A head up to its blank line; None at a clean end of stream (the client is done)."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("head too large") from None


class Sink(Protocol):
    """Where a body goes: a stream writer, or nowhere (``Discard``)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


async def copy_body(reader: asyncio.StreamReader, writer: Sink, fields: list[tuple[bytes, bytes]]) -> bool:
    """Copy a message body framed as ``fields`` say; False when it is delimited by the end of the stream."""
    if b"chunked" in tokens(field(fields, b"transfer-encoding")):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers, up to the blank line
                    line = await reader.readuntil(b"\r\n")
                    writer.write(line)
                    if line == b"\r\n":
                        await writer.drain()
                        return True
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    length = field(fields, b"content-length")
    if length is not None:
        remaining = int(length)
        while remaining:
            chunk = await reader.read(min(remaining, 65536))
            if not chunk:
                raise ConnectionError("the body ended early")
            writer.write(chunk)
            remaining -= len(chunk)
            await writer.drain()
        return True
    return False


def forwarded(first: bytes, fields: list[tuple[bytes, bytes]], connection: bytes) -> bytes:
    """A head without hop-by-hop fields (and those its Connection field names), with our own Connection."""
    named = tokens(field(fields, b"connection"))
    kept = [(k, v) for k, v in fields if k.lower() not in HOP_BY_HOP and k.lower() not in named]
    lines = [first, *(k + b": " + v for k, v in kept), b"Connection: " + connection, b"", b""]
    return b"\r\n".join(lines)


async def open_backend() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the current backend; a refusal (a server stopping) is retried, the file read again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_PATIENCE_S
    while True:
        host, _, port = backend().rpartition(":")
        try:
            return await asyncio.open_connection(host, int(port))
        except (OSError, ValueError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def exchange(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter], first: bytes, fields: list[tuple[bytes, bytes]]
) -> bool:
    """Forward one request and its response; whether the client connection may carry another."""
    reader, writer = client
    version = first.rsplit(b" ", 1)[-1]
    asked = tokens(field(fields, b"connection"))
    keep = b"close" not in asked and (version == b"HTTP/1.1" or b"keep-alive" in asked)
    method = first.split(b" ", 1)[0].upper()
    if b"100-continue" in tokens(field(fields, b"expect")):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        up_reader, up_writer = await open_backend()
    except (OSError, ValueError):
        await copy_body(reader, Discard(), fields)
        writer.write(BAD_GATEWAY)
        await writer.drain()
        return keep
    try:
        up_writer.write(forwarded(first, fields, b"close"))
        await copy_body(reader, up_writer, fields)
        head = await read_head(up_reader)
        while head is not None and head[9:10] == b"1":
            head = await read_head(up_reader)  # interim 1xx answers: the client got its own 100
        if head is None:
            raise ConnectionError("the server closed the connection without an answer")
        status_line, answer = parse_head(head)
        status = int(status_line.split(b" ")[1])
        bodiless = method == b"HEAD" or status in (204, 304)
        framed = (
            bodiless
            or b"chunked" in tokens(field(answer, b"transfer-encoding"))
            or (field(answer, b"content-length") is not None)
        )
        keep = keep and framed
        writer.write(forwarded(status_line, answer, b"keep-alive" if keep else b"close"))
        if not bodiless and not await copy_body(up_reader, writer, answer):
            while chunk := await up_reader.read(65536):  # delimited by the end of the stream
                writer.write(chunk)
                await writer.drain()
        await writer.drain()
        return keep
    finally:
        up_writer.close()


class Discard:
    """A writer that drops what it is given (the body of a request no backend will read)."""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


async def serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One client connection: its requests, one after another, each to the backend current when it came."""
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                break
            first, fields = parse_head(head)
            if not await exchange((reader, writer), first, fields):
                break
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass  # the client or the server went away mid-message: nothing more to do for this connection
    finally:
        writer.close()


async def main(port: int, first_backend: str) -> None:
    """Serve ``port`` on every interface, forwarding to ``first_backend`` until the file names another."""
    if not os.path.exists(BACKEND_FILE):
        with open(BACKEND_FILE, "w") as handle:
            handle.write(first_backend)
    server = await asyncio.start_server(
        serve_client, "0.0.0.0", port, limit=MAX_HEAD
    )  # every interface of its container
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
