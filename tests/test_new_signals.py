"""``mlctl new`` under real signals: a real process, stopped while its staging directory exists.

The window is made deterministic with a git ``post-commit`` hook (``--no-verify`` skips only the
pre-commit and commit-msg hooks): it marks that the commit is made, inside the staging directory,
and sleeps. The test waits for the mark, then signals mlctl's process alone, as ``kill PID`` or a CI
runner cancelling a job would. Each process group the test starts is ended by the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlctl.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture
def slow_commit(tmp_path: Path) -> Path:
    """A global git config whose post-commit hook writes the path in $MLCTL_TEST_READY, then sleeps."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    hook = hooks / "post-commit"
    hook.write_text('#!/bin/sh\n[ -n "$MLCTL_TEST_READY" ] || exit 0\npwd > "$MLCTL_TEST_READY"\nsleep 60\n')
    hook.chmod(0o755)
    config = Path(os.environ["GIT_CONFIG_GLOBAL"])
    config.write_text(config.read_text() + f"[core]\n\thooksPath = {hooks}\n")
    return tmp_path / "ready"


def start_new(work: Path, name: str, ready: Path | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    if ready is not None:
        env["MLCTL_TEST_READY"] = str(ready)
    return subprocess.Popen(
        [sys.executable, "-m", "mlctl", "new", name, "--set", "accelerator=cpu"],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so the test can end git and the hook after it
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text().strip():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the commit hook never ran"
        time.sleep(0.02)
    return path.read_text().strip()


def end_group(process: subprocess.Popen[str]) -> None:
    """End what is left of the process group this test started (git, the hook's sleep)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_caught_signal_leaves_nothing_behind(isolated: Path, slow_commit: Path, sig: signal.Signals) -> None:
    process = start_new(isolated, "svc", slow_commit)
    try:
        staging = Path(wait_for(slow_commit, process))
        assert staging.parent == isolated
        assert staging.name.startswith(f".svc.mlctl-{process.pid}-")  # the window: staged, committed, not moved
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        end_group(process)
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert stderr.endswith("\ninterrupted\n"), stderr  # said, not only exited with
    assert sorted(p.name for p in isolated.iterdir()) == []


def test_a_sigkill_leftover_is_removed_by_the_next_run(isolated: Path, slow_commit: Path) -> None:
    process = start_new(isolated, "svc", slow_commit)
    try:
        staging = Path(wait_for(slow_commit, process))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        end_group(process)
    assert staging.is_dir()  # SIGKILL cannot be caught: this is what it leaves

    again = start_new(isolated, "svc", None)
    try:
        _, stderr = again.communicate(timeout=120)
    finally:
        end_group(again)
    assert again.returncode == 0, stderr
    assert f"warning: removed {staging}, left by an interrupted `mlctl new` (process {process.pid})" in stderr
    assert sorted(p.name for p in isolated.iterdir()) == ["svc"]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=isolated / "svc", capture_output=True, text=True)
    assert status.stdout == ""


def test_a_live_runs_staging_is_left_alone_and_an_old_doubtful_one_reported(cli, isolated: Path) -> None:
    running = subprocess.Popen(["sleep", "60"])  # stands for another `mlctl new`, still writing
    try:
        live = isolated / f".other.mlctl-{running.pid}-abcdef12"
        live.mkdir()
        result = cli("new", "svc", "--no-git")
        assert result.exit_code == 0
        assert "warning" not in result.stderr
        assert live.is_dir()
        old = time.time() - 2 * 3600  # as old as no `mlctl new` runs: the process number was reused
        os.utime(live, (old, old))
        result = cli("new", "svc2", "--no-git")
    finally:
        running.kill()
        running.wait()
    assert result.exit_code == 0
    assert f"warning: {live} looks left by an interrupted `mlctl new`: remove it if no `mlctl new` is running" in (
        result.stderr
    )
    assert live.is_dir()
