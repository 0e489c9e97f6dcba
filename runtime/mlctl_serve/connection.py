"""HTTP/1.1 connections with client limits: uvicorn's httptools protocol, plus the limits it lacks.

uvicorn (0.30 to 0.55) bounds neither the time a client may take to send its headers or body, nor
the number of connections, nor the size and count of header fields, and it says ``text/plain`` when
a request is not valid HTTP. This subclass of its protocol adds, per replica:

==========================  ==================================================================  =============
limit                       what happens                                                        answer
==========================  ==================================================================  =============
``header_timeout_s``        request line and headers not complete this long after their first   408, closed
                            byte
``body_timeout_s`` and      the body must arrive within ``body_timeout_s`` plus one second per  408, closed
``body_min_rate``           ``body_min_rate`` bytes received so far (a declared length larger
                            than the body sent ends here too)
``keepalive_timeout_s``     a connection with no request in progress (also a new one that       closed
                            sends nothing) is closed
``max_connections``         at the limit, the connection idle the longest is closed to make     503, closed
                            room; with none idle, the new connection is answered 503
``max_header_bytes``        request line plus header fields larger than this                    431, closed
``max_headers``             more header fields than this                                        431, closed
malformed HTTP              what the parser refuses                                             400, closed
==========================  ==================================================================  =============

Every answer here has a JSON body (``{"error": "..."}``). Body size (413), the buffered-bytes budget
and the queue (503) are enforced by the application, which sees the request. Not enforced here: the
time a client takes to *read* the response (a slow reader holds its connection until the request
timeout and TCP give up), and anything about HTTP/2 or WebSockets (neither is served).

The protocol relies on uvicorn's ``HttpToolsProtocol`` internals (parser callbacks, ``cycle``,
``timeout_keep_alive_task``); the runtime pins uvicorn to the versions its tests ran on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mlctl_serve.http import ON_DISCONNECT
from mlctl_serve.metrics import Metrics
from mlctl_serve.settings import Settings

log = logging.getLogger("mlctl_serve")

_IDLE, _HEAD, _BODY, _WAIT = range(4)
#: How long a connection refused for the connection limit is read (and discarded) after its 503, so
#: the client reads the answer instead of a reset.
_LINGER_S = 1.0
#: How long a connection is not read after a request on it was refused for capacity.
REFUSED_PAUSE_S = 0.1
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def raw_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, closing the connection."""
    body = orjson.dumps({"error": message})
    reason = _REASONS.get(status, b"Service Unavailable")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, reason, len(body))
        + body
    )


class ConnectionGuard:
    """The limits of one server, and the state its connections share (the idle ones, by age)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s
        self.body_min_rate = settings.body_min_rate
        self.keepalive_timeout_s = settings.keepalive_timeout_s
        self.max_connections = settings.max_connections
        self.max_header_bytes = settings.max_header_bytes
        self.max_headers = settings.max_headers
        self.metrics = metrics
        #: ``(method, target, scope) -> bytes | None``: the app's answer to a request it refuses on its
        #: head alone (a full queue), written before any task is made for it.
        self.fast_refusal: Callable[[bytes, bytes, Any], bytes | None] | None = None
        #: Connections with no request in progress, oldest first.
        self.idle: collections.OrderedDict[LimitedHttpProtocol, None] = collections.OrderedDict()

    def cut(self, reason: str) -> None:
        self.metrics.cut_off.labels(reason).inc()


def find_serving_app(app: Any) -> Any:
    """The ServingApp inside uvicorn's middleware wrappers (each keeps the next as ``.app``), or None."""
    from mlctl_serve.app import ServingApp

    for _ in range(8):
        if isinstance(app, ServingApp) or app is None:
            return app
        app = getattr(app, "app", None)
    return None


def guard_for(config: Config) -> ConnectionGuard:
    guard: ConnectionGuard | None = getattr(config, "_mlctl_guard", None)
    if guard is None:
        app = find_serving_app(config.loaded_app)
        if app is not None:
            guard = ConnectionGuard(app.settings, app.metrics)
            guard.fast_refusal = app.fast_refusal
        else:  # an app of someone else's behind our server: the default limits, metrics nobody reads
            guard = ConnectionGuard(Settings(), Metrics())
        config._mlctl_guard = guard  # type: ignore[attr-defined]
    return guard


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the client limits of the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard_for(config)
        self._phase = _IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._started = 0.0  # when the current head or body began (loop time)
        self._chunk = 0  # the size of the piece of data being parsed
        self._head_bytes = 0  # at least the bytes of the head received so far: bounds what the parser holds
        self._body_bytes = 0  # about the bytes of the body received so far
        self._closing = False
        self._refused = False
        self._discarding = False  # refused on its head: the body that follows is dropped
        #: Called if the connection drops before the current response completes (see watch_disconnect).
        self._on_lost: list[Callable[[], None]] = []

    # --- connection ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.metrics.connections.set(len(self.connections))
        if len(self.connections) > guard.max_connections:
            victim = next(iter(guard.idle), None)
            if victim is None:
                self._refuse_connection()
                return
            guard.idle.pop(victim)
            guard.cut("idle_evicted")
            victim._closing = True
            victim.transport.close()
        guard.idle[self] = None
        self.timeout_keep_alive_task = self.loop.call_later(guard.keepalive_timeout_s, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        self.guard.idle.pop(self, None)
        super().connection_lost(exc)
        self.guard.metrics.connections.set(len(self.connections))
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            callback()

    def _refuse_connection(self) -> None:
        self._refused = self._closing = True
        self.guard.cut("too_many_connections")
        self.transport.write(
            raw_response(503, f"the server has its limit of {self.guard.max_connections} connections; retry shortly")
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(_LINGER_S, self.transport.close)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.guard.cut("idle")
        super().timeout_keep_alive_handler()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # refused or cut off: what the client still sends is dropped
        self._unset_keepalive_if_required()
        size = self._chunk = len(data)
        phase = self._phase
        if phase == _IDLE:
            self.guard.idle.pop(self, None)
        elif phase == _HEAD:
            self._head_bytes += size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here (ws="none"): the request was served as plain HTTP
        except httptools.HttpParserError as exc:
            if not self._closing:
                self._cut(400, f"invalid HTTP request: {exc}", "bad_http")
            return
        phase = self._phase
        if phase >= _WAIT or phase == _IDLE or self._closing:
            return  # the common case: the whole request came in this piece
        if phase == _HEAD:
            if self._head_bytes > self.guard.max_header_bytes:
                self._cut(431, self._head_too_large(), "headers_too_large")
            elif self._timer is None:
                self._timer = self.loop.call_at(self._started + self.guard.header_timeout_s, self._head_timed_out)
        else:
            self._body_bytes += size  # counts this piece's head bytes too, if any: in the client's favour
            if self._timer is None:
                self._check_body()

    # --- parser callbacks (lean: they run for every request) -------------------------------------------

    def on_message_begin(self) -> None:
        if self._closing:
            return
        super().on_message_begin()
        self._phase = _HEAD
        self._started = self.loop.time()
        # An upper bound of the head's bytes so far: all of the piece it begins in.
        self._head_bytes = self._chunk

    def on_headers_complete(self) -> None:
        if self._closing:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        guard = self.guard
        headers = self.headers
        if len(headers) > guard.max_headers:
            self._cut(431, f"more than {guard.max_headers} header fields", "headers_too_large")
            return
        if self._head_bytes > guard.max_header_bytes:  # the bound is not enough: measure the head
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)
            if size > guard.max_header_bytes:
                self._cut(431, self._head_too_large(), "headers_too_large")
                return
        if guard.fast_refusal is not None and (self.cycle is None or self.cycle.response_complete):
            answer = guard.fast_refusal(self.parser.get_method(), self.url, self.scope)
            if answer is not None:
                self._refuse_request(answer)
                return
        super().on_headers_complete()
        # A cheaper way than a task blocked in receive() to learn that the client left.
        self.scope[ON_DISCONNECT] = self._on_lost.append  # type: ignore[literal-required]
        # BODY until the message completes (at once, in this same piece, for a request without one).
        self._phase = _BODY
        self._started = self.loop.time()
        self._body_bytes = 0

    def on_body(self, body: bytes) -> None:
        if not (self._closing or self._discarding):
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._discarding:
            self._discarding = False
            self._become_idle()
            return
        self._phase = _WAIT
        super().on_message_complete()
        if self.cycle.response_complete and not self.pipeline:
            # Answered before its body was all in (413, 503): idle now, so the keep-alive limit applies.
            self._become_idle()

    def on_response_complete(self) -> None:
        self._on_lost.clear()
        super().on_response_complete()
        if self._phase == _WAIT and not self.pipeline and not self.transport.is_closing():
            self._phase = _IDLE
            self.guard.idle[self] = None

    def send_400_response(self, msg: str) -> None:
        self._cut(400, msg, "bad_http")

    # --- limits --------------------------------------------------------------------------------------

    def _refuse_request(self, answer: bytes) -> None:
        """Answer a request on its head alone (the server is at capacity): no task, no app, no parsing.

        Its body, if any, is dropped as it arrives (under the body time limit); the connection stays
        open for the next request unless the client asked to close it."""
        self.transport.write(answer)
        if not self.parser.should_keep_alive():
            self._closing = True
            self.transport.close()
            return
        self._discarding = True
        self._phase = _BODY
        self._started = self.loop.time()
        self._body_bytes = 0
        # The client was told to retry after a second. One that retries at once on this connection is
        # read again only after a pause, so a storm of retries cannot keep the server busy refusing
        # them while the requests it took wait for the model.
        self.flow.pause_reading()
        self.loop.call_later(REFUSED_PAUSE_S, self._resume_after_refusal)

    def _resume_after_refusal(self) -> None:
        if not self._closing:
            self.flow.resume_reading()

    def _become_idle(self) -> None:
        self._phase = _IDLE
        self.guard.idle[self] = None
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.guard.keepalive_timeout_s, self.timeout_keep_alive_handler
        )

    def _head_too_large(self) -> str:
        return f"request line and headers exceed {self.guard.max_header_bytes} bytes"

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._phase == _HEAD and not self._closing:
            self._cut(408, f"request headers not complete within {self.guard.header_timeout_s:g} s", "header_timeout")

    def _check_body(self) -> None:
        """Cut the connection once the body is slower than the limit allows, else check again then."""
        self._timer = None
        if self._phase != _BODY or self._closing:
            return
        guard = self.guard
        allowed = guard.body_timeout_s + self._body_bytes / guard.body_min_rate
        if self.loop.time() - self._started >= allowed:
            self._cut(
                408,
                f"request body not complete in time (the limit: {guard.body_timeout_s:g} s plus 1 s per "
                f"{guard.body_min_rate} bytes received)",
                "body_timeout",
            )
            return
        self._timer = self.loop.call_at(self._started + allowed, self._check_body)

    def _cut(self, status: int, message: str, reason: str) -> None:
        """Answer ``status`` (when no other answer is under way) and close the connection."""
        self._closing = True
        self._cancel_timer()
        self.guard.idle.pop(self, None)
        self.guard.cut(reason)
        cycle = self.cycle
        if self._phase == _HEAD or self._phase == _IDLE:
            # The request being cut has no cycle yet; an earlier pipelined one may still be answering.
            answer = cycle is None or cycle.response_complete
        else:
            answer = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() says http.disconnect, its send() is dropped
            cycle.message_event.set()
        if answer:
            self.transport.write(raw_response(status, message))
        self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every mlctl server runs with: our protocol and its limits."""
    return {
        "http": LimitedHttpProtocol,
        "ws": "none",
        "timeout_keep_alive": settings.keepalive_timeout_s,
        # A float: 0 answers what is still running at once, 0.5 waits half a second (never "forever").
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "backlog": 2048,
        "lifespan": "on",
    }
