"""Prometheus metrics of one server, in a registry of its own, and the optional listener of their own
(``SERVING_METRICS_PORT``) so a NetworkPolicy can open them to the monitoring namespace alone."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "mlserve_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "mlserve_request_duration_seconds",
            "Time from request to response, by endpoint and status",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "mlserve_inference_duration_seconds",
            "Time the model spent on one batch (predict) or one generation (generate)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("mlserve_batch_size", "Rows per model call", buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("mlserve_queue_depth", "Requests waiting for the model", registry=r)
        self.inflight = Gauge("mlserve_inflight_requests", "Model requests being served", registry=r)
        self.rejected = Counter(
            "mlserve_rejected",
            "Requests refused or dropped before the model: queue_full, buffered_bytes, timeout, client_gone, shutdown",
            ["reason"],
            registry=r,
        )
        self.batch_splits = Counter(
            "mlserve_batch_splits",
            "Failed batches split in halves and retried, to find the requests that make the model fail",
            registry=r,
        )
        self.connections = Gauge("mlserve_open_connections", "Open client connections", registry=r)
        self.cut_off = Counter(
            "mlserve_connections_cut",
            "Connections closed by a client limit: header_timeout, body_timeout, idle, headers_too_large, "
            "too_many_connections, bad_http",
            ["reason"],
            registry=r,
        )
        self.ready = Gauge("mlserve_model_ready", "1 once the model is loaded and warmed up", registry=r)
        self.startup = Gauge(
            "mlserve_startup_seconds", "Seconds from process start to ready (imports, load, warm-up)", registry=r
        )
        self.tokens = Counter("mlserve_generated_tokens", "Tokens generated", registry=r)
        self.first_token = Histogram(
            "mlserve_time_to_first_token_seconds",
            "Time from request to first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # labels() takes a lock and builds keys on every call: each child is looked up once, then kept.
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._reasons: dict[str, Counter] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        children = self._children.get((endpoint, status))
        if children is None:
            code = str(status)
            children = self._children[endpoint, status] = (
                self.requests.labels(endpoint, code),
                self.latency.labels(endpoint, code),
            )
        children[0].inc()
        children[1].observe(seconds)

    def reject(self, reason: str) -> None:
        """Count a request refused or dropped before the model (``mlserve_rejected_total{reason}``)."""
        child = self._reasons.get(reason)
        if child is None:
            child = self._reasons[reason] = self.rejected.labels(reason)
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


#: The longest request head the metrics listener reads (a scrape is one short GET).
_METRICS_HEAD_LIMIT = 8192
_METRICS_TIMEOUT_S = 10.0


async def serve_metrics(metrics: Metrics, host: str, port: int, *, shared: bool = False) -> asyncio.AbstractServer:
    """Listen on ``host:port`` for ``GET /metrics`` (one request per connection, then close).

    ``shared``: several worker processes bind the port (SO_REUSEPORT), as they share the serving one;
    each scrape then sees one worker's metrics. Without it a port in use is an error, never shared.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _METRICS_TIMEOUT_S)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if path == b"/metrics" and method in (b"GET", b"HEAD"):
                status, content_type, body = b"200 OK", metrics.content_type.encode(), metrics.exposition()
            else:
                status, content_type, body = b"404 Not Found", b"application/json", b'{"error":"only /metrics here"}'
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-type: "
                + content_type
                + b"\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + (body if method != b"HEAD" else b"")
            )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=_METRICS_HEAD_LIMIT, reuse_port=shared or None)
