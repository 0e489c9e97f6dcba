"""Test helpers for services: a real server in a thread, and a small HTTP client.

    with LiveServer(app) as server:
        server.wait_ready()
        status, body = server.post_json("/v2/models/m/infer", {...})

The server is real uvicorn on a free loopback port, so tests see exactly what clients see (status
codes, headers, 413 on big bodies), with no extra test dependency.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from types import TracebackType
from typing import Any


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class LiveServer:
    """Run an ASGI app with uvicorn in a background thread on 127.0.0.1 (a free port)."""

    def __init__(self, app: Any, *, log_level: str = "warning") -> None:
        import uvicorn

        from mlctl_serve.connection import find_serving_app, uvicorn_options
        from mlctl_serve.settings import Settings

        served = find_serving_app(app)
        options = uvicorn_options(served.settings if served is not None else Settings())
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level=log_level, **options)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            reply = connection.getresponse()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            connection.close()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post_json(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.get("/v2/health/ready").status != 200:
            if time.monotonic() > deadline:
                raise AssertionError("the model did not become ready")
            time.sleep(0.02)
