"""The local target's front proxy (mlctl/deploy/local_proxy.py) against real HTTP servers on loopback.

It is what lets ``mlctl deploy --target local`` replace a server without a failed request: clients keep
their connections to it, and each request goes to the server named in its backend file at that moment.
test_local.py runs it in a container in front of the real service image, under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port

from mlctl.deploy import local_proxy


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/stream":  # chunked, as server-sent events are
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for word in (b"data: one\n\n", b"data: two\n\n"):
                self.wfile.write(f"{len(word):x}\r\n".encode() + word + b"\r\n")
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
            return
        self.answer(json.dumps({"server": self.server.name, "path": self.path}).encode())  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = {"server": self.server.name, "echo": body.decode(), "connection": self.headers["Connection"]}  # type: ignore[attr-defined]
        self.answer(json.dumps(reply).encode())


def stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def backend(name: str) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Path]]:
    """The proxy on a free port in a thread of its own, its backend file in the test's directory."""
    monkeypatch.setattr(local_proxy, "BACKEND_FILE", str(tmp_path / "backend"))
    monkeypatch.setattr(local_proxy, "CONNECT_PATIENCE_S", 1.0)
    port = free_port()
    first, address = backend("first")
    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()

    async def run() -> None:
        serving = asyncio.create_task(local_proxy.main(port, address))
        await stopping.wait()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        # Connections still open end with the loop, as a stopping container's do.
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            break
        except OSError:
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.02)
    yield port, tmp_path / "backend"
    for client in CLIENTS:
        client.close()
    CLIENTS.clear()
    loop.call_soon_threadsafe(stopping.set)
    thread.join(5)
    loop.run_until_complete(asyncio.sleep(0))  # let the cancelled handlers finish
    loop.close()
    stop(first)


CLIENTS: list[http.client.HTTPConnection] = []


def connect(port: int) -> http.client.HTTPConnection:
    """A client connection to the proxy, closed when the test ends."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    CLIENTS.append(client)
    return client


def get(connection: http.client.HTTPConnection, path: str = "/") -> dict[str, str]:
    connection.request("GET", path)
    reply = connection.getresponse()
    assert reply.status == 200
    data: dict[str, str] = json.loads(reply.read())
    return data


def test_a_client_keeps_its_connection_while_the_backend_changes(proxy: tuple[int, Path]) -> None:
    port, backend_file = proxy
    client = connect(port)
    assert get(client, "/v2/health/ready") == {"server": "first", "path": "/v2/health/ready"}
    client.request("POST", "/v2/models/m/infer", body=b'{"inputs": []}', headers={"Content-Type": "application/json"})
    posted = json.loads(client.getresponse().read())
    # The body arrives whole, and each forwarded request has its own connection to the server.
    assert posted == {"server": "first", "echo": '{"inputs": []}', "connection": "close"}
    second, address = backend("second")
    try:
        backend_file.write_text(address)
        assert get(client)["server"] == "second"  # the same client connection, the next request: the new server
        assert client.sock is not None  # never closed on the client
    finally:
        stop(second)


def test_streams_pass_through_as_they_come(proxy: tuple[int, Path]) -> None:
    port, _ = proxy
    client = connect(port)
    client.request("GET", "/stream")
    reply = client.getresponse()
    assert reply.getheader("Transfer-Encoding") == "chunked"
    assert reply.read() == b"data: one\n\ndata: two\n\n"
    assert get(client)["server"] == "first"  # the connection carries on after a chunked answer


def test_a_refusing_backend_is_tried_again_then_answered_with_502(proxy: tuple[int, Path]) -> None:
    port, backend_file = proxy
    closed = free_port()
    backend_file.write_text(f"127.0.0.1:{closed}")  # a server that is gone (stopped, or not started yet)
    client = connect(port)
    started = time.monotonic()
    client.request("GET", "/")
    reply = client.getresponse()
    assert (reply.status, reply.read()) == (502, b"no server is ready\r\n")
    assert time.monotonic() - started >= 0.9  # it waited CONNECT_PATIENCE_S for one to come back

    # A server that comes back while a request waits gets it.
    third, address = backend("third")
    try:
        timer = threading.Timer(0.3, lambda: backend_file.write_text(address))
        timer.start()
        assert get(client)["server"] == "third"
    finally:
        stop(third)
