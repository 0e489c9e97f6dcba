"""Prometheus metrics of one server, in a registry of its own."""

from __future__ import annotations

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
            "Requests refused before the model: queue full, timeout, client gone",
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

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(endpoint, code).inc()
        self.latency.labels(endpoint, code).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
