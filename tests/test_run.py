"""``mlctl run``: serve a scaffolded service from source, for real."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import MLCTL, free_port

from mlctl.errors import ExitCode

pytestmark = pytest.mark.slow
ROWS = [[0.25 * i - 0.5 * j for j in range(8)] for i in range(4)]


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mlctl run exited early with {process.returncode}"
        try:
            if get(f"{url}/v2/health/ready", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the service never became ready")


def start(service: Path, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [*MLCTL, "run", "--port", str(port), *args],
        cwd=service,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    return process.returncode, output


def in_process_prediction(service: Path, rows: list[list[float]]) -> list[float]:
    code = (
        "import json, sys, torch\n"
        "from demo_svc.model import load_model\n"
        "model = load_model('weights/model.pt', torch.device('cpu'))\n"
        "with torch.inference_mode():\n"
        "    print(json.dumps(model(torch.tensor(json.loads(sys.argv[1]))).reshape(-1).tolist()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(rows)], cwd=service, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_serves_makes_weights_answers_and_stops_cleanly_on_ctrl_c(service: Path) -> None:
    assert not (service / "weights" / "model.pt").exists()
    process, port = start(service)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        status, body = post(
            f"{url}/v2/models/demo-svc/infer",
            {"inputs": [{"name": "features", "shape": [4, 8], "datatype": "FP32", "data": ROWS}]},
        )
        assert status == 200, body
        [output] = body["outputs"]
        assert output["shape"] == [4, 3]
        expected = in_process_prediction(service, ROWS)
        assert output["data"] == pytest.approx(expected, abs=1e-6)
        # A local run keeps /metrics on its serving port (serving.metrics_port is for pods).
        assert get(f"{url}/metrics")[0] == 200
    finally:
        code, output = stop(process)
    assert code == 0, output
    # Made with the server's own interpreter (the service has no .venv: this one).
    made = f"• making the weights with model.prepare, in {sys.executable}: python -m demo_svc.weights weights/model.pt"
    assert made in output
    assert f"• serving demo-svc at {url} (Ctrl-C to stop)" in output
    assert "ready after " in output
    assert output.rstrip().endswith("stopped")
    assert (service / "weights" / "model.pt").is_file()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_reload_picks_up_code_changes(service: Path) -> None:
    process, port = start(service)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        meta = f"{url}/v2/models/demo-svc"
        assert json.loads(get(meta)[1])["outputs"][0]["name"] == "probabilities"
        model = service / "demo_svc" / "model.py"
        model.write_text(model.read_text().replace('TensorSpec("probabilities"', 'TensorSpec("scores"'))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads(get(meta, timeout=1)[1])["outputs"][0]["name"] == "scores":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("the change was not reloaded")
    finally:
        code, output = stop(process)
    assert code == 0, output


def test_outside_a_service(cli) -> None:
    result = cli("run")
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr.splitlines()[0].startswith("error: no mlctl.yaml in ")
    assert result.stderr.splitlines()[1] == "hint: create one with `mlctl new NAME`, or point at one with -C DIR"


def test_port_in_use(cli, service: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(service)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("run", "--port", str(port))
    assert result.exit_code == ExitCode.CONFLICT
    assert result.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use",
        f"hint: pick another with --port, or stop what listens there (e.g. `ss -ltnp 'sport = :{port}'`)",
    ]
    assert not (service / "weights").exists()


def test_a_python_without_the_server_packages(cli, service: Path, tmp_path: Path, monkeypatch) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    monkeypatch.chdir(service)
    python = str(tmp_path / "bare" / "bin" / "python")
    result = cli("run", "--python", python, "--port", str(free_port()))
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert result.stderr.splitlines()[0] == (
        f"error: {python} cannot import mlctl_serve, uvicorn, torch, which the server needs"
    )


def test_missing_weights_without_a_prepare_command(cli, service: Path, monkeypatch) -> None:
    config = service / "mlctl.yaml"
    text = config.read_text().replace("  prepare: python -m demo_svc.weights weights/model.pt\n", "")
    config.write_text(text.replace("  source: prepare ", "  source: file    "))
    monkeypatch.chdir(service)
    result = cli("run", "--port", str(free_port()))
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert result.stderr.splitlines()[0] == (
        "error: weights file weights/model.pt is missing and mlctl.yaml has no model.prepare to make it"
    )


def test_a_server_that_crashes_is_reported(service: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [*MLCTL, "run", "--no-reload", "--port", str(port)],
        cwd=service,
        env={**__import__("os").environ, "MLCTL_CONFIG__SERVING__APP": "demo_svc.nothere:app"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitCode.FAILURE
    assert "error: the server of demo-svc exited with status 3 (its output is above)" in done.stderr
    assert "warning: MLCTL_CONFIG__SERVING__APP overrides serving.app" in done.stderr
