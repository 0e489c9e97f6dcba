"""The GitHub workflow `mlctl ci generate` writes, run job by job as GitHub's runner would (tests/pipelines.py
says how): a fresh clone of a generated service goes test -> build -> push -> deploy-staging -> promote,
against the Docker engine, a registry with a login, the Kubernetes API emulator (tests/kube) and a package
index of its own. One run covers every job; the checks read what the jobs left: their --json artefacts, the
registry's manifests and the cluster's Deployments.

The build job runs `mlctl build` with MLCTL_ROOT and MLCTL_WHEELHOUSE (repository variables the
workflow passes on, as an air-gapped runner would) set to the test root image and wheelhouse, so the base
layers are the ones the rest of the suite builds. The service is named for the run and pushes under its
namespace. The GitLab pipeline has a file of its own (test_pipeline_gitlab.py), so the two run on
different workers.
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
    JobRun,
    check_build,
    check_deploys,
    cluster,
    expected_weights,
    index,
    job_environment,
    new_service,
    registry_with_login,
    run_workflow,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.long(150)]


def test_the_github_workflow_runs_every_job(
    isolated: Path,
    index: str,  # noqa: F811 (a fixture of pipelines.py)
    registry_with_login: str,  # noqa: F811
    root_image: str,
    wheelhouse: Path,
    cluster: FakeCluster,  # noqa: F811
) -> None:
    name = run_name("svc-gh")
    for env in ("staging", "prod"):
        cluster.add_namespace(f"{name}-{env}")
    origin = new_service(isolated, name, registry_with_login, "github")
    workflow = origin / ".github" / "workflows" / "mlctl.yml"
    kubeconfig = cluster.kubeconfig(isolated / "kubeconfig", namespace="default", context="ci").read_text()
    secrets = {"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD, "KUBECONFIG": kubeconfig}
    variables = {
        "MLCTL_INSTALL": "mlctl==0.1.0",
        "TORCH_INDEX_URL": index,
        "PIP_INDEX_URL": index,
        "MLCTL_ROOT": root_image,
        "MLCTL_WHEELHOUSE": str(wheelhouse),
    }
    env = job_environment("https://pypi.invalid/simple")  # only what the workflow maps in may be used
    work = isolated / "runner"

    def run(ref: str, where: str, **kwargs: Any) -> dict[str, JobRun]:
        return run_workflow(workflow, origin=origin, ref=ref, work=work / where, env=env, variables=variables, **kwargs)

    # A job that needs a secret which is not set stops first thing, naming it.
    passed = {"test": JobRun("success")}
    refused = run("refs/heads/main", "no-secrets", secrets={}, only=("build",), needs_done=passed)["build"]
    assert refused.result == "failure"
    assert "::error::the secret REGISTRY_USERNAME is not set; the build job needs it to push to" in refused.text
    assert "pip install" not in refused.text.split("is not set")[1]
    built = {"build": JobRun("success", {"image": "x"})}
    runs = run("refs/heads/main", "no-kubeconfig", secrets={}, only=("deploy-staging",), needs_done=built)
    refused = runs["deploy-staging"]
    assert refused.result == "failure"
    assert "::error::the secret KUBECONFIG is not set; this job needs it" in refused.text

    # A push to main: test, build (and push), deploy to staging; promote-prod is for version tags.
    branch = run("refs/heads/main", "main", secrets=secrets)
    assert {job: branch[job].result for job in branch} == {
        "test": "success",
        "build": "success",
        "deploy-staging": "success",
        "promote-prod": "skipped",
    }, "\n".join(run.text[-4000:] for run in branch.values())
    assert "mlctl_serve-0.1.0-py3-none-any.whl" in branch["test"].text
    assert " passed" in branch["test"].text
    build_artifacts = branch["build"].artifacts
    assert build_artifacts is not None
    build = json.loads((build_artifacts / "build" / "build.json").read_text())
    assert branch["build"].outputs == {"image": build["reference"]}  # what deploy-staging was given
    check_build(build, registry_with_login, name, expected_weights(origin))
    staging_artifacts = branch["deploy-staging"].artifacts
    assert staging_artifacts is not None
    staging = json.loads((staging_artifacts / "deploy-staging" / "deploy-staging.json").read_text())

    # A version tag: promote what runs in staging to prod, by digest (the test job passed for this commit).
    subprocess.run(["git", "tag", "v0.1.0"], cwd=origin, check=True)
    tag = run("refs/tags/v0.1.0", "tag", secrets=secrets, only=("promote-prod",), needs_done=branch)
    assert tag["promote-prod"].result == "success", tag["promote-prod"].text[-4000:]
    prod_artifacts = tag["promote-prod"].artifacts
    assert prod_artifacts is not None
    prod = json.loads((prod_artifacts / "promote-prod" / "promote-prod.json").read_text())
    check_deploys(cluster, name, build, staging, prod)
