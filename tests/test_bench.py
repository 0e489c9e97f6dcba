"""``mlctl bench`` against real servers (mlctl-serve apps on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import free_port
from mlctl_serve.testing import LiveServer
from serving_apps import Doubler, Letters, doubler_app, letters_app

from mlctl.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def doubler() -> LiveServer:
    with LiveServer(doubler_app(Doubler(delay_s=0.002), max_batch_size=8)) as server:
        server.wait_ready()
        yield server


def bench(cli, *args: str) -> dict:  # type: ignore[no-untyped-def]
    result = cli("bench", *args, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_reports_throughput_latency_statuses_and_server_batches(cli, doubler: LiveServer) -> None:
    data = bench(cli, doubler.url, "--model", "doubler", "-c", "8", "-d", "1")
    assert data["endpoint"] == "/v2/models/doubler/infer"
    assert data["requests"] > 50
    assert data["statuses"] == {"200": data["requests"]}
    assert data["error_rate"] == 0.0
    assert data["throughput_rps"] == pytest.approx(data["requests"] / data["duration_s"], rel=0.01)
    latency = data["latency"]
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    batches = data["batch_sizes"]
    assert batches["rows"] == data["requests"]  # every request was one row, and the server saw each
    assert batches["mean_rows"] > 1  # eight connections against a 2 ms model: batches form
    assert sum(batches["histogram"].values()) == batches["batches"]


def test_rate_and_request_limits_bound_the_run(cli, doubler: LiveServer) -> None:
    paced = bench(cli, f"{doubler.url}/v2/models/doubler/infer", "-c", "2", "-d", "1", "--rate", "40")
    assert 30 <= paced["requests"] <= 42
    counted = bench(cli, doubler.url, "-m", "doubler", "-c", "4", "-d", "30", "-n", "25")
    assert counted["requests"] == 25
    assert counted["duration_s"] < 10


def test_rows_per_request(cli, doubler: LiveServer) -> None:
    data = bench(cli, doubler.url, "-m", "doubler", "-c", "1", "-n", "10", "--rows", "3")
    assert data["batch_sizes"]["rows"] == 30


def test_errors_are_counted_by_status(cli, doubler: LiveServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"inputs": []}')
    result = cli(
        "bench", doubler.url, "-m", "doubler", "-n", "10", "--body", str(bad), "--json", "--max-error-rate", "0.5"
    )
    assert result.exit_code == ExitCode.FAILURE
    error = json.loads(result.stdout)["error"]  # exactly one JSON document, as every --json output
    assert (error["type"], error["exit_code"]) == ("ThresholdError", 1)
    assert error["message"] == "error rate 100.00% exceeds --max-error-rate 50.00%"
    data = error["result"]
    assert data["statuses"] == {"400": 10}
    assert data["error_rate"] == 1.0
    plain = cli("bench", doubler.url, "-m", "doubler", "-n", "10", "--body", str(bad), "--max-error-rate", "0.5")
    assert plain.exit_code == ExitCode.FAILURE
    assert "error rate" in plain.stdout  # the table first
    assert plain.stderr.splitlines()[-1] == "error: error rate 100.00% exceeds --max-error-rate 50.00%"


def test_generate_models_are_benched_on_generate(cli) -> None:
    with LiveServer(letters_app(Letters())) as server:
        server.wait_ready()
        data = bench(cli, server.url, "-m", "letters", "-n", "20", "--max-tokens", "5")
    assert data["endpoint"] == "/v2/models/letters/generate"
    assert data["statuses"] == {"200": 20}
    assert data["batch_sizes"]["batches"] == 0


def test_plain_output(cli, doubler: LiveServer) -> None:
    result = cli("bench", doubler.url, "-m", "doubler", "-n", "5", "-c", "1")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"{doubler.url}/v2/models/doubler/infer: 5 requests in " + lines[0].split(" in ")[1]
    assert lines[1].startswith("throughput")
    assert "statuses                 200: 5" in result.stdout
    assert "server batches           5 (mean 1 rows; <=1: 5)" in result.stdout


def test_unreachable_server(cli) -> None:
    port = free_port()
    result = cli("bench", f"http://127.0.0.1:{port}", "-m", "x", "-d", "1")
    assert result.exit_code == ExitCode.CLUSTER
    assert (
        result.stderr.splitlines()[0] == f"error: cannot reach http://127.0.0.1:{port}: [Errno 111] Connection refused"
    )


def test_unknown_model_and_bad_limits(cli, doubler: LiveServer) -> None:
    missing = cli("bench", doubler.url, "-m", "nope", "-d", "1")
    assert missing.exit_code == ExitCode.INPUT
    assert missing.stderr.startswith(f"error: {doubler.url} serves no model 'nope'")
    assert cli("bench", doubler.url, "-m", "doubler", "-d", "7200").stderr.startswith(
        "error: --duration 7200: must be more than 0 and at most 3600 seconds"
    )
    assert cli("bench", "ftp://x", "-m", "m").exit_code == ExitCode.INPUT
    nameless = cli("bench", doubler.url)
    assert nameless.exit_code == ExitCode.INPUT
    assert "pass --model NAME" in nameless.stderr


def test_inside_a_service_the_model_is_the_service(cli, service: Path, monkeypatch) -> None:
    monkeypatch.chdir(service)
    port = free_port()
    result = cli("bench", f"http://127.0.0.1:{port}", "-d", "1")
    assert result.exit_code == ExitCode.CLUSTER  # it went looking for demo-svc, not for a model name


def test_a_body_and_an_endpoint_url_bench_any_http_server(cli, doubler: LiveServer, tmp_path: Path) -> None:
    body = tmp_path / "one.json"
    body.write_text(json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}))
    data = bench(cli, f"{doubler.url}/v2/models/doubler/infer", "--body", str(body), "-n", "12", "-c", "2")
    assert data["statuses"] == {"200": 12}
    assert data["endpoint"] == "/v2/models/doubler/infer"
    other = bench(cli, f"{doubler.url}/v2/health/live", "--body", str(body), "-n", "3", "-c", "1")
    assert other["statuses"] == {"405": 3}  # sent as given: a POST to a GET endpoint
