"""``mlctl bench``: load-test a running service and report what it did under load.

Works against any Open Inference Protocol server (local or deployed): the request is built from the
model's own metadata, and the batch sizes the server saw come from its ``/metrics`` when it exports
mlctl-serve's ``mlserve_batch_size`` histogram.
"""

from __future__ import annotations

import json
import math
import random
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlctl.bench.loadgen import Samples, Target, run, run_load
from mlctl.errors import ClusterError, InputError
from mlctl.reporting import NullReporter, Reporter

MAX_DURATION_S = 3600.0
MAX_REQUESTS = 10_000_000
MAX_CONCURRENCY = 1024
_MODEL_IN_PATH = re.compile(r"/v2/models/([^/]+)")
_SAMPLE = re.compile(r'^mlserve_batch_size_(bucket|sum|count)(?:\{le="([^"]+)"\})?\s+(\S+)$')


@dataclass(frozen=True)
class Latency:
    """Latency percentiles of a load test, in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


@dataclass(frozen=True)
class BatchSizes:
    """Model calls the server made during the run, from its metrics."""

    batches: int
    rows: int
    mean_rows: float
    #: Batches per size bucket: "<=1", "<=2", ... (upper bound of the bucket).
    histogram: dict[str, int]


@dataclass(frozen=True)
class BenchResult:
    """What ``mlctl bench`` measured."""

    url: str
    model: str
    endpoint: str
    concurrency: int
    rate: float | None
    duration_s: float
    requests: int
    throughput_rps: float
    latency: Latency
    #: Answers by HTTP status; "error" counts connections that failed or timed out.
    statuses: dict[str, int]
    error_rate: float
    batch_sizes: BatchSizes | None


def run_bench(
    url: str,
    *,
    model: str | None = None,
    concurrency: int = 8,
    duration_s: float = 10.0,
    rate: float | None = None,
    max_requests: int = MAX_REQUESTS,
    rows: int = 1,
    body: bytes | None = None,
    max_tokens: int = 16,
    timeout_s: float = 30.0,
    reporter: Reporter | None = None,
    on_tick: Callable[[Samples], None] | None = None,
) -> BenchResult:
    """Load-test the model served at ``url``.

    Args:
        url: The server (``http://host:port``) or a model URL (``.../v2/models/NAME[/infer]``).
        model: The model name, when ``url`` does not say it.
        concurrency: Connections, each with one request in flight.
        duration_s: How long to send requests (at most an hour).
        rate: A ceiling on requests per second; None sends as fast as answers come.
        max_requests: Stop after this many requests.
        rows: Rows per infer request (the first dimension).
        body: A request body to send instead of one built from the model's metadata. With a body and a
            URL naming an endpoint (``http://host/predict``), that endpoint gets exactly that body, and
            the server need not speak the Open Inference Protocol.
        max_tokens: ``max_tokens`` of generate requests.
        timeout_s: A request without an answer by then counts as an error.
        reporter: Progress.
        on_tick: Called about twice a second with the samples so far (live views).

    Raises:
        InputError: bad limits, or no such model. ClusterError: the server cannot be reached.
    """
    reporter = reporter or NullReporter()
    _check_limits(concurrency, duration_s, rate, max_requests, rows)
    explicit = _explicit_endpoint(url) if body is not None else None
    if explicit is not None:
        # A body of one's own and an endpoint URL: send exactly that (any HTTP server, no metadata).
        base, endpoint = explicit
        generate = endpoint.endswith("/generate")
        found = _MODEL_IN_PATH.search(endpoint)
        model = model or (found.group(1) if found else "")
    else:
        base, model = _split(url, model)
        metadata = _get_json(f"{base}/v2/models/{model}", model, base)
        generate = [i.get("name") for i in metadata.get("inputs", [])] == ["text_input"]
        endpoint = f"/v2/models/{model}/{'generate' if generate else 'infer'}"
    if body is None:
        body = _generate_body(max_tokens) if generate else _infer_body(metadata, rows)
    before = _batch_metrics(base)
    reporter.step(
        f"{'generate' if generate else 'infer'} on {base}{endpoint}: {concurrency} connections, "
        f"{duration_s:g} s{f', at most {rate:g} requests/s' if rate else ''}"
    )
    samples = run(
        run_load(
            Target.from_url(base + endpoint, body),
            concurrency=concurrency,
            duration_s=duration_s,
            max_requests=max_requests,
            rate=rate,
            timeout_s=timeout_s,
            on_tick=on_tick,
        )
    )
    after = _batch_metrics(base)
    return summarize(
        samples,
        url=base,
        model=model,
        endpoint=endpoint,
        concurrency=concurrency,
        rate=rate,
        batch_sizes=_batch_delta(before, after),
    )


def summarize(samples: Samples, **fields: Any) -> BenchResult:
    """The result of a load test from its samples."""
    elapsed = max(samples.finished - samples.started, 1e-9)
    count = len(samples.latencies)
    statuses = Counter("error" if s == 0 else str(s) for s in samples.statuses)
    failed = sum(n for status, n in statuses.items() if status == "error" or int(status) >= 400)
    return BenchResult(
        duration_s=round(elapsed, 3),
        requests=count,
        throughput_rps=round(count / elapsed, 1),
        latency=latency_summary(samples.latencies),
        statuses=dict(sorted(statuses.items())),
        error_rate=round(failed / count, 4) if count else 0.0,
        **fields,
    )


def latency_summary(latencies: list[float]) -> Latency:
    """Percentiles, mean and maximum of latencies given in seconds."""
    if not latencies:
        return Latency(0.0, 0.0, 0.0, 0.0, 0.0)
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)] * 1000, 3)

    return Latency(
        pct(50), pct(90), pct(99), round(sum(ordered) / len(ordered) * 1000, 3), round(ordered[-1] * 1000, 3)
    )


def _check_limits(concurrency: int, duration_s: float, rate: float | None, max_requests: int, rows: int) -> None:
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InputError(f"--concurrency {concurrency}: must be from 1 to {MAX_CONCURRENCY}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise InputError(f"--duration {duration_s:g}: must be more than 0 and at most {MAX_DURATION_S:g} seconds")
    if rate is not None and rate <= 0:
        raise InputError(f"--rate {rate:g}: must be more than 0 requests/s")
    if not 1 <= max_requests <= MAX_REQUESTS:
        raise InputError(f"--requests {max_requests}: must be from 1 to {MAX_REQUESTS}")
    if rows < 1:
        raise InputError(f"--rows {rows}: must be at least 1")


def _explicit_endpoint(url: str) -> tuple[str, str] | None:
    """``(base, path)`` when ``url`` names an endpoint rather than a server or a model."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url!r} is not an http(s) URL, e.g. http://127.0.0.1:8080")
    path = parts.path.rstrip("/")
    if not path or re.fullmatch(r"/v2/models/[^/]+", path):
        return None
    return f"{parts.scheme}://{parts.netloc}", path + (f"?{parts.query}" if parts.query else "")


def _split(url: str, model: str | None) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url!r} is not an http(s) URL, e.g. http://127.0.0.1:8080")
    base = f"{parts.scheme}://{parts.netloc}"
    found = _MODEL_IN_PATH.search(parts.path)
    if found:
        model = model or found.group(1)
    if not model:
        raise InputError(
            f"which model at {base}? pass --model NAME or a URL like {base}/v2/models/NAME",
            hint="inside a service directory, mlctl bench uses the service's name",
        )
    return base, model


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _get_json(url: str, model: str, base: str) -> dict[str, Any]:
    try:
        status, body = _get(url)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClusterError(f"cannot reach {base}: {reason}", hint="is the service running? (mlctl run)") from None
    if status == 404:
        raise InputError(f"{base} serves no model {model!r} (GET {url} answered 404)")
    if status != 200:
        raise ClusterError(f"GET {url} answered {status}: {body[:200].decode(errors='replace')}")
    try:
        data = json.loads(body)
    except ValueError:
        raise ClusterError(f"GET {url} did not answer with JSON model metadata") from None
    return data if isinstance(data, dict) else {}


def _infer_body(metadata: dict[str, Any], rows: int) -> bytes:
    """One request with ``rows`` rows of random values for every input, from the model's metadata."""
    rng = random.Random(0)
    tensors = []
    for spec in metadata.get("inputs", []):
        shape = [rows if d == -1 else int(d) for d in spec.get("shape", [])]
        count = math.prod(shape)
        datatype = spec.get("datatype", "FP32")
        if datatype.startswith(("INT", "UINT")):
            data: list[Any] = [rng.randrange(0, 10) for _ in range(count)]
        elif datatype == "BOOL":
            data = [rng.random() < 0.5 for _ in range(count)]
        else:
            data = [round(rng.uniform(-1, 1), 4) for _ in range(count)]
        tensors.append({"name": spec["name"], "shape": shape, "datatype": datatype, "data": data})
    if not tensors:
        raise InputError("the model's metadata lists no inputs; pass --body FILE with a request")
    return json.dumps({"inputs": tensors}).encode()


def _generate_body(max_tokens: int) -> bytes:
    return json.dumps({"text_input": "The model ", "parameters": {"max_tokens": max_tokens}}).encode()


def _batch_metrics(base: str) -> dict[str, float] | None:
    try:
        status, body = _get(f"{base}/metrics")
    except (urllib.error.URLError, OSError):
        return None
    if status != 200:
        return None
    values: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines():
        found = _SAMPLE.match(line)
        if found:
            kind, le, value = found.groups()
            values[f"bucket:{le}" if kind == "bucket" else kind] = float(value)
    return values or None


def _batch_delta(before: dict[str, float] | None, after: dict[str, float] | None) -> BatchSizes | None:
    if before is None or after is None:
        return None
    batches = int(after.get("count", 0) - before.get("count", 0))
    rows = int(after.get("sum", 0) - before.get("sum", 0))
    histogram: dict[str, int] = {}
    below = 0
    buckets = sorted((k for k in after if k.startswith("bucket:")), key=lambda k: float(k[7:]))
    for key in buckets:
        cumulative = int(after[key] - before.get(key, 0))
        if cumulative - below:
            bound = key[7:]
            histogram["<=" + (bound.removesuffix(".0") if bound != "+Inf" else "inf")] = cumulative - below
        below = cumulative
    return BatchSizes(batches, rows, round(rows / batches, 2) if batches else 0.0, histogram)
