"""``mlctl ci generate``: the pipeline files, parsed as the CI systems parse them (YAML 1.2), their job
graph, their conditions, and every mlctl command in them checked against mlctl's own parser."""

from __future__ import annotations

import json
import os
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
    login = next(step for step in jobs["build"]["steps"] if step.get("name") == "Log in to the registry")
    assert login["env"]["REGISTRY"] == "ghcr.io"
    assert 'docker login "$REGISTRY" -u "$REGISTRY_USERNAME" --password-stdin' in login["run"]
    assert "mlctl --json build --push > build.json" in runs("build")
    assert jobs["build"]["outputs"]["image"] == "${{ steps.build.outputs.image }}"
    assert 'mlctl --json deploy --env staging --image "$IMAGE" --require-digest' in runs("deploy-staging")
    assert "mlctl --json promote --from staging --to prod --yes > promote-prod.json" in runs("promote-prod")
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
    # The jobs' image is a variable (a team's mirror of it where runners cannot reach Docker Hub); the build
    # job has none: it runs on a shell runner on the Docker host.
    assert pipeline["variables"]["MLCTL_CI_IMAGE"] == "python:3.11-bookworm"
    assert {name: job.get("extends") for name, job in jobs.items()} == {
        "test": ".python",
        "build": None,
        "deploy-staging": ".cluster",
        "promote-prod": ".cluster",
    }
    assert pipeline[".python"]["image"] == pipeline[".cluster"]["image"] == "$MLCTL_CI_IMAGE"
    assert "image" not in jobs["build"]
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


# --- GitHub's and GitLab's security guidance, and hostile branches ----------------------------------------

ACTIONLINT = Path(sys.executable).parent / "actionlint"


def actionlint(path: Path) -> str:
    """actionlint's findings on a workflow, with shellcheck checking every run: script (both from PyPI)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(ACTIONLINT), "-no-color", "-shellcheck", "shellcheck", str(path)], capture_output=True, text=True, env=env
    )
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0 else f"\n(exit {done.returncode})")


def test_the_github_workflow_follows_the_security_guidance(cli: Any, svc: Path) -> None:
    generate(cli, svc, "--provider", "github")
    path = svc / ".github/workflows/mlctl.yml"
    text = path.read_text()
    workflow = load(path)
    assert workflow["permissions"] == {}  # nothing by default ...
    for name, job in workflow["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name  # ... and each job reads the code, no more
        for step in job["steps"]:
            # Secrets and outputs reach scripts through env:, never expanded into the script's text.
            assert "${{" not in step.get("run", ""), (name, step)
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                assert re.fullmatch(r"[0-9a-f]{40}", ref), step["uses"]  # pinned by commit
                assert re.search(rf"uses: {re.escape(step['uses'])} # v\d+\.\d+\.\d+\n", text)  # its version
                if action == "actions/checkout":
                    assert step["with"]["persist-credentials"] is False  # no token left in .git/config
    secrets = re.findall(r"^\s*(.*)\$\{\{ secrets\.", text, flags=re.M)
    assert secrets
    assert all(re.fullmatch(r"[A-Z_]+: ", prefix) for prefix in secrets), secrets  # only as env: values
    assert actionlint(path) == ""


def test_the_pinned_actions_are_the_commits_of_their_releases() -> None:
    from mlctl.ci.pipeline import GITHUB_ACTIONS

    # Written down when they were pinned (the commits the releases' tags point at):
    assert GITHUB_ACTIONS == {
        "checkout": "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "setup_python": "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97 # v7.0.0",
        "upload_artifact": "actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f # v7.0.0",
    }


def github_filter_literal(pattern: str) -> str:
    """What a GitHub branch filter matches when it holds no wildcard: GitHub's filter syntax escapes its
    special characters (*, ?, +, [, ], !) with a backslash; an unescaped one would make it a pattern."""
    out, escaped = [], False
    for c in pattern:
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        else:
            assert c not in "*?+[]", f"unescaped {c!r} in {pattern!r}"
            assert c != "!" or out, f"a leading ! negates {pattern!r}"
            out.append(c)
    return "".join(out)


def github_string(literal: str) -> str:
    """A GitHub expression string literal's value: single-quoted, '' stands for one quote."""
    assert literal.startswith("'")
    assert literal.endswith("'")
    body = literal[1:-1]
    assert "'" not in body.replace("''", ""), literal
    return body.replace("''", "'")


def gitlab_string(literal: str) -> str:
    """A GitLab rules expression string's value: in single or double quotes, without escapes (GitLab's
    String lexeme), so the quote used cannot occur inside."""
    quote = literal[0]
    assert quote in "'\""
    assert literal.endswith(quote)
    assert quote not in literal[1:-1]
    return literal[1:-1]


HOSTILE_BRANCHES = ["x'||true||'", "rel+1", "!neg", 'a"b', "feat/$(id)", "ü-branch", "a|b&c", "`id`", "x}}{{y"]


@pytest.mark.parametrize("branch", ["main", "release/1.2", *HOSTILE_BRANCHES])
def test_a_branch_git_takes_deploys_exactly_that_branch(cli: Any, svc: Path, branch: str) -> None:
    valid = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True).returncode == 0
    assert valid, branch  # each is a name git takes
    generate(cli, svc, "--provider", "github", "--branch", branch, "--force")
    path = svc / ".github/workflows/mlctl.yml"
    workflow = load(path)
    (pattern,) = workflow["on"]["push"]["branches"]
    assert github_filter_literal(pattern) == branch
    condition = workflow["jobs"]["deploy-staging"]["if"]
    prefix = "github.event_name == 'push' && github.ref == "
    assert condition.startswith(prefix)
    assert github_string(condition[len(prefix) :]) == f"refs/heads/{branch}"
    assert actionlint(path) == ""
    assert_valid(path, "vendor.github-workflows")

    generate(cli, svc, "--provider", "gitlab", "--branch", branch, "--force")
    gitlab = svc / ".gitlab-ci.yml"
    rule = load(gitlab)["deploy-staging"]["rules"][0]["if"]
    assert rule.startswith("$CI_COMMIT_BRANCH == ")
    assert gitlab_string(rule[len("$CI_COMMIT_BRANCH == ") :]) == branch
    assert_valid(gitlab, "vendor.gitlab-ci")


@pytest.mark.parametrize(
    ("branch", "problem"),
    [
        ("x' || true || '", "must not contain ' ' (git refuses them in branch names)"),
        ("a..b", "must not contain '..'"),
        ("a~1", "must not contain '~' (git refuses them in branch names)"),
        ("a:b", "must not contain ':' (git refuses them in branch names)"),
        ("a*", "must not contain '*' (git refuses them in branch names)"),
        ("a[1]", "must not contain '[' (git refuses them in branch names)"),
        ("a\\b", "must not contain '\\\\' (git refuses them in branch names)"),
        ("/a", "must not start or end with '/' or hold '//'"),
        ("a//b", "must not start or end with '/' or hold '//'"),
        ("a.", "must not end with '.'"),
        ("a/.b", "has a part starting with '.' ('.b')"),
        ("a.lock", "has a part ending with '.lock' ('a.lock')"),
        ("a@{1}", "must not contain '@{'"),
        ("-x", "must not start with '-'"),
        ("HEAD", "cannot be 'HEAD'"),
        ("main\nnext", "must not contain '\\n' (git refuses them in branch names)"),
        ("", "must not be empty"),
    ],
)
def test_a_branch_git_refuses_is_refused(cli: Any, svc: Path, branch: str, problem: str) -> None:
    git = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True)
    assert git.returncode != 0  # git check-ref-format agrees
    before = (svc / ".github/workflows/mlctl.yml").read_text()
    result = cli("-C", str(svc), "ci", "generate", "--branch", branch, "--force")
    assert result.exit_code == 4
    from mlctl.scaffold.templates import shown

    assert result.stderr.splitlines()[0] == f"error: --branch {shown(branch)}: {problem}"
    assert (svc / ".github/workflows/mlctl.yml").read_text() == before


def test_a_branch_gitlab_cannot_quote_is_refused_for_gitlab_only(cli: Any, svc: Path) -> None:
    branch = 'it\'s-"quoted"'
    generate(cli, svc, "--provider", "github", "--branch", branch, "--force")
    result = cli("-C", str(svc), "ci", "generate", "--provider", "gitlab", "--branch", branch)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == (
        f"error: --branch {branch}: holds both ' and \", which a GitLab rules expression cannot quote"
    )
    assert not (svc / ".gitlab-ci.yml").exists()


def test_a_branch_github_would_read_as_an_expression_is_refused_for_github_only(cli: Any, svc: Path) -> None:
    before = (svc / ".github/workflows/mlctl.yml").read_text()
    result = cli("-C", str(svc), "ci", "generate", "--branch", "x${{ secrets.KUBECONFIG }}", "--force")
    assert result.exit_code == 4  # git refuses the spaces: this one never reaches the workflow
    result = cli("-C", str(svc), "ci", "generate", "--branch", "x${{secrets.KUBECONFIG}}", "--force")
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == (
        "error: --branch x${{secrets.KUBECONFIG}}: holds '${{', which GitHub reads as the start of an expression "
        "wherever it is"
    )
    assert (svc / ".github/workflows/mlctl.yml").read_text() == before
    generate(cli, svc, "--provider", "gitlab", "--branch", "x${{secrets.KUBECONFIG}}")
    rule = load(svc / ".gitlab-ci.yml")["deploy-staging"]["rules"][0]["if"]
    assert rule == '$CI_COMMIT_BRANCH == "x${{secrets.KUBECONFIG}}"'


def test_gitlab_keeps_secrets_in_variables(cli: Any, svc: Path) -> None:
    generate(cli, svc, "--provider", "gitlab")
    path = svc / ".gitlab-ci.yml"
    pipeline = load(path)
    build = pipeline["build"]
    assert build["variables"] == {"REGISTRY_HOST": "ghcr.io"}
    assert (
        'printf \'%s\' "$REGISTRY_PASSWORD" | docker login "$REGISTRY_HOST" -u "$REGISTRY_USERNAME" '
        "--password-stdin" in build["script"]
    )
    assert "REGISTRY_PASSWORD:" not in path.read_text()  # never a value in the file
