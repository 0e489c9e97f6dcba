"""What reaches the engine from a service directory, verified in the images built: no repository
metadata, no credentials in the source label, and no build at all when a file looks like a secret.

The collection logic itself, with the whole hostile corpus, is tested without an engine in
test_context.py; here the road is walked as a user walks it (``mlctl build``), and what the image
holds is read back from the image.
"""

from __future__ import annotations

import json
import random
import string
import subprocess
from pathlib import Path

import pytest
from building import build, build_args, copy_service, git, mlctl, scaffold
from conftest import RUN_LABEL, run_name

from mlctl.errors import ExitCode

pytestmark = [pytest.mark.docker, pytest.mark.slow]
NAME = run_name("svc-ctx")
PACKAGE = NAME.replace("-", "_")
PASSWORD = "p@ss-not-a-real-one"
REMOTE = f"https://deploy:{PASSWORD}@git.example.com/acme/fraud.git?private_token=tok-not-real#readme"
METADATA = {
    ".github/workflows/extra.yml": "on: push\n",
    ".gitlab-ci.yml": "build: {script: [true]}\n",
    ".gitlab/CODEOWNERS": "* @acme\n",
    ".gitlab-ci-local/state.yml": "x: 1\n",
    ".gitattributes": "* text=auto\n",
    ".circleci/config.yml": "version: 2.1\n",
    "Jenkinsfile": "pipeline {}\n",
    f"{PACKAGE}/.gitignore": "*.tmp\n",
    f"{PACKAGE}/.gitkeep": "",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, root_image: str, wheelhouse: Path) -> tuple[Path, dict]:
    """The scaffolded service with repository metadata beside its code and a remote holding a
    password and a token, committed and built once."""
    service = scaffold(tmp_path_factory.mktemp("services"), NAME)
    for name, content in METADATA.items():
        (service / name).parent.mkdir(parents=True, exist_ok=True)
        (service / name).write_text(content)
    git(service, "add", "-A")
    git(service, "commit", "-q", "-m", "metadata")
    git(service, "remote", "add", "origin", REMOTE)
    return service, build(service, root_image, wheelhouse)


def reference(data: dict) -> str:
    return f"{data['image']['repository']}:{data['image']['tag']}"


def files_in_image(image: str) -> list[str]:
    """Every file under the image's /srv (the service's code and weights), read from the image itself."""
    return sorted(line.removeprefix("/srv/") for line in run_in_image(image, "find", "/srv", "-type", "f").splitlines())


def run_in_image(image: str, command: str, *args: str) -> str:
    """What ``command`` prints in a container of ``image`` (removed after; no network)."""
    argv = ["docker", "run", "--rm", "--network", "none", "--label", RUN_LABEL, "--entrypoint", command, image]
    return subprocess.run([*argv, *args], capture_output=True, text=True, check=True).stdout


def test_repository_metadata_stays_out_of_the_image(built: tuple[Path, dict]) -> None:
    service, data = built
    files = files_in_image(reference(data))
    code = [f for f in files if not f.startswith("weights/")]
    assert code == sorted(
        [
            "README.md",
            "mlctl.yaml",
            "pyproject.toml",
            f"{PACKAGE}/__init__.py",
            f"{PACKAGE}/model.py",
            f"{PACKAGE}/server.py",
            f"{PACKAGE}/weights.py",
        ]
    )
    assert files == sorted([*code, "weights/model.pt"])
    # What was left out is there in the service, and git tracks it: left out on purpose, not missed.
    # gitlab-ci-local's state is the exception: the template's .gitignore keeps a local run's state out
    # of git, yet it lies in the directory the build reads, and neither .dockerignore names it.
    ignored = git(service, "check-ignore", "--no-index", *METADATA).splitlines()
    assert ignored == [".gitlab-ci-local/state.yml"]
    patterns = [line for line in (service / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert not [p for p in patterns if ".gitlab-ci-local" in p]  # mlctl's own rule (.git*) leaves it out
    tracked = git(service, "ls-files").splitlines()
    assert {".gitignore", ".dockerignore", ".github/workflows/mlctl.yml", *METADATA} - set(ignored) <= set(tracked)


def test_the_source_label_holds_no_credentials(built: tuple[Path, dict]) -> None:
    _, data = built
    [inspected] = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", reference(data)], capture_output=True, text=True, check=True
        ).stdout
    )
    labels = inspected["Config"]["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://git.example.com/acme/fraud.git"
    everything = json.dumps(inspected)
    for part in (PASSWORD, "p@ss", "ss-not-a-real-one", "deploy:", "private_token", "tok-not-real", "readme"):
        assert part not in everything, part


def secrets_for(service: Path) -> dict[str, str]:
    """Fake credentials: two by path, one by content (assembled here, so the repository holds none)."""
    key = "".join(random.Random(3).choice(string.ascii_uppercase + string.digits) for _ in range(16))
    return {
        "deploy/.kube/config": "apiVersion: v1\nkind: Config\n",
        "config/prod.env": "API_TOKEN=not-real\n",
        f"{PACKAGE}/settings.py": f'import os\n\nAWS_KEY = "AKIA{key}"\n',
    }


def test_files_that_look_like_secrets_stop_the_build_before_anything_is_built(
    built: tuple[Path, dict], root_image: str, wheelhouse: Path, tmp_path: Path
) -> None:
    service = copy_service(built[0], tmp_path / NAME)
    for name, content in secrets_for(service).items():
        (service / name).parent.mkdir(parents=True, exist_ok=True)
        (service / name).write_text(content)
    record = {p: p.read_bytes() for p in (service / ".mlctl").rglob("*") if p.is_file()}
    images = image_ids()

    result = mlctl(service, *build_args(root_image, wheelhouse))
    assert result.exit_code == ExitCode.INPUT == 4
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "hint:"))]
    assert errors == [
        "error: secret in the build context: config/prod.env (an environment file)",
        "error: secret in the build context: deploy/.kube/config (a kubeconfig)",
        f"error: secret in the build context: {PACKAGE}/settings.py:3 (detect-secrets found: AWS Access Key)",
        "hint: nothing was built; leave them out with .dockerignore, or pass --allow-secrets PATH for each file "
        "that is meant to ship (detect-secrets lets a line ending in '# pragma: allowlist secret' pass)",
    ]
    assert "not-real" not in result.stderr
    assert "AKIA" not in result.stderr

    as_json = mlctl(service, *build_args(root_image, wheelhouse), "--json")
    assert as_json.exit_code == 4
    error = json.loads(as_json.stdout)["error"]
    assert (error["type"], [s["path"] for s in error["secrets"]]) == (
        "SecretsFound",
        ["config/prod.env", "deploy/.kube/config", f"{PACKAGE}/settings.py"],
    )
    # Nothing built, nothing recorded.
    assert image_ids() == images
    assert {p: p.read_bytes() for p in (service / ".mlctl").rglob("*") if p.is_file()} == record


def test_allow_secrets_lets_in_the_files_it_names_and_only_those(
    built: tuple[Path, dict], root_image: str, wheelhouse: Path, tmp_path: Path
) -> None:
    service = copy_service(built[0], tmp_path / NAME)
    secrets = secrets_for(service)
    for name, content in secrets.items():
        (service / name).parent.mkdir(parents=True, exist_ok=True)
        (service / name).write_text(content)
    allow = ["--allow-secrets", "config/prod.env", "--allow-secrets", f"{PACKAGE}/settings.py"]
    refused = mlctl(service, *build_args(root_image, wheelhouse), *allow)
    assert refused.exit_code == 4
    assert [line for line in refused.stderr.splitlines() if line.startswith("error:")] == [
        "error: secret in the build context: deploy/.kube/config (a kubeconfig)"
    ]
    data = build(service, root_image, wheelhouse, *allow, "--allow-secrets", "deploy/")
    files = files_in_image(reference(data))
    assert {"config/prod.env", "deploy/.kube/config", f"{PACKAGE}/settings.py"} <= set(files)
    assert run_in_image(reference(data), "cat", "/srv/config/prod.env") == secrets["config/prod.env"]


def image_ids() -> set[str]:
    """The images of this module's service on the engine (every tag, dirty ones too)."""
    done = subprocess.run(
        ["docker", "images", "-q", "--no-trunc", "--filter", f"label=mlctl.service={NAME}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.split())
