"""The GitLab pipeline `mlctl ci generate` writes, run job by job under gitlab-ci-local: a fresh clone of a
generated service goes test -> build -> push -> deploy-staging -> promote, against the Docker engine, a
registry with a login, the Kubernetes API emulator (tests/kube) and a package index of its own
(tests/pipelines.py says how GitLab is stood in for). One run covers every job; the checks read what the
jobs left: their --json artefacts, the registry's manifests and the cluster's Deployments.

The build job runs `mlctl build` with MLCTL_ROOT and MLCTL_WHEELHOUSE (CI variables the pipeline
passes on, as an air-gapped runner would) set to the test root image and wheelhouse, so the base layers are
the ones the rest of the suite builds. The service is named for the run and pushes under its namespace.
The GitHub workflow has a file of its own (test_pipeline_github.py), so the two run on different workers.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import run_name
from kube.emulator import FakeCluster
from pipelines import (  # noqa: F401 (fixtures)
    PASSWORD,
    USER,
    as_shell_runner,
    check_build,
    check_deploys,
    clone,
    cluster,
    drop_images,
    expected_weights,
    gitlab_ci_local,
    gitlab_job_log,
    index,
    job_environment,
    new_service,
    registry_with_login,
)
from ruamel.yaml import YAML

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.long(200)]


def test_the_gitlab_pipeline_runs_every_job(
    isolated: Path,
    index: str,  # noqa: F811 (a fixture of pipelines.py)
    registry_with_login: str,  # noqa: F811
    root_image: str,
    wheelhouse: Path,
    cluster: FakeCluster,  # noqa: F811
) -> None:
    name = run_name("svc-gl")
    for env in ("staging", "prod"):
        cluster.add_namespace(f"{name}-{env}")
    origin = new_service(isolated, name, registry_with_login, "gitlab")
    service = clone(origin, isolated / "clone")
    state = service / ".gitlab-ci-local"  # gitlab-ci-local's own state: git-ignored by the template
    runner_file = as_shell_runner(service / ".gitlab-ci.yml", state / "shell-runner.yml")
    yaml = YAML(typ="safe")
    original = yaml.load((service / ".gitlab-ci.yml").read_text())
    assert yaml.load(runner_file.read_text()) == drop_images(original) != original  # only image: differs

    kubeconfig = cluster.kubeconfig(isolated / "kubeconfig", namespace="default", context="ci").read_text()
    variables: dict[str, Any] = {
        "MLCTL_INSTALL": "mlctl==0.1.0",
        "TORCH_INDEX_URL": index,
        "MLCTL_ROOT": root_image,
        "MLCTL_WHEELHOUSE": str(wheelhouse),
        "REGISTRY_USERNAME": USER,
        "REGISTRY_PASSWORD": PASSWORD,
        "KUBECONFIG": {"type": "file", "values": {"*": kubeconfig}},
    }
    command = str(gitlab_ci_local())
    env = job_environment(index)

    def pipeline(*args: str, leave_out: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        # Typed explicitly: gitlab-ci-local would take an untyped value starting with / for a file to read.
        given = {
            k: v if isinstance(v, dict) else {"type": "variable", "values": {"*": v}}
            for k, v in variables.items()
            if k not in leave_out
        }
        (state / "variables.yml").write_text(json.dumps(given))
        return subprocess.run(
            [command, "--file", ".gitlab-ci-local/shell-runner.yml", "--variables-file",
             ".gitlab-ci-local/variables.yml", "--shell-isolation", "--no-color", *args],
            cwd=service, env=env, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip

    # A job that needs a secret which is not set stops first thing, naming it (no `docker login ""`).
    refused = pipeline("build", leave_out=("REGISTRY_PASSWORD",))
    assert refused.returncode != 0
    log = gitlab_job_log(service, "build")
    assert log, refused.stdout + refused.stderr
    host = registry_with_login
    assert f"error: the CI/CD variable REGISTRY_PASSWORD is not set; the build job needs it to push to {host}" in log
    assert "pip install" not in log.split("REGISTRY_PASSWORD is not set")[1]
    refused = pipeline("deploy-staging", leave_out=("KUBECONFIG",))
    assert refused.returncode != 0
    assert "error: the CI/CD variable KUBECONFIG is not set; this job needs it" in gitlab_job_log(
        service, "deploy-staging"
    )

    # A push to main: test, build (and push), deploy to staging. promote-prod is for version tags.
    branch = pipeline()
    assert branch.returncode == 0, branch.stdout[-6000:] + branch.stderr[-2000:]
    for job in ("test", "build", "deploy-staging"):
        assert f"PASS  {job}" in branch.stdout, branch.stdout[-3000:]
    assert "promote-prod" not in branch.stdout
    test_log = gitlab_job_log(service, "test")
    assert "mlctl_serve-0.1.0-py3-none-any.whl" in test_log  # the runtime came from mlctl, not an index
    assert " passed" in test_log
    artifacts = state / "artifacts"
    build = json.loads((artifacts / "build" / "build.json").read_text())
    check_build(build, registry_with_login, name, expected_weights(origin))
    assert "making the weights weights/model.pt with model.prepare" in gitlab_job_log(service, "build")
    staging = json.loads((artifacts / "deploy-staging" / "deploy-staging.json").read_text())

    # A version tag: promote what runs in staging to prod, by digest.
    tag = pipeline("promote-prod", "--variable", "CI_COMMIT_TAG=v0.1.0")
    assert tag.returncode == 0, tag.stdout[-6000:] + tag.stderr[-2000:]
    prod = json.loads((artifacts / "promote-prod" / "promote-prod.json").read_text())
    check_deploys(cluster, name, build, staging, prod)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=service, capture_output=True, text=True)
    assert status.stdout == ""  # what the jobs left in the checkout is ignored by the service's .gitignore
