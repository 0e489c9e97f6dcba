"""The README's first command, ``scripts/demo``, walks the whole main job, and fails when a step does not happen.

CI runs this file through ``scripts/test`` (``.ci/run``) on the clean checkout: the demo's road (new -> test
-> run -> build -> deploy --target local -> predict -> down) is run by the same script a new user runs,
and what each step made is checked here again, from the Docker engine. The demo's service is named for
this test run and its image carries the run's label, so only what it made is removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, RUN_LABEL, run_name

pytestmark = pytest.mark.slow

STEPS = ["new", "test", "run", "build", "deploy --target local", "predict", "down"]


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}


@pytest.mark.docker
@pytest.mark.long(90)
def test_the_demo_runs_every_step_of_the_road(tmp_path: Path, root_image: str, wheelhouse: Path) -> None:
    name = run_name("demo")
    report = tmp_path / "report.json"
    argv = [str(REPO / "scripts" / "demo"), "--name", name, "--work", str(tmp_path / "work"), "--report", str(report)]
    # The test root and wheelhouse stand for Docker Hub and PyTorch's index, which CI cannot reach.
    argv += ["--root", root_image, "--wheelhouse", str(wheelhouse), "--label", RUN_LABEL]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1200, env=environment())
        outcomes = json.loads(report.read_text()) if report.exists() else []
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert [(o["step"], o["done"]) for o in outcomes] == [(step, True) for step in STEPS]

        # What the steps made, seen from the engine and the disk, not from the demo's word.
        service = tmp_path / "work" / name
        assert (service / "mlctl.yaml").is_file()
        built = next(o["detail"] for o in outcomes if o["step"] == "build")
        labels = docker("image", "inspect", "--format", "{{json .Config.Labels}}", built)
        assert labels.returncode == 0, f"the image the demo built, {built}, is not on the engine"
        assert json.loads(labels.stdout)["mlctl.service"] == name
        assert docker("ps", "-aq", "--filter", f"label=org.mlctl.service={name}").stdout.strip() == ""  # down
        predicted = next(o["detail"] for o in outcomes if o["step"] == "predict")
        assert predicted.endswith("outputs of shape [2, 3]")
        assert "  done      predict " in done.stdout
    finally:
        subprocess.run([sys.executable, "-m", "mlctl", "down"], cwd=tmp_path / "work" / name, capture_output=True)
        images = docker("images", "-q", "--filter", f"label=mlctl.service={name}").stdout.split()
        if images:
            docker("rmi", "-f", *set(images))


def test_a_step_that_cannot_run_fails_the_demo(tmp_path: Path) -> None:
    """Without a Docker engine the demo once skipped build and deploy and exited 0; now it fails and says which
    steps did not happen. (demo.py directly: scripts/demo would start an engine for it.)"""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "demo.py"),
            "--name",
            run_name("nodocker"),
            "--work",
            str(tmp_path / "work"),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**environment(), "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    outcomes = {o["step"]: o for o in json.loads(report.read_text())}
    assert [s for s in STEPS if outcomes[s]["done"]] == ["new", "test", "run"]
    assert outcomes["build"]["detail"].startswith("no Docker engine answers here")
    for step in ("deploy --target local", "predict", "down"):
        assert outcomes[step]["detail"] == "not reached: build did not happen"
    assert done.stderr.endswith(
        "error: the demo did not run the whole road: not done: build, deploy --target local, predict, down\n"
    )
    assert "  NOT DONE  build " in done.stdout
