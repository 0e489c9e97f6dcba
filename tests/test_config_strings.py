"""Strings of mlctl.yaml that land in other formats: runtime versions (ASCII digits only) and
``image.registry`` (Docker's reference grammar, host[:port][/path]), and the CI pipelines it is
written into."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from mlctl.ci.pipeline import render_ci
from mlctl.config import ServiceConfig, load_service_config, registry_problem
from mlctl.errors import ConfigError

MINIMAL = "name: fraud-scorer\nserving:\n  app: fraud_scorer.server:app\n"


def problems(text: str) -> list[str]:
    (Path.cwd() / "mlctl.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_service_config()
    return caught.value.lines()


# --- runtime versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["python", "torch", "cuda"])
@pytest.mark.parametrize(
    "version",
    [
        "\u0663.\u0661\u0661",  # Arabic-Indic digits: Python's \d takes them, pip and the matrix do not
        "\u0968.\u0967\u0969.\u0966",  # Devanagari
        "\uff13.\uff11\uff11",  # fullwidth
        "3.11\n",  # '$' matched before a final newline
        "3.\U0001d7d9\U0001d7d9",  # mathematical digits
    ],
)
def test_versions_take_ascii_digits_only(key: str, version: str) -> None:
    import json

    text = MINIMAL + f"runtime:\n  {key}: {json.dumps(version, ensure_ascii=False)}\n"
    [line] = problems(text)
    assert (
        line == f"mlctl.yaml:5 runtime.{key}: {version!r} is not a version like 3.11 or 2.13.0 (ASCII digits and dots)"
    )


def test_ascii_versions_still_pass() -> None:
    (Path.cwd() / "mlctl.yaml").write_text(MINIMAL + 'runtime:\n  python: "3.12"\n  torch: 2.13.0\n  cuda: "12.8"\n')
    runtime = load_service_config().config.runtime
    assert (runtime.python, runtime.torch, runtime.cuda) == ("3.12", "2.13.0", "12.8")


# --- image.registry --------------------------------------------------------------------------------------

VALID = [
    "ghcr.io",
    "ghcr.io/acme",
    "ghcr.io/acme/ml-team/models",
    "registry.example.com:5000/a_b/c__d/e---f/g.h",
    "localhost:5000",
    "localhost",
    "127.0.0.1:5000/acme",
    "[::1]:5000/acme",
    "Registry.Example.COM/acme",  # host names are not case-sensitive; Docker's grammar allows capitals there
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    "europe-west4-docker.pkg.dev/my-project/my-repo",
]


@pytest.mark.parametrize("registry", VALID)
def test_registries_docker_takes_pass(registry: str) -> None:
    assert registry_problem(registry) is None


def test_a_trailing_slash_is_dropped() -> None:
    (Path.cwd() / "mlctl.yaml").write_text(MINIMAL + "image:\n  registry: ghcr.io/acme/\n")
    config = load_service_config().config
    assert (config.image.registry, config.image_repository) == ("ghcr.io/acme", "ghcr.io/acme/fraud-scorer")


NOT_A_HOST = " is not a registry host (host[:port], e.g. ghcr.io or registry.local:5000)"
NOT_A_COMPONENT = " is not a path component (lowercase letters and digits, joined by '.', '_' or '-')"


@pytest.mark.parametrize(
    ("registry", "problem"),
    [
        (
            "https://ghcr.io/acme",
            "'https://ghcr.io/acme' holds a scheme: write the registry without it, e.g. ghcr.io/acme",
        ),
        (
            "acme",
            "'acme': Docker reads a first part without '.' or ':' (other than localhost) as a Docker Hub namespace, "
            "not a registry: write docker.io/acme for Docker Hub",
        ),
        (
            "ghcr.io/Acme",
            "'ghcr.io/Acme': 'Acme' is not lowercase (lowercase letters and digits, joined by '.', '_' or '-')",
        ),
        ("ghcr.io/acme//x", "'ghcr.io/acme//x': ''" + NOT_A_COMPONENT),
        ("ghcr.io/-acme", "'ghcr.io/-acme': '-acme'" + NOT_A_COMPONENT),
        ("ghcr.io:99999", "'ghcr.io:99999': port 99999 is not from 1 to 65535"),
        ("ghcr.io:0/x", "'ghcr.io:0/x': port 0 is not from 1 to 65535"),
        ("ghcr.io:", "'ghcr.io:': 'ghcr.io:'" + NOT_A_HOST),
        ("gh cr.io", "'gh cr.io': 'gh cr.io'" + NOT_A_HOST),
        ("-ghcr.io", "'-ghcr.io': '-ghcr.io'" + NOT_A_HOST),
        ("user:pw@ghcr.io", "'user:pw@ghcr.io': 'user:pw@ghcr.io'" + NOT_A_HOST),
        ("ghcr.io/a'b", '"ghcr.io/a\'b": "a\'b"' + NOT_A_COMPONENT),
        ("ghcr.io/$(id)", "'ghcr.io/$(id)': '$(id)'" + NOT_A_COMPONENT),
        ("ghcr.io/${{ github.token }}", "'ghcr.io/${{ github.token }}': '${{ github.token }}'" + NOT_A_COMPONENT),
        ("ghcr.io\n#", "'ghcr.io\\n#': 'ghcr.io\\n#'" + NOT_A_HOST),
        (
            "\u0661\u0662\u0667.0.0.1:5000",
            "'\u0661\u0662\u0667.0.0.1:5000': '\u0661\u0662\u0667.0.0.1:5000'" + NOT_A_HOST,
        ),
        (
            "ghcr.io:\u0665\u0660\u0660\u0660",
            "'ghcr.io:\u0665\u0660\u0660\u0660': 'ghcr.io:\u0665\u0660\u0660\u0660'" + NOT_A_HOST,
        ),
        (
            "ghcr.io/" + "a" * 200,
            "'ghcr.io/" + "a" * 72 + "'... is longer than 200 characters (an image name may have 255, "
            "the repository included)",
        ),
    ],
)
def test_registries_docker_refuses_are_a_config_error_naming_the_line(registry: str, problem: str) -> None:
    import json

    assert registry_problem(registry) == problem
    assert problems(MINIMAL + f"image:\n  registry: {json.dumps(registry, ensure_ascii=False)}\n") == [
        f"mlctl.yaml:5 image.registry: {problem}"
    ]


def test_a_registry_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    (Path.cwd() / "mlctl.yaml").write_text(MINIMAL)
    monkeypatch.setenv("MLCTL_CONFIG__IMAGE__REGISTRY", "https://ghcr.io/acme")
    with pytest.raises(ConfigError) as caught:
        load_service_config()
    assert any("holds a scheme" in line for line in caught.value.lines())


# --- whatever passes lands safely in the CI pipelines -------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_component = st.from_regex(r"\A[a-z0-9]{1,8}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,8}){0,2}\Z")
_dns = st.from_regex(r"\A[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?\Z")
_host = st.one_of(
    st.builds(lambda parts: ".".join(parts), st.lists(_dns, min_size=2, max_size=4)),
    st.just("localhost"),
    st.builds(lambda a: f"[{a}]", st.ip_addresses(v=6).map(str)),
)
_registries = st.builds(
    lambda host, port, path: host + (f":{port}" if port else "") + "".join(f"/{p}" for p in path),
    _host,
    st.one_of(st.none(), st.integers(1, 65535)),
    st.lists(_component, max_size=3),
).filter(lambda r: len(r) <= 200)


def pipelines(registry: str) -> tuple[dict, dict, str, str]:
    config = ServiceConfig.model_validate(
        {"name": "fraud-scorer", "serving": {"app": "fraud_scorer.server:app"}, "image": {"registry": registry}}
    )
    github, gitlab = render_ci(config, "github"), render_ci(config, "gitlab")
    yaml = YAML(typ="safe")
    return yaml.load(github), yaml.load(gitlab), github, gitlab


@settings(max_examples=60, deadline=None)
@given(registry=_registries)
def test_every_registry_that_passes_is_data_in_the_pipelines(registry: str) -> None:
    assert registry_problem(registry) is None
    host = registry.split("/")[0]
    github, gitlab, github_text, gitlab_text = pipelines(registry)
    login = next(s for s in github["jobs"]["build"]["steps"] if s.get("name") == "Log in to the registry")
    assert login["env"]["REGISTRY"] == host
    assert gitlab["build"]["variables"]["REGISTRY_HOST"] == host
    for text in (github_text, gitlab_text):  # the comment that names it stays one comment line
        [comment] = [line for line in text.splitlines() if "push access to" in line]
        assert comment == f"#   REGISTRY_USERNAME, REGISTRY_PASSWORD  build: push access to {host}"


@settings(max_examples=300, deadline=None)
@given(registry=st.text(max_size=40))
def test_arbitrary_text_is_refused_or_lands_as_data(registry: str) -> None:
    if registry_problem(registry) is not None:
        return
    host = registry.rstrip("/").split("/")[0]
    github, gitlab, _, _ = pipelines(registry)
    login = next(s for s in github["jobs"]["build"]["steps"] if s.get("name") == "Log in to the registry")
    assert login["env"]["REGISTRY"] == gitlab["build"]["variables"]["REGISTRY_HOST"] == host
    assert set(registry) <= set(_ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-_:/[]")


@pytest.mark.parametrize("registry", ["[::1]:5000/a_b", "registry.example.com:5000/x__y/z---w", "localhost"])
def test_edge_registries_give_workflows_actionlint_finds_nothing_in(tmp_path: Path, registry: str) -> None:
    _, _, github_text, gitlab_text = pipelines(registry)
    workflow = tmp_path / ".github" / "workflows" / "mlctl.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(github_text)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(bin_dir / "actionlint"), "-no-color", "-shellcheck", "shellcheck", str(workflow)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    gitlab = tmp_path / ".gitlab-ci.yml"
    gitlab.write_text(gitlab_text)
    checked = subprocess.run(
        [str(bin_dir / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(gitlab)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
