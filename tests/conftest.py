"""Shared fixtures: an isolated environment per test and an in-process ``mlctl`` runner."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlctl.cli.app import run_cli

REPO = Path(__file__).resolve().parent.parent
MLCTL = [sys.executable, "-m", "mlctl"]


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
