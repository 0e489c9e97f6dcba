"""``mlctl doctor``: one line per piece, JSON, and the exit code when a required piece is missing."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import free_port

from mlctl.errors import ExitCode
from mlctl.models import CheckStatus
from mlctl.workflow.doctor import probe_registry


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters:\n- name: test\n  cluster:\n    server: {server}\n"
        "contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n"
        "users:\n- name: test\n  user:\n    token: not-a-secret\n"
    )
    return path


def checks(cli, *args: str) -> tuple[int, dict[str, dict]]:  # type: ignore[no-untyped-def]
    result = cli("doctor", "--json", "--timeout", "2", *args)
    data = json.loads(result.stdout)
    assert data["ok"] is (result.exit_code == 0)
    return result.exit_code, {c["name"]: c for c in data["checks"]}


def test_docker_down_is_a_required_failure(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    code, found = checks(cli)
    assert code == ExitCode.ENVIRONMENT
    docker = found["docker"]
    assert docker["status"] == "fail"
    assert docker["required"] is True
    assert docker["detail"] == (
        "no Docker engine answers at unix:///nonexistent/docker.sock: "
        "the socket does not exist (is the engine running?)"
    )
    assert docker["hint"].startswith("start the Docker engine")
    assert found["python"]["status"] == "ok"
    assert found["git"]["status"] == "ok"
    assert found["helm"]["status"] == "ok"
    assert found["helm"]["detail"].startswith("Helm engine v4.")


def test_plain_output_one_line_per_check_with_fixes(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = cli("doctor", "--timeout", "1")
    assert result.exit_code == ExitCode.ENVIRONMENT
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:1]] == [["ok", "python"]]
    assert "FAIL  docker      no Docker engine answers at unix:///nonexistent/docker.sock" in result.stdout
    assert "fix: start the Docker engine" in result.stdout
    assert lines[-1] == "1 required check(s) failed: docker"


@pytest.mark.docker
def test_docker_up(cli) -> None:
    _, found = checks(cli)
    assert found["docker"]["status"] == "ok", found["docker"]
    assert found["docker"]["detail"].startswith("Docker ")


def test_no_kubeconfig_is_a_warning_not_a_failure(cli) -> None:
    _, found = checks(cli)
    kube = found["kubernetes"]
    assert kube["status"] == "warn"
    assert kube["required"] is False
    assert kube["detail"].startswith("no usable kubeconfig")


def test_unreachable_cluster_names_the_server(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")))
    _, found = checks(cli)
    kube = found["kubernetes"]
    assert kube["status"] == "warn"
    assert kube["detail"].startswith(f"cannot reach the API server at http://127.0.0.1:{port}")


class _FakeApi(BaseHTTPRequestHandler):
    """Answers /version as an API server does (enough for the reachability check)."""

    def do_GET(self) -> None:
        status, body = (
            (200, b'{"major":"1","minor":"31","gitVersion":"v1.31.4"}')
            if self.path.startswith("/version")
            else (404, b"{}")
        )
        if self.path == "/v2/":
            status, body = 401, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> str:
    server = HTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_reachable_cluster(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server: str) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", f"http://{http_server}")))
    _, found = checks(cli)
    assert found["kubernetes"]["status"] == "ok"
    assert found["kubernetes"]["detail"] == f"context test: http://{http_server} answers (Kubernetes v1.31.4)"


def test_registry_from_the_service_config(
    cli, service: Path, monkeypatch: pytest.MonkeyPatch, http_server: str
) -> None:
    monkeypatch.chdir(service)
    _, found = checks(cli)
    assert found["registry"]["status"] == "info"
    assert found["registry"]["detail"] == "image.registry is empty: images stay on this machine"
    monkeypatch.setenv("MLCTL_CONFIG__IMAGE__REGISTRY", f"{http_server}/ml")
    _, found = checks(cli)
    assert found["registry"] == {
        "name": "registry",
        "status": "ok",
        "detail": f"http://{http_server}/v2/ answers (login needed: docker login {http_server})",
        "required": False,
        "hint": None,
    }


def test_registry_that_does_not_answer() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        check = probe_registry(f"127.0.0.1:{port}/ml", 1.0)
    assert check.status is CheckStatus.WARN
    assert check.detail.startswith(f"registry 127.0.0.1:{port} does not answer")


def test_gpu_line_matches_what_torch_sees(cli) -> None:
    import torch

    _, found = checks(cli)
    gpu = found["gpu"]
    assert gpu["required"] is False
    if torch.cuda.is_available():
        assert gpu["status"] == "ok"
    else:
        assert gpu["status"] in ("info", "warn")
        assert f"torch {torch.__version__}" in gpu["detail"]
