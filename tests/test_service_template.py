"""Each template scaffolds a service that passes its own tests and lints clean, as generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TEMPLATES = ["pytorch-predict", "pytorch-generate"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_generated_service_passes_its_own_tests(cli, isolated: Path, template: str) -> None:
    assert cli("new", "svc", "--template", template).exit_code == 0
    root = isolated / "svc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary, summary
    assert "failed" not in summary, summary
    assert "error" not in summary, summary
    # The tests made their weights in a temporary directory, not in the service.
    assert not (root / "weights").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert status == ""


@pytest.mark.parametrize("template", TEMPLATES)
def test_generated_service_is_lint_clean_and_formatted(cli, isolated: Path, template: str) -> None:
    assert cli("new", "lint-me", "--template", template, "--no-git").exit_code == 0
    root = isolated / "lint-me"
    for command in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
