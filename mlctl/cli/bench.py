"""``mlctl bench``: load-test a running service."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlctl.cli.options import JsonOption, positive_number, seconds, timeout_option, whole_number
from mlctl.cli.output import State, print_table, state_of
from mlctl.errors import InputError, ThresholdError

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.bench.loadgen import Samples
    from mlctl.bench.loadtest import BenchResult


def bench_cmd(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="The server, e.g. http://127.0.0.1:8080, or a model URL.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", metavar="NAME", help="Model name.  [default: from the URL, else this service's name]"
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            metavar="N",
            parser=whole_number("--concurrency", 1),
            help="Connections, one request in flight each.",
        ),
    ] = 8,
    duration: Annotated[
        float,
        typer.Option(
            "--duration",
            "-d",
            metavar="SECONDS",
            parser=seconds("--duration"),
            help="Seconds to send requests (at most 3600).",
        ),
    ] = 10.0,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            "-r",
            metavar="PER_SECOND",
            parser=positive_number("--rate"),
            help="At most this many requests/s.  [default: as fast as answered]",
        ),
    ] = None,
    requests: Annotated[
        int,
        typer.Option(
            "--requests", "-n", metavar="N", parser=whole_number("--requests", 1), help="Stop after this many requests."
        ),
    ] = 10_000_000,
    rows: Annotated[
        int, typer.Option("--rows", metavar="N", parser=whole_number("--rows", 1), help="Rows per infer request.")
    ] = 1,
    max_tokens: Annotated[
        int,
        typer.Option(
            "--max-tokens", metavar="N", parser=whole_number("--max-tokens", 1), help="max_tokens of generate requests."
        ),
    ] = 16,
    body: Annotated[
        Path | None, typer.Option("--body", metavar="FILE", help="Send this request body instead of a generated one.")
    ] = None,
    timeout: Annotated[float, timeout_option("Seconds before a request counts as an error.")] = 30.0,
    max_error_rate: Annotated[
        float | None,
        typer.Option("--max-error-rate", metavar="FRACTION", help="Exit 1 when more requests than this fail (CI)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Load-test a running service: throughput, p50/p90/p99 latency, errors by status, batch sizes.

    The request comes from the model's metadata (random values, --rows rows); batch sizes come from the
    server's /metrics. Bounded by --duration and --requests.

    Example: mlctl bench http://127.0.0.1:8080 -m fraud-scorer -c 16 -d 20
    """
    from mlctl.bench.loadtest import run_bench

    state = state_of(ctx)
    out = state.output(json_)
    if model is None and "/v2/models/" not in url and body is None:
        model = _service_name(state)
    payload = None
    if body is not None:
        try:
            payload = body.read_bytes()
        except OSError as exc:
            raise InputError(f"--body {body}: {exc.strerror}") from None
    live = None if out.json else _LiveView(out.err_console, duration)
    try:
        result = run_bench(
            url,
            model=model,
            concurrency=concurrency,
            duration_s=duration,
            rate=rate,
            max_requests=requests,
            rows=rows,
            body=payload,
            max_tokens=max_tokens,
            timeout_s=timeout,
            reporter=out.reporter(),
            on_tick=live.update if live else None,
        )
    finally:
        if live:
            live.stop()
    exceeded = max_error_rate is not None and result.error_rate > max_error_rate
    message = f"error rate {result.error_rate:.2%} exceeds --max-error-rate {max_error_rate or 0:.2%}"
    if exceeded and out.json:
        raise ThresholdError(message, result=result)  # one JSON document: the error, holding the result
    out.result(result, lambda console: _render(console, result))
    if exceeded:
        raise ThresholdError(message)


def _service_name(state: State) -> str | None:
    from mlctl.errors import ConfigError

    try:
        return state.config().config.name
    except ConfigError:
        return None


class _LiveView:
    """A line that redraws in a terminal; a line every 5 s in logs."""

    def __init__(self, console: Console, duration: float) -> None:
        self.console = console
        self.duration = duration
        self.last_plain = 0.0
        self.live: Any = None
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(console=console, refresh_per_second=4, transient=True)
            self.live.start()

    def update(self, samples: Samples) -> None:
        elapsed = time.perf_counter() - samples.started
        done = len(samples.latencies)
        recent = samples.latencies[-2000:]
        p99 = sorted(recent)[int(len(recent) * 0.99) - 1] * 1000 if len(recent) > 1 else 0.0
        errors = sum(1 for s in samples.statuses if s == 0 or s >= 400)
        text = (
            f"{elapsed:5.1f}/{self.duration:g} s  {done} requests  {done / max(elapsed, 1e-9):8.1f} req/s  "
            f"p99 {p99:7.2f} ms  errors {errors}"
        )
        if self.live is not None:
            self.live.update(text)
        elif elapsed - self.last_plain >= 5:
            self.last_plain = elapsed
            self.console.print(text, markup=False)

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def _render(console: Console, result: BenchResult) -> None:
    lat = result.latency
    console.print(f"{result.url}{result.endpoint}: {result.requests} requests in {result.duration_s:g} s", markup=False)
    rows = [
        ["throughput", f"{result.throughput_rps:g} req/s"],
        ["latency p50 / p90 / p99", f"{lat.p50_ms:g} / {lat.p90_ms:g} / {lat.p99_ms:g} ms"],
        ["latency mean / max", f"{lat.mean_ms:g} / {lat.max_ms:g} ms"],
        ["statuses", ", ".join(f"{k}: {v}" for k, v in result.statuses.items()) or "none"],
        ["error rate", f"{result.error_rate:.2%}"],
    ]
    if result.batch_sizes is not None:
        batches = result.batch_sizes
        spread = ", ".join(f"{k}: {v}" for k, v in batches.histogram.items())
        rows.append(["server batches", f"{batches.batches} (mean {batches.mean_rows:g} rows; {spread})"])
    else:
        rows.append(["server batches", "unknown (no mlserve_batch_size in /metrics)"])
    print_table(console, None, rows)
