"""``mlctl ci generate``: the pipeline files, parsed as the CI systems parse them (YAML 1.2), their job
graph, their conditions, and every mlctl command in them checked against mlctl's own parser."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REGISTRY = "ghcr.io/acme"


@pytest.fixture
def svc(service: Path) -> Path:
    path = service / "mlctl.yaml"
    path.write_text(path.read_text().replace('registry: ""', f"registry: {REGISTRY}"))
    assert f"registry: {REGISTRY}" in path.read_text()
    return service


def generate(cli: Any, svc: Path, *args: str) -> Any:
    result = cli("-C", str(svc), "--json", "ci", "generate", *args)
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def mlctl_commands(text: str) -> list[list[str]]:
    """Every mlctl invocation in a pipeline, as argv (CI expressions replaced by a placeholder)."""
    commands = []
    for line in text.splitlines():
        found = re.search(r"(?:^|run: |- )(mlctl .*)$", line.strip())
        if not found:
            continue
        command = re.sub(r"\$\{\{[^}]*\}\}|\$[A-Z_]+", "VALUE", found.group(1)).split(" > ")[0]
        commands.append(shlex.split(command)[1:])
    return commands


def assert_valid(path: Path, schema: str) -> None:
    """The CI system's own schema (vendored by check-jsonschema from SchemaStore)."""
    checked = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def assert_commands_parse(cli: Any, svc: Path, commands: list[list[str]]) -> None:
    for argv in commands:
        result = cli("-C", str(svc), *argv, "--help")  # options are parsed (and refused if unknown) before --help
        assert result.exit_code == 0, f"mlctl {' '.join(argv)}: {result.stderr}"


def test_github_pipeline(cli: Any, svc: Path) -> None:
    # mlctl new wrote it before the registry was set; unedited, it is simply brought up to date
    result = generate(cli, svc, "--provider", "github")
    assert (result["path"], result["status"], result["warnings"]) == (".github/workflows/mlctl.yml", "replaced", [])
    path = svc / ".github/workflows/mlctl.yml"
    workflow = load(path)
    assert workflow["on"]["push"] == {"branches": ["main"], "tags": ["v*"]}
    jobs = workflow["jobs"]
    assert {name: job.get("needs") for name, job in jobs.items()} == {
        "test": None,
        "build": "test",
        "deploy-staging": "build",
        "promote-prod": "test",
    }
    assert jobs["deploy-staging"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert jobs["promote-prod"]["if"] == "github.event_name == 'push' && startsWith(github.ref, 'refs/tags/v')"
    assert (jobs["deploy-staging"]["environment"], jobs["promote-prod"]["environment"]) == ("staging", "prod")

    def runs(job: str) -> str:
        return "\n".join(step.get("run", "") for step in jobs[job]["steps"])

    assert "python -m pytest" in runs("test")
    assert "mlctl config validate" in runs("test")
    assert jobs["test"]["steps"][1]["with"]["python-version"] == "3.11"
    assert 'docker login "ghcr.io" -u "${{ secrets.REGISTRY_USERNAME }}" --password-stdin' in runs("build")
    assert "mlctl --json build --push > build.json" in runs("build")
    assert jobs["build"]["outputs"]["image"] == "${{ steps.build.outputs.image }}"
    assert 'mlctl --json deploy --env staging --image "${{ needs.build.outputs.image }}" --require-digest' in runs(
        "deploy-staging"
    )
    assert "mlctl --json promote --from staging --to prod > promote-prod.json" in runs("promote-prod")
    artifacts = {
        name: [s["with"]["path"] for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
        for name, job in jobs.items()
    }
    assert artifacts == {
        "test": [],
        "build": ["build.json"],
        "deploy-staging": ["deploy-staging.json"],
        "promote-prod": ["promote-prod.json"],
    }
    assert_valid(path, "vendor.github-workflows")
    text = path.read_text()
    assert "secrets.KUBECONFIG" in text
    assert "password" not in text.lower().replace("registry_password", "").replace("password-stdin", "")
    assert_commands_parse(cli, svc, mlctl_commands(text))


def test_gitlab_pipeline(cli: Any, svc: Path) -> None:
    generate(cli, svc, "--provider", "gitlab", "--branch", "trunk")
    path = svc / ".gitlab-ci.yml"
    pipeline = load(path)
    assert pipeline["stages"] == ["test", "build", "deploy", "promote"]
    jobs = {name: job for name, job in pipeline.items() if isinstance(job, dict) and "stage" in job}
    assert {name: (job["stage"], job.get("needs")) for name, job in jobs.items()} == {
        "test": ("test", None),
        "build": ("build", ["test"]),
        "deploy-staging": ("deploy", ["build"]),
        "promote-prod": ("promote", ["test"]),
    }
    assert jobs["deploy-staging"]["rules"] == [{"if": '$CI_COMMIT_BRANCH == "trunk"'}]
    assert jobs["promote-prod"]["rules"] == [{"if": "$CI_COMMIT_TAG =~ /^v/"}]
    assert jobs["build"]["tags"] == ["docker"]  # on the Docker host: the build reaches its wheelhouse on loopback
    assert jobs["build"]["artifacts"]["reports"] == {"dotenv": "build.env"}
    assert (
        'mlctl --json deploy --env staging --image "$IMAGE" --require-digest > deploy-staging.json'
        in (jobs["deploy-staging"]["script"])
    )
    for name, artefact in (("build", "build.json"), ("deploy-staging", "deploy-staging.json")):
        assert jobs[name]["artifacts"]["paths"] == [artefact]
        assert jobs[name]["artifacts"]["when"] == "always"
    assert pipeline["default"]["image"] == "python:3.11-bookworm"
    assert_valid(path, "vendor.gitlab-ci")
    assert_commands_parse(cli, svc, mlctl_commands(path.read_text()))


def test_regenerating(cli: Any, svc: Path) -> None:
    generate(cli, svc, "--provider", "gitlab")
    assert generate(cli, svc, "--provider", "gitlab")["status"] == "unchanged"
    path = svc / ".gitlab-ci.yml"
    path.write_text(path.read_text() + "\n# a hand edit\n")
    refused = cli("-C", str(svc), "ci", "generate", "--provider", "gitlab")
    assert refused.exit_code == 5
    assert ".gitlab-ci.yml was edited since mlctl wrote it" in refused.stderr
    assert path.read_text().endswith("# a hand edit\n")
    preview = cli("-C", str(svc), "ci", "generate", "--provider", "gitlab", "--dry-run", "--force")
    assert preview.exit_code == 0
    assert "stages: [test, build, deploy, promote]" in preview.stdout
    assert ".gitlab-ci.yml: would be replaced" in preview.stdout
    assert path.read_text().endswith("# a hand edit\n")
    assert generate(cli, svc, "--provider", "gitlab", "--force")["status"] == "replaced"
    assert "# a hand edit" not in path.read_text()


def test_what_the_pipeline_still_needs_is_said(cli: Any, service: Path) -> None:
    result = cli("-C", str(service), "ci", "generate")
    assert result.exit_code == 0
    assert "image.registry is empty in mlctl.yaml: the build job cannot push until it is set" in result.stderr
    path = service / "mlctl.yaml"
    path.write_text(path.read_text().split("\nenvironments:", 1)[0] + "\n")
    again = cli("-C", str(service), "ci", "generate", "--force")
    assert "has no environments.staging or environments.prod" in again.stderr
    unknown = cli("-C", str(service), "ci", "generate", "--provider", "jenkins")
    assert unknown.exit_code == 4
    assert "--provider jenkins: mlctl writes pipelines for github, gitlab" in unknown.stderr


def test_new_writes_the_pipeline(cli: Any, isolated: Path) -> None:
    assert cli("new", "gl-svc", "--ci", "gitlab", "--no-git").exit_code == 0
    assert (isolated / "gl-svc" / ".gitlab-ci.yml").is_file()
    assert not (isolated / "gl-svc" / ".github").exists()
    assert cli("new", "no-ci", "--ci", "none", "--no-git").exit_code == 0
    assert not (isolated / "no-ci" / ".gitlab-ci.yml").exists()
    assert not (isolated / "no-ci" / ".github").exists()
    bad = cli("new", "bad-ci", "--ci", "travis", "--no-git")
    assert bad.exit_code == 4
    assert not (isolated / "bad-ci").exists()
    # what new writes is what ci generate writes
    assert cli("-C", str(isolated / "gl-svc"), "ci", "generate", "--provider", "gitlab").stdout.endswith("unchanged\n")
