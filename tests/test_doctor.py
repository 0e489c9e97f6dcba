"""``mlctl doctor``: one line per piece, JSON, and the exit code when a required piece is missing."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import free_port, running_registry

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
    assert re.search(r"^FAIL  docker +no Docker engine answers at unix:///nonexistent/docker.sock", result.stdout, re.M)
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


def test_reachable_cluster_and_its_gpu_nodes(
    cli, service: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kube.emulator import FakeCluster

    monkeypatch.chdir(service)
    with FakeCluster(kube_version="1.31") as cluster:
        cluster.add_node("cpu-0")
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kc", context="test")))
        _, found = checks(cli)
        answers = f"context test: {cluster.url} answers (Kubernetes v1.31.0)"
        assert found["kubernetes"]["detail"] == f"{answers}; no GPU nodes"
        assert found["kubernetes"]["status"] == "ok"  # a CPU service needs none
        monkeypatch.setenv("MLCTL_CONFIG__RUNTIME__ACCELERATOR", "cuda")
        monkeypatch.setenv("MLCTL_CONFIG__RESOURCES__GPU__COUNT", "1")
        _, found = checks(cli)
        assert found["kubernetes"]["status"] == "warn"
        assert (
            found["kubernetes"]["detail"] == f"{answers}, but no node offers nvidia.com/gpu and the service asks for 1"
        )
        cluster.add_node("gpu-0", gpus=4, product="NVIDIA-A100-SXM4-80GB")
        cluster.add_node("gpu-1", gpus=4, product="NVIDIA-A100-SXM4-80GB")
        cluster.add_node("gpu-2", gpus=1, product="NVIDIA-L4")
        _, found = checks(cli)
        assert found["kubernetes"]["status"] == "ok"
        assert found["kubernetes"]["detail"] == (
            f"{answers}; 3 GPU node(s), 9 GPUs (8 x NVIDIA-A100-SXM4-80GB, 1 x NVIDIA-L4)"
        )
        forbidden = 'nodes is forbidden: User "dev" cannot list resource "nodes" in API group "" at the cluster scope'
        cluster.inject_fault("list", "nodes", 403, "Forbidden", forbidden)
        _, found = checks(cli)
        assert found["kubernetes"]["detail"] == f"{answers}; its nodes cannot be listed with this login"


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


@pytest.mark.docker  # docker-registry is installed with the Docker engine (scripts/start-services)
def test_registry_login(cli, service: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against Debian's docker-registry with htpasswd auth, and the login `docker login` stores."""
    import base64
    import warnings

    with warnings.catch_warnings():  # crypt (until Python 3.13): bcrypt through libxcrypt, as htpasswd wants
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    (tmp_path / "htpasswd").write_text(f"ci:{crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    auth = f"  htpasswd:\n    realm: test\n    path: {tmp_path}/htpasswd\n"
    with running_registry(tmp_path, auth=auth) as host:
        monkeypatch.chdir(service)
        monkeypatch.setenv("MLCTL_CONFIG__IMAGE__REGISTRY", f"{host}/ml")
        docker_config = tmp_path / "docker"
        docker_config.mkdir()
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))

        def login(password: str | None) -> dict:  # type: ignore[type-arg]
            auths = {host: {"auth": base64.b64encode(f"ci:{password}".encode()).decode()}} if password else {}
            (docker_config / "config.json").write_text(json.dumps({"auths": auths}))
            return checks(cli)[1]["registry login"]

        assert login(None)["detail"] == f"not logged in to {host} (it asks for a login): pushes will be refused"
        assert login(None)["hint"] == f"docker login {host}"
        assert login("wrong")["detail"] == f"{host} refuses the stored login of ci (from config.json)"
        good = login("s3cret")
        assert (good["status"], good["detail"]) == ("ok", f"logged in to {host} as ci")


# --- what a service's first build fetches: its root image and its wheel index --------------------------


def test_outside_a_service_there_is_no_root_or_index_to_check(cli) -> None:
    _, found = checks(cli)
    assert (found["root image"]["status"], found["root image"]["detail"]) == (
        "info",
        "not in a service: no root image to check",
    )
    assert found["wheel index"]["detail"] == "not in a service: no wheel index to check"


@pytest.mark.docker
def test_the_root_image_is_here_or_its_fix_is_said(cli, service: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import ROOT_IMAGE

    monkeypatch.chdir(service)
    _, found = checks(cli, "--root", ROOT_IMAGE)
    assert (found["root image"]["status"], found["root image"]["detail"]) == (
        "ok",
        f"{ROOT_IMAGE} is on this machine",
    )
    monkeypatch.setenv("MLCTL_ROOT", "127.0.0.1:9/nowhere/root:1")  # as `mlctl build` reads it
    _, found = checks(cli)
    root = found["root image"]
    assert root["status"] == "warn"
    assert root["required"] is False
    assert root["detail"].startswith(
        "127.0.0.1:9/nowhere/root:1 is not on this machine and its registry 127.0.0.1:9 cannot be reached: "
    )
    assert root["hint"].startswith("make one here: `mlctl images root` (Debian, with mmdebstrap)")


def test_the_wheel_index_answers_with_the_flavour(
    cli, service: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wheel_index import fake_torch, serve_index, silent_server

    monkeypatch.chdir(service)  # a cpu service: torch 2.13.0+cpu, Python 3.11
    fake_torch(tmp_path, "2.13.0+cpu")
    with serve_index(tmp_path) as url:
        _, found = checks(cli, "--torch-index", url)
        assert found["wheel index"] == {
            "name": "wheel index",
            "status": "ok",
            "detail": f"{url} answers and has torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
            "required": False,
            "hint": None,
        }
        monkeypatch.setenv("MLCTL_CONFIG__RUNTIME__ACCELERATOR", "cuda")
        monkeypatch.setenv("MLCTL_CONFIG__RESOURCES__GPU__COUNT", "1")
        monkeypatch.setenv("MLCTL_TORCH_INDEX", url)
        _, found = checks(cli)
        index = found["wheel index"]
        assert index["status"] == "warn"
        assert index["detail"].startswith(f"the wheel index {url} has no CUDA 13.0 build of torch 2.13.0")
    with silent_server() as url:
        _, found = checks(cli, "--torch-index", url)
    index = found["wheel index"]
    assert (index["status"], index["detail"]) == (
        "warn",
        f"the wheel index at {url.split('/')[2]} does not answer: timed out (2 s)",
    )
    assert index["hint"].startswith("mlctl build takes torch from there: check the network or proxy")


@pytest.mark.docker
def test_the_summary_says_what_a_first_build_still_needs(
    cli, service: Path, root_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: doctor said all required checks passed, then the first build failed on its root.
    The two are optional (a machine may only run services from source), but the summary names them."""
    from wheel_index import silent_server

    monkeypatch.chdir(service)
    with silent_server() as url:
        result = cli("doctor", "--timeout", "1", "--root", "127.0.0.1:9/nowhere/root:1", "--torch-index", url)
    lines = result.stdout.splitlines()
    assert re.search(r"^warn  root image +127\.0\.0\.1:9/nowhere/root:1 is not on this machine", result.stdout, re.M)
    assert lines[-1] == "A first `mlctl build` here still needs: root image, wheel index (see the fixes above)"
    with silent_server() as url:
        result = cli("doctor", "--timeout", "1", "--root", root_image, "--torch-index", url)
    assert result.stdout.splitlines()[-1] == "A first `mlctl build` here still needs: wheel index (see the fixes above)"
