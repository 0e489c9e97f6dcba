"""The runtime served as a process (``python -m mlctl_serve serving_apps:slow_app``), for the tests of
signals, exit codes and memory."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

#: tests/, where serving_apps lives, for servers started as processes.
TESTS = Path(__file__).resolve().parent


def start_server(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    variables = {**os.environ, "PYTHONPATH": str(TESTS), "SERVING_PORT": str(port), **env}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "mlctl_serve", "serving_apps:slow_app"],
        env=variables,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return process, port
        except OSError:
            pass
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.1)


def infer(port: int, rows: int = 1, timeout: float = 60) -> tuple[int, bytes, dict[str, str]]:
    """POST an infer request of ``rows`` rows to the process's model ("slow"): status, body, headers."""
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": [[1.0, 2.0, 3.0, 4.0]] * rows}]}
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v2/models/slow/infer", body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, reply.read(), {k.lower(): v for k, v in reply.getheaders()}
    finally:
        connection.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
