"""The predict server for real (uvicorn on loopback): batching, overload, timeouts, disconnects,
bad input, metrics, compile, graceful shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlctl_serve.testing import LiveServer
from prometheus_client.parser import text_string_to_metric_families
from runtime_process import TESTS, infer, rss_mib, start_server
from serving_apps import INFER, Doubler, doubler_app, fill_up, metric, request, wait_until


def test_concurrent_requests_are_batched_and_answered_row_by_row() -> None:
    model = Doubler(delay_s=0.05)
    with LiveServer(doubler_app(model, max_batch_size=8)) as server:
        server.wait_ready()
        model.batches.clear()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: server.post_json(INFER, request([[i, i, i, i]], id=str(i))), range(16)))
        for i, answer in enumerate(answers):
            assert answer.status == 200
            body = answer.json()
            assert body["id"] == str(i)
            assert body["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [2.0 * i] * 4}]
        assert sum(model.batches) == 16
        assert max(model.batches) > 1, model.batches
        assert max(model.batches) <= 8
        assert metric(server, "mlserve_batch_size_count") >= len(model.batches)


def test_a_full_queue_answers_503_with_retry_after() -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    with LiveServer(doubler_app(model, max_batch_size=1, max_queue=2, warmup_batch_sizes=(1,))) as server:
        gate.set()
        server.wait_ready()
        gate.clear()
        with ThreadPoolExecutor(3) as pool:
            held = fill_up(server, pool, 2)
            refused = server.post_json(INFER, request([[1, 1, 1, 1]]))
            gate.set()
            assert [f.result().status for f in held] == [200, 200, 200]
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "the server is at capacity (2 requests queued or being read); retry shortly"}
        assert metric(server, "mlserve_rejected_total", reason="queue_full") == 1


def test_a_request_over_its_time_gets_504_and_its_work_is_dropped() -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    with LiveServer(doubler_app(model, request_timeout_s=0.3, max_batch_size=1)) as server:
        gate.set()
        server.wait_ready()
        gate.clear()
        model.batches.clear()
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(server.post_json, INFER, request([[1, 1, 1, 1]]))
            wait_until(lambda: metric(server, "mlserve_inflight_requests") == 1)
            late = server.post_json(INFER, request([[2, 2, 2, 2]]))
            assert first.result().status == 504
        assert late.status == 504
        assert late.json() == {"error": "no answer within 0.3 s"}
        gate.set()
        wait_until(lambda: len(model.batches) >= 1)
        time.sleep(0.2)
        assert model.batches == [1]  # only the request already in the model ran; the queued one was dropped
        assert metric(server, "mlserve_rejected_total", reason="timeout") == 2


def test_a_client_that_disconnects_has_its_queued_work_cancelled() -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)
    with LiveServer(doubler_app(model, max_batch_size=1)) as server:
        gate.set()
        server.wait_ready()
        gate.clear()
        model.batches.clear()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(server.post_json, INFER, request([[1, 1, 1, 1]]))
            wait_until(lambda: metric(server, "mlserve_inflight_requests") == 1)
            body = json.dumps(request([[5, 5, 5, 5]])).encode()
            leavers = []
            for _ in range(3):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(
                    b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                leavers.append(sock)
            wait_until(lambda: metric(server, "mlserve_queue_depth") == 3)
            for sock in leavers:
                sock.close()
            wait_until(lambda: metric(server, "mlserve_rejected_total", reason="client_gone") == 3)
            gate.set()
            assert first.result().status == 200
        time.sleep(0.2)
        assert model.batches == [1]


def test_payload_limit_is_413_declared_or_streamed() -> None:
    with LiveServer(doubler_app(Doubler(), max_payload_bytes=2048)) as server:
        server.wait_ready()
        big = server.post_json(INFER, request([[0.5] * 4] * 200))
        assert big.status == 413
        assert big.json()["error"].startswith("request body of ")
        # No Content-Length: the body arrives in chunks and is cut off once it passes the limit.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(4):
                    sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before the last chunk
            reply = b""
            while not reply.endswith(b"}"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert reply.endswith(b'{"error":"request body exceeds the limit of 2048 bytes"}')


def test_requests_with_more_rows_than_the_max_batch_are_refused() -> None:
    with LiveServer(doubler_app(Doubler(), max_batch_size=2)) as server:
        server.wait_ready()
        answer = server.post_json(INFER, request([[1, 1, 1, 1]] * 3))
        assert answer.status == 400
        assert answer.json() == {"error": "inputs[0].shape: 3 rows exceed this server's max batch size of 2"}


def test_versions_path_and_metadata() -> None:
    with LiveServer(doubler_app(Doubler())) as server:
        server.wait_ready()
        assert server.post_json("/v2/models/doubler/versions/1/infer", request([[1, 2, 3, 4]])).status == 200
        missing = server.post_json("/v2/models/doubler/versions/7/infer", request([[1, 2, 3, 4]]))
        assert missing.status == 404
        assert missing.json() == {
            "error": "model 'doubler' version '7' not found; this server serves 'doubler' version '1'"
        }
        assert server.get("/v2").json() == {"name": "mlctl-serve", "version": "0.1.0", "extensions": []}
        wrong = server.request("DELETE", "/v2/health/ready")
        assert (wrong.status, wrong.headers["allow"]) == (405, "GET")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
FIELDS = st.sampled_from(["name", "shape", "datatype", "data", "parameters"])


@st.composite
def damaged_requests(draw: st.DrawFn) -> bytes:
    """Valid requests with one part replaced by arbitrary JSON, or arbitrary JSON, or arbitrary bytes."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(JSON_VALUES)).encode()
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}
    tensor[draw(FIELDS)] = draw(JSON_VALUES)
    body: dict[str, object] = {"inputs": [tensor]}
    if kind == 3:
        body[draw(st.sampled_from(["id", "outputs", "parameters", "inputs"]))] = draw(JSON_VALUES)
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def fuzz_server() -> LiveServer:
    with LiveServer(doubler_app(Doubler(), max_payload_bytes=4096)) as server:
        server.wait_ready()
        yield server


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=damaged_requests())
def test_malformed_bodies_never_get_a_500(fuzz_server: LiveServer, body: bytes) -> None:
    answer = fuzz_server.request("POST", INFER, body, {"Content-Type": "application/json"})
    assert answer.status in (200, 400, 413), (answer.status, body, answer.body)
    if answer.status != 200:
        assert set(answer.json()) == {"error"}


def test_metrics_exposition_has_every_family() -> None:
    with LiveServer(doubler_app(Doubler())) as server:
        server.wait_ready()
        server.post_json(INFER, request([[1, 2, 3, 4]]))
        server.post_json(INFER, {"inputs": []})
        families = {f.name for f in text_string_to_metric_families(server.get("/metrics").text)}
        assert {
            "mlserve_requests",
            "mlserve_request_duration_seconds",
            "mlserve_inference_duration_seconds",
            "mlserve_batch_size",
            "mlserve_queue_depth",
            "mlserve_inflight_requests",
            "mlserve_rejected",
            "mlserve_model_ready",
            "mlserve_startup_seconds",
        } <= families
        assert metric(server, "mlserve_requests_total", endpoint="/v2/models/{name}/infer", status="400") == 1
        assert (
            metric(server, "mlserve_request_duration_seconds_count", endpoint="/v2/models/{name}/infer", status="200")
            == 1
        )


def test_compile_that_fails_falls_back_to_eager_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("inductor is not supported on this platform")

    monkeypatch.setattr(torch, "compile", broken)
    with (
        caplog.at_level(logging.WARNING, logger="mlctl_serve"),
        LiveServer(doubler_app(Doubler(), compile=True)) as server,
    ):
        server.wait_ready()
        assert server.post_json(INFER, request([[1, 2, 3, 4]])).json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
    assert (
        "torch.compile failed (RuntimeError: inductor is not supported on this platform); serving the eager model"
        in (caplog.text)
    )


@pytest.mark.slow
def test_compile_for_real() -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

    torch.manual_seed(0)
    net = Net().eval()
    from mlctl_serve import Settings, create_predict_app
    from serving_apps import X, Y

    app = create_predict_app(
        load=lambda p, d: net,
        inputs=[X],
        outputs=[Y],
        on_load_failure=lambda: None,
        settings=Settings(model_name="doubler", device="cpu", compile=True, warmup_batch_sizes=(1, 2)),
    )
    from torch._dynamo.utils import counters

    with LiveServer(app) as server:
        server.wait_ready(timeout=300)
        assert not app.model is net, "the served model is not the compiled one"  # noqa: E714
        graphs = counters["stats"]["unique_graphs"]
        got = server.post_json(INFER, request([[1, 2, 3, 4]])).json()["outputs"][0]["data"]
        # The warm-up compiled what a request needs: the first request compiles nothing more (its
        # inputs were once made outside inference mode, and recompiled the model at 100 ms).
        assert counters["stats"]["unique_graphs"] == graphs
    with torch.inference_mode():
        expected = net(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).reshape(-1).tolist()
    assert got == pytest.approx(expected, abs=1e-5)


# --- as a process: overload and SIGTERM ----------------------------------------------------------------


def post(port: int) -> int:
    return infer(port)[0]


@pytest.mark.slow
def test_overload_of_ten_times_the_queue_gets_only_200_and_503_and_memory_stays_bounded(tmp_path: Path) -> None:
    process, port = start_server(
        tmp_path, TEST_MODEL_DELAY_S="0.05", SERVING_MAX_QUEUE="16", SERVING_MAX_BATCH_SIZE="4"
    )
    try:
        statuses: Counter[int] = Counter()
        after_waves = []
        for _wave in range(3):
            with ThreadPoolExecutor(160) as pool:
                statuses.update(pool.map(lambda _: post(port), range(160)))  # 10x the queue bound
            after_waves.append(rss_mib(process.pid))
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 0, statuses
        assert statuses[503] > 0, statuses
        assert process.poll() is None
        assert post(port) == 200  # still serving
        assert after_waves[-1] - after_waves[0] < 25, after_waves  # no growth wave over wave
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_sigterm_under_load_lets_in_flight_requests_finish_and_exits_0(tmp_path: Path) -> None:
    process, port = start_server(
        tmp_path, TEST_MODEL_DELAY_S="0.3", SERVING_MAX_BATCH_SIZE="2", SERVING_GRACEFUL_SHUTDOWN_S="20"
    )
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, port) for _ in range(8)]
        time.sleep(0.4)  # all eight are in the server: one batch running, three queued
        process.send_signal(signal.SIGTERM)
        statuses = [f.result() for f in futures]
    assert statuses == [200] * 8
    assert process.wait(30) == 0
    log = (tmp_path / "server.log").read_text()
    assert "Waiting for connections to close" in log or "Shutting down" in log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_bad_settings_stop_the_launcher_naming_the_variable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlctl_serve", "serving_apps:slow_app"],
        env={**os.environ, "PYTHONPATH": str(TESTS), "SERVING_MAX_QUEUE": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "mlctl-serve: invalid settings: SERVING_MAX_QUEUE='lots': invalid literal for int()" in done.stderr


@pytest.mark.slow
def test_a_model_that_cannot_load_exits_3_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "fail_app.py").write_text(
        "from mlctl_serve import TensorSpec, create_predict_app\n"
        "def load(path, device):\n    raise FileNotFoundError(f'weights not found at {path}')\n"
        "app = create_predict_app(load=load, inputs=[TensorSpec('x', 'FP32', (-1, 1))],\n"
        "                         outputs=[TensorSpec('y', 'FP32', (-1, 1))])\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "mlctl_serve", "fail_app:app"],
        env={**os.environ, "PYTHONPATH": str(tmp_path), "SERVING_PORT": "18099"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 3
    assert "model model failed to load; exiting" in done.stderr
    assert "FileNotFoundError: weights not found at weights/model.pt" in done.stderr


def test_integer_and_boolean_inputs_reach_the_model_as_their_dtypes() -> None:
    import torch
    from mlctl_serve import Settings, TensorSpec, create_predict_app

    class Masked(torch.nn.Module):
        def forward(self, ids: torch.Tensor, mask: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
            assert (ids.dtype, mask.dtype, half.dtype) == (torch.int64, torch.bool, torch.float16)
            return (ids * mask).float() + half.float()

    specs = [
        TensorSpec("ids", "INT64", (-1, 3)),
        TensorSpec("mask", "BOOL", (-1, 3)),
        TensorSpec("half", "FP16", (-1, 3)),
    ]
    app = create_predict_app(
        load=lambda p, d: Masked(),
        inputs=specs,
        outputs=[TensorSpec("y", "FP32", (-1, 3))],
        settings=Settings(model_name="masked", device="cpu"),
        on_load_failure=lambda: None,
    )
    with LiveServer(app) as server:
        server.wait_ready()
        answer = server.post_json(
            "/v2/models/masked/infer",
            {
                "inputs": [
                    {"name": "ids", "shape": [2, 3], "datatype": "INT64", "data": [[1, 2, 3], [4, 5, 2**40]]},
                    {
                        "name": "mask",
                        "shape": [2, 3],
                        "datatype": "BOOL",
                        "data": [[True, False, True], [False, True, True]],
                    },
                    {"name": "half", "shape": [2, 3], "datatype": "FP16", "data": [0.5, 0, 0, 0, 0, 0.25]},
                ]
            },
        )
    assert answer.status == 200, answer.text
    # 2**40 survives INT64 exactly; in the FP32 output the 0.25 is below float32 precision there.
    assert answer.json()["outputs"][0]["data"] == [1.5, 0.0, 3.0, 0.0, 5.0, float(2**40)]
