"""Helpers for the tests that build service images with the real Docker engine (test_build, test_local)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import RUN_LABEL, Result

from mlctl.cli.app import run_cli

GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@e"}


def mlctl(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_cli(list(args))
    finally:
        os.chdir(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Result(code, out.getvalue(), err.getvalue())


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    ).stdout


def scaffold(base: Path, name: str, accelerator: str = "cpu") -> Path:
    """A pytorch-predict service (cpu unless asked) with its weights made, committed to git."""
    service = base / name
    result = mlctl(base, "new", name, "--set", f"accelerator={accelerator}", "--yes", "--no-git")
    assert result.exit_code == 0, result.stderr
    subprocess.run(
        [sys.executable, "-m", f"{name.replace('-', '_')}.weights", "weights/model.pt"],
        cwd=service,
        check=True,
        capture_output=True,
    )
    git(service, "init", "-q", "-b", "main")
    git(service, "add", "-A")
    git(service, "commit", "-q", "-m", "scaffold")
    return service


def build_args(root: str, house: Path) -> list[str]:
    """``mlctl build``'s arguments for a test build: the test root, the wheelhouse, this run's label."""
    return ["build", "--root", root, "--wheelhouse", str(house), "--label", RUN_LABEL]


def build(service: Path, root: str, house: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = mlctl(service, *build_args(root, house), "--json", *args, env=env)
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def copy_service(service: Path, target: Path) -> Path:
    """A copy of a scaffolded service with its git history: the same tree, commit and tag, so its
    image is the original's until the copy changes. Tests change copies, never a shared original."""
    import shutil

    shutil.copytree(service, target, symlinks=True)
    return target


def statuses(data: dict) -> dict[str, str]:
    return {layer["layer"]: layer["status"] for layer in data["layers"]}
