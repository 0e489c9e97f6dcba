"""Large bodies are parsed off the event loop: health checks stay fast while 16 MB bodies arrive."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from mlctl_serve import Settings, TensorSpec, create_predict_app
from mlctl_serve.parsing import OFFLOAD_BYTES
from mlctl_serve.testing import LiveServer

WIDTH = 100_000
WIDE = TensorSpec("x", "FP32", (-1, WIDTH))
TOTAL = TensorSpec("total", "FP64", (-1, 1))
INFER = "/v2/models/summer/infer"


class Summer(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double().sum(dim=1, keepdim=True)


def summer_app() -> object:
    return create_predict_app(
        load=lambda path, device: Summer(),
        inputs=[WIDE],
        outputs=[TOTAL],
        settings=Settings(model_name="summer", device="cpu", max_batch_size=16),
        on_load_failure=lambda: None,
    )


def big_body(seed: int) -> bytes:
    """16 rows of 100,000 values: about 16 MB of JSON."""
    rows = [[round((seed * 7 + i * 13 + j) % 1000 / 997, 6) for j in range(WIDTH)] for i in range(16)]
    return json.dumps({"inputs": [{"name": "x", "shape": [16, WIDTH], "datatype": "FP32", "data": rows}]}).encode()


def post(port: int, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", INFER, body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.long(50)
def test_health_stays_fast_while_eight_16_mb_bodies_are_parsed() -> None:
    bodies = [big_body(seed) for seed in range(8)]
    assert all(15_000_000 < len(b) < 16 * 1024 * 1024 for b in bodies)
    with LiveServer(summer_app()) as server:
        server.wait_ready()
        assert post(server.port, big_body(99))[0] == 200  # the parser process is up
        latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            while not done.is_set():
                started = time.perf_counter()
                connection.request("GET", "/v2/health/live")
                connection.getresponse().read()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)
            connection.close()

        prober = threading.Thread(target=probe)
        prober.start()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda body: post(server.port, body), bodies))
        done.set()
        prober.join()
    for body, (status, reply) in zip(bodies, answers, strict=True):
        assert status == 200, reply[:300]
        rows = json.loads(body)["inputs"][0]["data"]
        got = json.loads(reply)["outputs"][0]["data"]
        want = [float(torch.tensor(row, dtype=torch.float32).double().sum()) for row in rows]
        assert got == pytest.approx(want, rel=1e-9)
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    assert len(latencies) > 50
    assert p99 < 0.05, f"health p99 {p99 * 1000:.1f} ms (median {statistics.median(latencies) * 1000:.1f} ms)"


def test_a_large_bad_body_is_refused_by_the_parser_process_naming_the_field() -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, WIDTH], "datatype": "FP32", "data": [0.5] * (WIDTH * 2 - 1) + ["x"]}]}
    ).encode()
    assert len(body) > OFFLOAD_BYTES
    with LiveServer(summer_app()) as server:
        server.wait_ready()
        status, reply = post(server.port, body)
        ok, _ = post(
            server.port,
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": [1] * WIDTH}]}
            ).encode(),
        )
    assert status == 400
    assert json.loads(reply) == {"error": f'inputs[0].data[{WIDTH * 2 - 1}]: expected a number, got "x"'}
    assert ok == 200
