"""A generated service's README, as a team follows it: its "Run it" block run as written in a fresh clone and
a brand-new virtual environment, against a package index of the team's own (tests/pipelines.py), which
holds no mlctl-serve: the runtime comes from mlctl itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_name
from pipelines import clone, index, job_environment, new_service  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.long(110)]


def test_a_fresh_venv_installs_the_service_as_its_readme_says(
    isolated: Path,
    index: str,  # noqa: F811 (a fixture of pipelines.py)
) -> None:
    # The README's "Run it" block, run as written in a fresh clone and a brand-new venv, with mlctl installed
    # elsewhere (on PATH only) and a package index that holds no mlctl-serve: the runtime comes from mlctl.
    origin = new_service(isolated, run_name("svc-rd"), "registry.example.com", "none")
    service = clone(origin, isolated / "clone")
    readme = (service / "README.md").read_text()
    block = readme.split("## Run it", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert lines[-1] == "mlctl run"  # a server that runs until stopped: its own tests (test_run) start it
    pytorch = "--index-url https://download.pytorch.org/whl/cpu"
    assert sum(pytorch in line for line in lines) == 1
    # This machine reaches no download.pytorch.org: the team's own index stands in for it.
    script = "\n".join(line.replace(pytorch, f"--index-url {index}") for line in lines[:-1])
    mlctl_only = isolated / "elsewhere"
    mlctl_only.mkdir()
    (mlctl_only / "mlctl").symlink_to(REPO / ".venv" / "bin" / "mlctl")
    env = job_environment(index)
    env["PATH"] = f"{env['PATH']}{os.pathsep}{mlctl_only}"
    done = subprocess.run(
        ["bash", "-e", "-c", script + "\npython -c 'import mlctl_serve, torch; print(mlctl_serve.__file__)'"],
        cwd=service, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith(str(service / ".venv"))  # in the new venv
