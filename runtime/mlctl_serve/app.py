"""What every mlctl server shares: routing, health, metadata, metrics, loading and shutdown.

The process answers ``/v2/health/live`` at once; the model loads and warms up in the background on
the model thread, and ``/v2/health/ready`` turns 200 only after that. If loading fails the process
exits (status 3) so the orchestrator restarts it and its log says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mlctl_serve import __version__
from mlctl_serve.http import (
    CLOSE,
    Body,
    ByteBudget,
    ClientGone,
    OverBudget,
    PayloadTooLarge,
    Receive,
    Scope,
    Send,
    client_request_id,
    error_headers,
    new_request_id,
    read_body,
    respond,
    respond_error,
)
from mlctl_serve.metrics import Metrics, serve_metrics
from mlctl_serve.parsing import OFFLOAD_BYTES
from mlctl_serve.protocol import ProtocolError, error_body
from mlctl_serve.settings import Settings, resolve_torch_threads

if TYPE_CHECKING:
    import torch

log = logging.getLogger("mlctl_serve")
_IMPORTED = time.monotonic()

#: A model route: receives the request and returns the status it answered with (499: client gone).
Handler = Callable[[Scope, Receive, Send], Awaitable[int]]
NOT_READY_HEADERS = ((b"retry-after", b"1"),)
SHUTTING_DOWN = "the server stopped before this request was answered; retry"
#: Set in a request's scope by ``fast_refusal`` when it admitted the request (holds a place for it).
ADMITTED = "mlctl.admitted"
T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    handler: Handler


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc), so start-up time includes imports."""
    try:
        with open("/proc/self/stat") as stat:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
        return max(0.0, now - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU."""
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"SERVING_DEVICE={preference} but CUDA is not available here")
    return torch.device(preference)


def exit_process() -> None:
    """The default reaction to a model that cannot load: exit 3, after the log is flushed."""
    logging.shutdown()
    os._exit(3)


class ServingApp:
    """An ASGI application serving one model. Subclasses add the model's routes and loading."""

    def __init__(self, settings: Settings, *, on_load_failure: Callable[[], None] = exit_process) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.on_load_failure = on_load_failure
        self.ready = False
        self.startup_seconds: float | None = None
        self.device_type = "cpu"
        #: The model thread: loading, compiling, warm-up and every model call happen here (CUDA graphs
        #: and compiled code are bound to the thread that made them).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        #: Request bodies held at once (see http.read_body).
        self.budget = ByteBudget(settings.max_buffered_bytes)
        self._load_task: asyncio.Task[None] | None = None
        self._metrics_server: asyncio.AbstractServer | None = None
        self._refusal_bodies: dict[str, bytes] = {}
        self._routes: dict[str, tuple[str, Route]] = {
            "/v2/health/live": ("/v2/health/live", Route(("GET",), self._live)),
            "/v2/health/ready": ("/v2/health/ready", Route(("GET",), self._ready)),
            "/v2": ("/v2", Route(("GET",), self._server_metadata)),
            "/metrics": ("/metrics", Route(("GET",), self._prometheus)),
        }
        self._model_routes: dict[str, Route] = {
            "": Route(("GET",), self._model_metadata),
            "ready": Route(("GET",), self._model_ready),
        }

    # --- for subclasses -------------------------------------------------------------------------------

    def add_model_route(self, action: str, methods: tuple[str, ...], handler: Handler) -> None:
        self._model_routes[action] = Route(methods, handler)

    def load(self) -> None:
        """Load and warm up the model (runs on the model thread)."""
        raise NotImplementedError

    def metadata(self) -> bytes:
        raise NotImplementedError

    async def on_startup(self) -> None:
        """Runs on the event loop when the server starts, before the model loads."""

    def on_loaded(self) -> None:
        """Runs on the event loop once the model has loaded and warmed up, just before it reports ready."""

    async def on_shutdown(self) -> None:
        """Runs after uvicorn has drained the connections."""

    def not_ready(self) -> bool:
        return not self.ready

    def fast_refusal(self, method: bytes, target: bytes, scope: Scope) -> bytes | None:
        """A whole HTTP response for a request refused on its head alone, or None to serve it.

        Called by our HTTP protocol before it makes a task for the request: under a storm of requests
        beyond the queue, a refusal then costs the event loop a few microseconds instead of a request's
        worth of work, and the model keeps its share of the CPU. Subclasses refuse when full; a request
        let through holds its place (``scope[ADMITTED]``), since its task runs only later in the turn.
        """
        return None

    def refusal_bytes(self, message: str, scope: Scope, endpoint: str) -> bytes:
        """A raw 503 (Retry-After: 1) for ``fast_refusal``, counted like the app's own refusals."""
        self.metrics.reject("queue_full")
        self.metrics.observe(endpoint, 503, 0.0)
        rid = client_request_id(scope["headers"]) or new_request_id()
        body = self._refusal_bodies.get(message)
        if body is None:
            body = self._refusal_bodies[message] = error_body(message)
        return (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"retry-after: 1\r\nx-request-id: %s\r\n\r\n" % (len(body), rid)
        ) + body

    def model_targets(self, action: str) -> frozenset[bytes]:
        """The request targets of a model route, as clients send them (with and without the version)."""
        name, version = self.settings.model_name, self.settings.model_version
        return frozenset(
            {f"/v2/models/{name}/{action}".encode(), f"/v2/models/{name}/versions/{version}/{action}".encode()}
        )

    # --- ASGI ------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = "other"
        try:
            if path.startswith("/v2/models/"):
                endpoint, status = await self._model_request(path, method, scope, receive, send)
            else:
                found = self._routes.get(path)
                if found is None:
                    status = 404
                    await respond_error(send, 404, f"{method} {path}: not found")
                else:
                    endpoint, route = found
                    status = await self._call(route, method, path, scope, receive, send)
        except Exception as exc:
            status = await self.answer_server_error(send, scope, f"unexpected error on {method} {path}", exc)
        self.metrics.observe(endpoint, status, time.perf_counter() - started)

    async def _model_request(
        self, path: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> tuple[str, int]:
        parts = path[len("/v2/models/") :].split("/")
        name, tail = parts[0], parts[1:]
        version = None
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
        action = "/".join(tail)
        route = self._model_routes.get(action)
        if route is None:
            await respond_error(send, 404, f"{method} {path}: not found")
            return "other", 404
        endpoint = "/v2/models/{name}" + (f"/{action}" if action else "")
        if name != self.settings.model_name or (version is not None and version != self.settings.model_version):
            await respond_error(
                send,
                404,
                f"model {name!r}{f' version {version!r}' if version else ''} not found; "
                f"this server serves {self.settings.model_name!r} version {self.settings.model_version!r}",
            )
            return endpoint, 404
        return endpoint, await self._call(route, method, path, scope, receive, send)

    async def _call(self, route: Route, method: str, path: str, scope: Scope, receive: Receive, send: Send) -> int:
        if method not in route.methods:
            allow = ", ".join(route.methods).encode()
            await respond_error(send, 405, f"{method} {path}: method not allowed", ((b"allow", allow),))
            return 405
        return await route.handler(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.settings.metrics_port:
                        self._metrics_server = await serve_metrics(
                            self.metrics,
                            self.settings.host,
                            self.settings.metrics_port,
                            shared=self.settings.workers > 1,
                        )
                    await self.on_startup()
                    loop = asyncio.get_running_loop()
                    self._load_task = loop.create_task(self._load_in_background())
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._load_task is not None:
                    self._load_task.cancel()
                await self.on_shutdown()
                if self._metrics_server is not None:
                    self._metrics_server.close()
                self.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _load_in_background(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            started = await loop.run_in_executor(self.executor, self._load_and_time)
        except Exception:
            log.exception("model %s failed to load; exiting", self.settings.model_name)
            self.on_load_failure()
            return
        self.on_loaded()
        self.startup_seconds = process_age()
        self.metrics.startup.set(self.startup_seconds)
        self.metrics.ready.set(1)
        self.ready = True
        log.info(
            "model %s ready on %s: %.2f s since process start (load and warm-up %.2f s)",
            self.settings.model_name,
            self.device_type,
            self.startup_seconds,
            time.monotonic() - started,
        )

    def _load_and_time(self) -> float:
        """Load on the model thread; returns when loading started (monotonic seconds)."""
        import torch

        started = time.monotonic()
        threads = resolve_torch_threads(self.settings.torch_threads)
        torch.set_num_threads(threads)
        log.info("torch uses %d intra-op thread(s) (SERVING_TORCH_THREADS=%s)", threads, self.settings.torch_threads)
        self.load()
        return started

    # --- shared routes -------------------------------------------------------------------------------

    async def _live(self, scope: Scope, receive: Receive, send: Send) -> int:
        await respond(send, 200, b'{"live":true}')
        return 200

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> int:
        if self.ready:
            await respond(send, 200, b'{"ready":true}')
            return 200
        await respond(send, 503, b'{"ready":false}', headers=NOT_READY_HEADERS)
        return 503

    async def _server_metadata(self, scope: Scope, receive: Receive, send: Send) -> int:
        import orjson

        body = orjson.dumps({"name": "mlctl-serve", "version": __version__, "extensions": self.extensions()})
        await respond(send, 200, body)
        return 200

    def extensions(self) -> list[str]:
        return []

    async def _model_metadata(self, scope: Scope, receive: Receive, send: Send) -> int:
        await respond(send, 200, self.metadata())
        return 200

    async def _model_ready(self, scope: Scope, receive: Receive, send: Send) -> int:
        name = self.settings.model_name.encode()
        if self.ready:
            await respond(send, 200, b'{"name":"' + name + b'","ready":true}')
            return 200
        await respond(send, 503, b'{"name":"' + name + b'","ready":false}', headers=NOT_READY_HEADERS)
        return 503

    async def _prometheus(self, scope: Scope, receive: Receive, send: Send) -> int:
        if self.settings.metrics_port:
            await respond_error(send, 404, f"/metrics is served on port {self.settings.metrics_port}")
            return 404
        await respond(send, 200, self.metrics.exposition(), self.metrics.content_type.encode())
        return 200

    async def read_request(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        parse: Callable[[bytes], T],
        offload: Callable[[bytes], Awaitable[T]] | None = None,
    ) -> tuple[T, Body] | int:
        """Read and ``parse`` the body; on a bad request, answer it and return the status instead.

        Bodies over OFFLOAD_BYTES go to ``offload`` when given (a parser off the event loop). The
        caller owns the returned Body and closes it once the request is answered (it holds its share
        of the buffered-bytes budget until then).
        """
        try:
            body = await read_body(scope, receive, self.settings.max_payload_bytes, self.budget)
        except PayloadTooLarge as exc:
            size = f"of {exc.size} bytes " if exc.size is not None else ""
            # Closing the connection spares reading (and discarding) the rest of a body we refused.
            message = f"request body {size}exceeds the limit of {exc.limit} bytes"
            await respond_error(send, 413, message, (*error_headers(scope), CLOSE))
            return 413
        except OverBudget as exc:
            self.metrics.reject("buffered_bytes")
            await respond_error(
                send,
                503,
                f"the server holds its limit of request bodies ({exc.limit} bytes); retry shortly",
                (*error_headers(scope), *NOT_READY_HEADERS, CLOSE),
            )
            return 503
        except ClientGone:
            return 499
        try:
            if offload is not None and len(body.data) > OFFLOAD_BYTES:
                return await offload(body.data), body
            return parse(body.data), body
        except ProtocolError as exc:
            body.close()
            await respond_error(send, exc.status, exc.message, error_headers(scope))
            return exc.status
        except BaseException:
            body.close()
            raise

    async def refuse_not_ready(self, send: Send, scope: Scope) -> int:
        message = f"model {self.settings.model_name!r} is not ready yet"
        await respond_error(send, 503, message, (*error_headers(scope), *NOT_READY_HEADERS))
        return 503

    async def refuse_at_capacity(self, send: Send, message: str, scope: Scope) -> int:
        self.metrics.reject("queue_full")
        await respond_error(send, 503, message, (*error_headers(scope), *NOT_READY_HEADERS))
        return 503

    async def answer_shutdown(self, send: Send, scope: Scope) -> int:
        """The answer to a request still waiting when the graceful-shutdown time is spent."""
        headers = error_headers(scope)
        rid = headers[0][1].decode()
        log.warning("request %s: still waiting when the shutdown grace ended; answered 503", rid)
        self.metrics.reject("shutdown")
        await respond_error(send, 503, SHUTTING_DOWN, (*headers, *NOT_READY_HEADERS, CLOSE))
        return 503

    async def answer_server_error(self, send: Send, scope: Scope, what: str, exc: BaseException) -> int:
        """A generic 500: the details go to the log under the request id, never to the client."""
        headers = error_headers(scope)
        rid = headers[0][1].decode()
        log.error("request %s: %s", rid, what, exc_info=exc)
        await respond_error(send, 500, f"internal server error (request id {rid})", headers)
        return 500


def warn_compile_fallback(exc: BaseException) -> None:
    log.warning(
        "torch.compile failed (%s: %s); serving the eager model",
        type(exc).__name__,
        str(exc).strip().splitlines()[0] if str(exc).strip() else "",
    )


def compile_module(module: Any, mode: str) -> Any:
    import torch

    return torch.compile(module, mode=mode)
