"""The pipelines `mlctl ci generate` writes, run job by job as CI runs them: a fresh clone of a generated
service goes test -> build -> push -> deploy-staging -> promote, against the Docker engine, a registry
with a login, the Kubernetes API emulator (tests/kube) and a package index of its own (tests/pipelines.py
says how each CI system is stood in for). One run per CI system covers every job; the checks read what
the jobs left: their --json artefacts, the registry's manifests and the cluster's Deployments.

The build jobs run `mlctl build` with MLCTL_ROOT_IMAGE and MLCTL_WHEELHOUSE (CI variables the pipelines
pass on, as an air-gapped runner would) set to the test root image and wheelhouse, so the base layers are
the ones the rest of the suite builds. The services are named for the run and push under its namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from building import mlctl
from conftest import REGISTRY_NAMESPACE, REPO, run_name, running_registry, untag_namespace
from kube.emulator import FakeCluster
from pipelines import (
    JobRun,
    as_shell_runner,
    drop_images,
    gitlab_ci_local,
    gitlab_job_log,
    index_requirements,
    job_environment,
    mlctl_wheel,
    package_index,
    registry_labels,
    run_workflow,
)
from ruamel.yaml import YAML

pytestmark = [pytest.mark.docker, pytest.mark.slow]
USER, PASSWORD = "ci", "pipeline-s3cret"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[str]:
    """The team's package index: mlctl (this checkout), its dependencies, CPU torch, the service's needs."""
    from mlctl.images import wheels
    from mlctl.reporting import NullReporter

    deps = wheels.download(
        index_requirements(),
        python="3.11",
        platform="linux/amd64",
        cache=REPO / ".cache" / "ci-index",
        index_url=None,
        reporter=NullReporter(),
    )
    built = mlctl_wheel(tmp_path_factory.mktemp("mlctl-wheel"))
    with package_index(tmp_path_factory.mktemp("index"), [built.parent, wheelhouse, deps]) as url:
        yield url


@pytest.fixture(scope="module")
def registry_with_login(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry with htpasswd auth: the build jobs must log in with the pipeline's secrets to push."""
    with warnings.catch_warnings():  # crypt (until Python 3.13): bcrypt through libxcrypt, as htpasswd wants
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    data = tmp_path_factory.mktemp("registry")
    (data / "htpasswd").write_text(f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    with running_registry(data, auth=f"  htpasswd:\n    realm: ci\n    path: {data}/htpasswd\n") as address:
        try:
            yield address
        finally:
            untag_namespace(address)


def new_service(base: Path, name: str, registry: str, ci: str) -> Path:
    """A generated service as its team pushes it: `mlctl new` with the registry, committed (no weights)."""
    result = mlctl(
        base, "new", name, "--set", "accelerator=cpu", "--set", f"registry={registry}/{REGISTRY_NAMESPACE}",
        "--ci", ci, "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    origin = base / name
    assert not (origin / "weights").exists()
    return origin


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with FakeCluster(kube_version="1.31") as kube:
        kube.add_node("cpu-0")
        yield kube


def clone(origin: Path, target: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True, capture_output=True)
    return target


def expected_weights(service: Path) -> str:
    """The digest of the weights the template makes, made here with this machine's torch: the build made
    them in the image's environment, and the same tensors must be the same bytes."""
    package = service.name.replace("-", "_")
    made = subprocess.run(
        [sys.executable, "-c", f"import sys; from {package}.weights import make_weights; make_weights(sys.argv[1])",
         str(service.parent / "expected.pt")],
        cwd=service, capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return "sha256:" + hashlib.sha256((service.parent / "expected.pt").read_bytes()).hexdigest()


def check_build(build: dict[str, Any], registry: str, name: str, weights: str) -> None:
    """The build job's result, held against what the registry has."""
    repository = f"{registry}/{REGISTRY_NAMESPACE}/{name}"
    image = build["image"]
    assert image["repository"] == repository
    assert image["digest"].startswith("sha256:")
    assert build["reference"] == f"{repository}:{image['tag']}@{image['digest']}"
    assert build["dirty"] is False
    assert build["weights"] == weights
    assert image["tag"].endswith(f"-w{weights[7:19]}")  # the weights name the image
    assert {layer["layer"]: layer["status"] for layer in build["layers"]}["service"] == "built"
    labels = registry_labels(registry, f"{REGISTRY_NAMESPACE}/{name}", image["digest"], (USER, PASSWORD))
    assert labels["mlctl.weights"] == weights
    assert labels["mlctl.service"] == name


def check_deploys(cluster: FakeCluster, name: str, build: dict[str, Any], staging: dict, prod: dict) -> None:
    """The deploy jobs' results, held against the cluster's Deployments."""
    reference = build["reference"]
    assert (staging["status"], staging["namespace"], staging["image"]) == ("deployed", f"{name}-staging", reference)
    assert staging["ready"] == staging["desired"] == 1
    # The deploy says which weights run. A deploy job has no build record (a fresh checkout), so it knows them
    # from the image's tag: the 12 digits the build put there.
    assert staging["weights"] == build["weights"][:19]
    assert (prod["status"], prod["namespace"]) == ("deployed", f"{name}-prod")
    assert prod["image"].endswith("@" + build["image"]["digest"])  # the same image, by digest
    assert prod["ready"] == prod["desired"] == 2
    assert prod["weights"] == build["weights"][:19]
    for namespace, replicas in ((f"{name}-staging", 1), (f"{name}-prod", 2)):
        [deployment] = [d for d in cluster.objects("deployments", namespace) if d["metadata"]["name"] == name]
        assert deployment["spec"]["replicas"] == replicas
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].endswith("@" + build["image"]["digest"])


# --- GitLab ------------------------------------------------------------------------------------------------


def test_the_gitlab_pipeline_runs_every_job(
    isolated: Path, index: str, registry_with_login: str, root_image: str, wheelhouse: Path, cluster: FakeCluster
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
        "MLCTL_ROOT_IMAGE": root_image,
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


# --- GitHub ------------------------------------------------------------------------------------------------


def test_the_github_workflow_runs_every_job(
    isolated: Path, index: str, registry_with_login: str, root_image: str, wheelhouse: Path, cluster: FakeCluster
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
        "MLCTL_ROOT_IMAGE": root_image,
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


# --- the service's README ----------------------------------------------------------------------------------


def test_a_fresh_venv_installs_the_service_as_its_readme_says(isolated: Path, index: str) -> None:
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
