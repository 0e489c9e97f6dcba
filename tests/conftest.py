"""Shared fixtures: an isolated environment per test and an in-process ``mlctl`` runner."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlctl.cli.app import run_cli

REPO = Path(__file__).resolve().parent.parent
MLCTL = [sys.executable, "-m", "mlctl"]
#: The root image the image tests build on (scripts/make-test-root), and the packages their ladder holds.
ROOT_IMAGE = "mlctl-test/debian:bookworm"
RUNTIME_REQUIREMENTS = ["torch==2.13.0", "uvicorn[standard]>=0.30", "orjson>=3.10", "prometheus-client>=0.20"]


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in an empty directory with a clean, fixed environment."""
    for name in list(os.environ):
        if name.startswith(("MLCTL_", "SERVING_")) or name in ("KUBECONFIG", "DOCKER_CONTEXT"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERM", "dumb")
    # git: no user or system config leaks in; a fixed identity unless a test removes it.
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    (home / ".gitconfig").write_text("[user]\n\tname = Test User\n\temail = test@example.com\n")
    monkeypatch.setenv("KUBECONFIG", str(home / "no-kubeconfig"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def cli() -> object:
    """Run mlctl in-process: ``cli("new", "x")`` -> Result(exit_code, stdout, stderr)."""

    def invoke(*args: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_cli(list(args))
        return Result(code, out.getvalue(), err.getvalue())

    return invoke


def tree(root: Path) -> list[str]:
    """Every file under ``root`` (relative, sorted), leaving out .git internals."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``docker`` tests skip on a workstation without an engine; with CI=true they always run (and fail)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return
    if not any(item.get_closest_marker("docker") for item in items) or docker_available():
        return
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.skip(reason="no Docker engine here (CI starts one; CI=true never skips)"))


@pytest.fixture
def service(cli: object, isolated: Path) -> Path:
    """A freshly scaffolded pytorch-predict service (CPU, no git) in the test's directory."""
    result = cli("new", "demo-svc", "--set", "accelerator=cpu", "--no-git")  # type: ignore[operator]
    assert result.exit_code == 0, result.stderr
    return isolated / "demo-svc"


# --- the real components of the image tests (session-wide: made once, shared by every module) ---


@pytest.fixture(scope="session")
def root_image() -> str:
    subprocess.run([str(REPO / "scripts" / "make-test-root"), ROOT_IMAGE], check=True, capture_output=True)
    return ROOT_IMAGE


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """torch's CPU wheel and the runtime's dependencies, resolved once on the host (cached in the clone)."""
    from mlctl.images import wheels
    from mlctl.reporting import NullReporter

    return wheels.download(
        RUNTIME_REQUIREMENTS,
        python="3.11",
        platform="linux/amd64",
        cache=REPO / ".cache" / "test-wheels",
        index_url=None,
        reporter=NullReporter(),
    )


@contextlib.contextmanager
def running_registry(data: Path, *, auth: str = "") -> Iterator[str]:
    """Debian's docker-registry serving ``data`` on a free loopback port; ``auth`` is its config's auth
    section (YAML, indented under ``auth:``). Yields ``127.0.0.1:PORT``."""
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/start-services installs it)")
    port = free_port()
    (data / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}/blobs\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + (f"auth:\n{auth}" if auth else "")
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(data / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers (401: it wants a login)
            except (OSError, urllib.error.URLError):
                assert time.monotonic() < deadline, "docker-registry did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry on loopback for pushes (the engine treats 127.0.0.0/8 as insecure)."""
    with running_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address
