"""SERVING_METRICS_PORT: /metrics on a listener of its own, so a NetworkPolicy can open it to the
monitoring namespace alone, and scrapes go on when the serving port is at its connection limit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from mlctl_serve.testing import LiveServer
from prometheus_client.parser import text_string_to_metric_families
from runtime_process import TESTS
from serving_apps import INFER, Doubler, doubler_app, request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_move_to_their_own_port_and_leave_the_serving_one() -> None:
    port = free_port()
    with LiveServer(doubler_app(Doubler(), metrics_port=port, max_connections=2)) as server:
        server.wait_ready()
        assert server.post_json(INFER, request([[1, 2, 3, 4]])).status == 200
        status, text = get(port, "/metrics")
        assert status == 200
        samples = {
            (s.name, s.labels.get("status")): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "mlserve_requests_total"
        }
        assert samples[("mlserve_requests_total", "200")] == 1
        elsewhere = server.get("/metrics")
        assert (elsewhere.status, elsewhere.json()) == (404, {"error": f"/metrics is served on port {port}"})
        assert get(port, "/v2/health/ready")[0] == 404
        # The serving port at its limit (two connections mid-request) does not stop a scrape.
        busy = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        for sock in busy:
            sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\n")
        try:
            assert get(port, "/metrics")[0] == 200
        finally:
            for sock in busy:
                sock.close()


def test_a_metrics_port_in_use_stops_the_start_with_the_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mlctl_serve", "serving_apps:slow_app"],
            env={
                **os.environ,
                "PYTHONPATH": str(TESTS),
                "SERVING_PORT": str(free_port()),
                "SERVING_METRICS_PORT": str(port),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"address ('127.0.0.1', {port})" in done.stderr
    assert "address already in use" in done.stderr
