"""mlctl.yaml: validation with file, line and key path; environments; MLCTL_CONFIG__ overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlctl.config import load_service_config
from mlctl.errors import ConfigError, ExitCode, NotAServiceError, NotFoundError

MINIMAL = """\
name: fraud-scorer
serving:
  app: fraud_scorer.server:app
"""


def write(text: str, directory: Path | None = None) -> Path:
    directory = directory or Path.cwd()
    path = directory / "mlctl.yaml"
    path.write_text(text)
    return path


def problems(text: str) -> list[str]:
    write(text)
    with pytest.raises(ConfigError) as caught:
        load_service_config()
    return caught.value.lines()


def test_minimal_config_gets_the_documented_defaults() -> None:
    write(MINIMAL)
    config = load_service_config().config
    assert config.runtime.accelerator == "cuda"
    assert config.serving.port == 8080
    assert config.resources.gpu.count == 0
    assert config.resources.memory == "4Gi"
    assert config.image_repository == "fraud-scorer"


def test_found_from_a_subdirectory() -> None:
    write(MINIMAL)
    (Path.cwd() / "deep" / "er").mkdir(parents=True)
    loaded = load_service_config(Path.cwd() / "deep" / "er")
    assert loaded.path == Path.cwd() / "mlctl.yaml"


def test_outside_a_service() -> None:
    with pytest.raises(NotAServiceError, match=r"no mlctl.yaml in .* or any parent"):
        load_service_config()


def test_every_problem_is_listed_with_line_and_key_path() -> None:
    text = """\
name: fraud-scorer
runtime:
  accelerator: gpu
serving:
  app: fraud_scorer.server:app
  port: http
  max_batch_sise: 8
resources:
  gpu:
    count: -1
  memory: lots
deploy:
  replicas: 1.5
"""
    assert problems(text) == [
        "mlctl.yaml:3 runtime.accelerator: must be one of 'cuda' or 'cpu', got 'gpu'",
        "mlctl.yaml:6 serving.port: must be an integer, got 'http'",
        "mlctl.yaml:7 serving.max_batch_sise: unknown key (did you mean 'max_batch_size'?)",
        "mlctl.yaml:10 resources.gpu.count: must be >= 0, got -1",
        "mlctl.yaml:11 resources.memory: 'lots' is not a Kubernetes quantity (examples: 2, 500m, 8Gi)",
        "mlctl.yaml:13 deploy.replicas: must be an integer, got 1.5",
    ]


def test_unknown_top_level_key_lists_the_known_ones_when_nothing_is_close() -> None:
    assert problems(MINIMAL + "zebra: 1\n") == [
        "mlctl.yaml:4 zebra: unknown key (known keys: name, template, runtime, model, serving, resources, "
        "probes, image, deploy, environments)"
    ]


def test_missing_required_keys() -> None:
    assert problems("serving:\n  port: 8080\n") == [
        "mlctl.yaml name: required key is missing",
        "mlctl.yaml:1 serving.app: required key is missing",
    ]


def test_invalid_names() -> None:
    assert problems(MINIMAL.replace("fraud-scorer", "Fraud_Scorer")) == [
        "mlctl.yaml:1 name: service name 'Fraud_Scorer' contains '_'; use '-' between words"
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "name: x\n  bad: [\n",
            "mlctl.yaml:2:3: invalid YAML: indented too far: this line reads as more of the value on line 1",
        ),
        (
            "name: a\nname: b\n",
            'mlctl.yaml:2: invalid YAML: duplicate key "name" (first on line 1)',
        ),
        ("- a\n- b\n", "mlctl.yaml:1: the top level must be a mapping of keys, got a list"),
        ("serving: [1\n", "mlctl.yaml:1:10: invalid YAML: this '[' is not closed (the file ends first)"),
    ],
)
def test_yaml_syntax_errors_name_the_line(text: str, line: str) -> None:
    assert problems(text) == [line]


# The parser stops at the first token it cannot take, which is often on the line after the mistake
# (ruamel's problem mark); each case is a mistake people make, located where it is in the file.
@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(
            "name: x\nserving:\n  port 8080\n  max_batch_size: 16\n",
            "mlctl.yaml:3:3: invalid YAML: a ':' is missing after this key (line 4 reads as more of it)",
            id="missing-colon",  # the parser stops on line 4
        ),
        pytest.param(
            "name: x\nserving:\n  port: 8080\n  max_batch_size\n  workers: 2\n",
            "mlctl.yaml:4:3: invalid YAML: a ':' is missing after this key",
            id="key-alone",  # the parser stops on line 5
        ),
        pytest.param(
            'name: "x\nserving:\n  port: 8080\n',
            "mlctl.yaml:1:7: invalid YAML: this quoted text is not closed (the file ends first)",
            id="unclosed-quote",  # the parser stops at the end of the file
        ),
        pytest.param(
            "name: x\nlist: [a, b\nserving:\n  port: 8080\n",
            "mlctl.yaml:2:7: invalid YAML: this '[' is not closed: expected ',' or ']', but got ':' at line 3, "
            "column 8",
            id="unclosed-bracket",
        ),
        pytest.param(
            "name: x\nserving:\n  port: 8080\n   max_batch_size: 16\n",
            "mlctl.yaml:4:4: invalid YAML: indented too far: this line reads as more of the value on line 3",
            id="indented-too-far",
        ),
        pytest.param(
            "name: x\nserving:\n    port: 8080\n  max_batch_size: 1\n",
            "mlctl.yaml:4:3: invalid YAML: this line lines up with no key above it (check its indentation)",
            id="indented-too-little",
        ),
        pytest.param(
            "name: x\ndescription: a: b\n",
            "mlctl.yaml:2:15: invalid YAML: a ':' is not allowed here (quote a value that holds ': ')",
            id="colon-in-value",
        ),
        pytest.param(
            "name: x\nserving:\n\tport: 8080\n",
            "mlctl.yaml:3:1: invalid YAML: a tab cannot indent YAML; indent with spaces",
            id="tab",
        ),
    ],
)
def test_yaml_syntax_errors_point_at_the_mistake(text: str, line: str) -> None:
    assert problems(text) == [line]


def test_a_yaml_error_quotes_the_line_with_a_caret_under_the_column(cli, service) -> None:
    path = service / "mlctl.yaml"
    lines = path.read_text().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if line.startswith("  max_batch_size: "))
    lines[number] = "  max_batch_size 16\n"  # the ':' forgotten
    path.write_text("".join(lines))
    result = cli("-C", str(service), "config", "validate")
    assert result.exit_code == ExitCode.CONFIG
    n = number + 1
    assert result.stderr == (
        f"error: mlctl.yaml:{n}:3: invalid YAML: a ':' is missing after this key\n"
        f"  {n} |   max_batch_size 16\n"
        f"  {' ' * len(str(n))} |   ^\n"
    )
    data = json.loads(cli("-C", str(service), "--json", "config", "validate").stdout)
    [problem] = data["error"]["problems"]
    assert (problem["line"], problem["column"], problem["source"]) == (n, 3, "  max_batch_size 16")


def test_cross_field_checks() -> None:
    text = MINIMAL + "runtime:\n  accelerator: cpu\n  cuda: '12.8'\nresources:\n  gpu:\n    count: 1\n"
    assert problems(text) == [
        "mlctl.yaml:9 resources.gpu.count: 1 GPU(s) requested but runtime.accelerator is 'cpu'",
        "mlctl.yaml:6 runtime.cuda: set only with runtime.accelerator 'cuda'",
    ]


def test_environment_overrides_merge_and_are_validated_with_their_own_lines() -> None:
    text = (
        MINIMAL
        + """\
deploy:
  replicas: 1
environments:
  prod:
    deploy:
      replicas: 3
  staging:
    deploy:
      replicaz: 2
    name: other
"""
    )
    assert problems(text) == [
        "mlctl.yaml:13 environments.staging.name: cannot be overridden per environment",
        "mlctl.yaml:12 environments.staging.deploy.replicaz: unknown key (did you mean 'replicas'?)",
    ]
    write(text.replace("      replicaz: 2\n    name: other\n", "      replicas: 2\n"))
    assert load_service_config(env="prod").config.deploy.replicas == 3
    assert load_service_config(env="staging").config.deploy.replicas == 2
    assert load_service_config().config.deploy.replicas == 1


def test_unknown_environment() -> None:
    write(MINIMAL + "environments:\n  prod: {}\n")
    with pytest.raises(NotFoundError, match=r"unknown environment 'qa': mlctl\.yaml defines prod") as raised:
        load_service_config(env="qa")
    assert raised.value.hint == "add it under environments: in mlctl.yaml"


def test_a_mistyped_environment_gets_a_suggestion(cli, service) -> None:
    result = cli("-C", str(service), "status", "--env", "stagign")
    assert (result.exit_code, result.stderr) == (
        ExitCode.INPUT,
        "error: unknown environment 'stagign': mlctl.yaml defines dev, staging, prod\nhint: did you mean 'staging'?\n",
    )


def test_environment_variables_override_loudly() -> None:
    write(MINIMAL + "image:\n  registry: ghcr.io/acme\n")
    loaded = load_service_config(
        environ={"MLCTL_CONFIG__IMAGE__REGISTRY": "127.0.0.1:5000/ml", "MLCTL_CONFIG__SERVING__PORT": "9000"}
    )
    assert loaded.config.image.registry == "127.0.0.1:5000/ml"
    assert loaded.config.serving.port == 9000
    assert [(o.variable, o.key, o.value, o.file_value) for o in loaded.overrides] == [
        ("MLCTL_CONFIG__IMAGE__REGISTRY", "image.registry", "127.0.0.1:5000/ml", "ghcr.io/acme"),
        ("MLCTL_CONFIG__SERVING__PORT", "serving.port", 9000, None),
    ]


def test_bad_environment_variables_name_the_variable() -> None:
    write(MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_service_config(environ={"MLCTL_CONFIG__SERVING__PORT": "abc", "MLCTL_CONFIG__NAME": "x"})
    assert caught.value.lines() == [
        "MLCTL_CONFIG__NAME name: cannot be overridden per environment",
        "MLCTL_CONFIG__SERVING__PORT serving.port: must be an integer, got 'abc'",
    ]


def test_limits_that_contradict_each_other_are_config_errors() -> None:
    text = MINIMAL.replace(
        "  app: fraud_scorer.server:app\n",
        "  app: fraud_scorer.server:app\n  metrics_port: 8080\n  max_buffered_bytes: 2048\n",
    )
    assert problems(text) == [
        "mlctl.yaml:4 serving.metrics_port: 8080 is serving.port too; pick another",
        "mlctl.yaml:5 serving.max_buffered_bytes: 2048 is below serving.max_payload_bytes (16777216): no request of "
        "the largest size could be read",
    ]


def test_client_limits_that_would_be_no_limit_name_line_and_key() -> None:
    text = MINIMAL + "  header_timeout_s: 0\n  max_connections: 0\n  max_header_bytes: 100\n  body_min_rate: fast\n"
    assert problems(text) == [
        "mlctl.yaml:4 serving.header_timeout_s: must be > 0.0, got 0",
        "mlctl.yaml:7 serving.body_min_rate: must be an integer, got 'fast'",
        "mlctl.yaml:5 serving.max_connections: must be >= 1, got 0",
        "mlctl.yaml:6 serving.max_header_bytes: must be >= 1024, got 100",
    ]


# --- through the CLI ----------------------------------------------------------------------------


def test_validate_prints_each_problem_on_its_own_line(cli) -> None:
    write(MINIMAL + "probes:\n  startup_budget_s: 5\n")
    result = cli("config", "validate")
    assert result.exit_code == ExitCode.CONFIG
    assert result.stdout == ""
    assert result.stderr == (
        "error: mlctl.yaml:5 probes.startup_budget_s: must be >= 10, got 5\n"
        "hint: fix mlctl.yaml and run `mlctl config validate`\n"
    )


def test_show_json_is_the_effective_config(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    write(MINIMAL + "environments:\n  prod:\n    deploy:\n      replicas: 4\n")
    monkeypatch.setenv("MLCTL_CONFIG__DEPLOY__NAMESPACE", "ml-prod")
    result = cli("config", "show", "--env", "prod", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["environment"] == "prod"
    assert data["config"]["deploy"] == {
        "target": "cluster",
        "namespace": "ml-prod",
        "context": None,
        "protected": None,
        "replicas": 4,
        "autoscaling": {"enabled": False, "min_replicas": 1, "max_replicas": 3, "metric": "queue_depth", "target": 8.0},
        "strategy": {"max_surge": "auto", "max_unavailable": "auto"},
        "unschedulable_budget_s": 120,
        "shared_release": False,
    }
    assert data["overrides"] == [
        {
            "variable": "MLCTL_CONFIG__DEPLOY__NAMESPACE",
            "key": "deploy.namespace",
            "value": "ml-prod",
            "file_value": None,
        }
    ]
    assert json.loads(result.stderr) == {
        "event": "warn",
        "message": 'MLCTL_CONFIG__DEPLOY__NAMESPACE overrides deploy.namespace (mlctl.yaml: not set, now: "ml-prod")',
    }


def test_show_prints_yaml_and_announces_overrides(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    write(MINIMAL)
    monkeypatch.setenv("MLCTL_CONFIG__SERVING__PORT", "9001")
    result = cli("config", "show")
    assert result.exit_code == 0
    assert "  port: 9001\n" in result.stdout
    assert "  cuda: null\n" in result.stdout
    assert (
        result.stderr
        == "warning: MLCTL_CONFIG__SERVING__PORT overrides serving.port (mlctl.yaml: not set, now: 9001)\n"
    )


def test_env_from_mlctl_env(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    write(MINIMAL + "environments:\n  prod:\n    deploy:\n      replicas: 4\n")
    monkeypatch.setenv("MLCTL_ENV", "prod")
    data = json.loads(cli("config", "show", "--json").stdout)
    assert data["config"]["deploy"]["replicas"] == 4


# --- hostile and unlucky files: each a config error (exit 3) naming the line, never a crash -------------

BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(
            MINIMAL + "model: !!python/object/apply:os.system ['echo hi']\n",
            "mlctl.yaml:4: the YAML tag !!python/object/apply:os.system is not allowed: mlctl.yaml holds plain "
            "mappings, lists, strings, numbers, booleans and null",
            id="python-tag",
        ),
        pytest.param(
            MINIMAL + "image:\n  registry: !vault secret/registry\n",
            "mlctl.yaml:5: the YAML tag !vault is not allowed: mlctl.yaml holds plain mappings, lists, strings, "
            "numbers, booleans and null",
            id="custom-tag",
        ),
        pytest.param(
            MINIMAL + "image: !!omap [registry: x]\n",
            "mlctl.yaml:4: the YAML tag !!omap is not allowed: mlctl.yaml holds plain mappings, lists, strings, "
            "numbers, booleans and null",
            id="omap",
        ),
        pytest.param(
            MINIMAL + "x: " + "[" * 5000 + "]" * 5000 + "\n", "mlctl.yaml:4: nested deeper than 32 levels", id="deep"
        ),
        pytest.param(
            MINIMAL + BOMB,
            "mlctl.yaml:7: more than 2500 keys and values (aliases counted each time they are used): too large "
            "for an mlctl config",
            id="alias-bomb",
        ),
        pytest.param(
            MINIMAL + "".join(f"k{i}: {i}\n" for i in range(2000)),
            "mlctl.yaml:1250: more than 2500 keys and values (aliases counted each time they are used): too "
            "large for an mlctl config",
            id="many-keys",
        ),
        pytest.param(
            MINIMAL + "serving:\n  port: 1\n",
            'mlctl.yaml:4: invalid YAML: duplicate key "serving" (first on line 2)',
            id="duplicate",
        ),
        pytest.param(
            MINIMAL + "? [a, b]\n: 1\n",
            "mlctl.yaml:4: a key must be a plain value (a name), not a mapping or a list",
            id="complex-key",
        ),
        pytest.param(
            MINIMAL + "a: *nowhere\n",
            "mlctl.yaml:4: invalid YAML: alias *nowhere comes before its anchor is complete",
            id="unknown-alias",
        ),
        pytest.param(
            MINIMAL + "a: &a [1, *a]\n",
            "mlctl.yaml:4: invalid YAML: alias *a comes before its anchor is complete",
            id="recursive-alias",
        ),
        pytest.param(
            MINIMAL + "image:\n  registry: a\x01b\n",
            "mlctl.yaml:5:14: invalid YAML: the control character U+0001 is not allowed",
            id="control-character",
        ),
        pytest.param(
            MINIMAL + "---\nname: y\n",
            "mlctl.yaml:4: more than one YAML document (---): mlctl reads one",
            id="two-documents",
        ),
        pytest.param(
            MINIMAL + "probes:\n  startup_budget_s: !!int ten\n",
            "mlctl.yaml:5: 'ten' is not a valid int",
            id="bad-int-tag",
        ),
        pytest.param(
            MINIMAL + "probes:\n  startup_budget_s: .inf\n",
            "mlctl.yaml:5: '.inf': numbers must be finite",
            id="infinite",
        ),
        pytest.param(
            MINIMAL + "probes:\n  startup_budget_s: " + "9" * 5000 + "\n",
            "mlctl.yaml:5: '" + "9" * 5000 + "' is not a valid int",
            id="huge-int",
        ),
    ],
)
def test_hostile_yaml_is_a_config_error_naming_the_line(cli, text: str, line: str) -> None:
    write(text)
    result = cli("config", "validate")
    assert result.exit_code == ExitCode.CONFIG, result.stderr
    assert result.stderr.splitlines()[0] == f"error: {line}"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            MINIMAL.encode() + b"image:\n  registry: caf\xe9\n",
            "mlctl.yaml:5: not valid UTF-8: byte 0xe9 at column 16 (save the file as UTF-8)",
        ),
        ("name: x\n".encode("utf-16"), "mlctl.yaml:1: not valid UTF-8: byte 0xff at column 1 (save the file as UTF-8)"),
        (
            b"\xef\xbb\xbf" + MINIMAL.encode() + b"\x00",
            "mlctl.yaml:4:1: invalid YAML: the control character U+0000 is not allowed",
        ),
    ],
)
def test_bytes_that_are_not_utf8_text(cli, data: bytes, line: str) -> None:
    (Path.cwd() / "mlctl.yaml").write_bytes(data)
    result = cli("config", "validate")
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr.splitlines()[0] == f"error: {line}"


def test_a_byte_order_mark_is_fine() -> None:
    (Path.cwd() / "mlctl.yaml").write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_service_config().config.name == "fraud-scorer"


def test_a_huge_file_is_refused_without_reading_it_whole(cli) -> None:
    path = write(MINIMAL)
    with path.open("r+b") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB of NUL bytes after the config
    result = cli("config", "validate")
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr.splitlines()[0] == (
        "error: mlctl.yaml:4: the file is 65537 bytes, over the limit of 65536 bytes here "
        "(an mlctl config is a few KiB)"
    )


def test_aliases_and_merge_keys_still_work_within_the_limits() -> None:
    write(
        MINIMAL
        + "environments:\n"
        + "  staging: &base\n    deploy: {replicas: 2, namespace: ml}\n    probes: {startup_budget_s: 600}\n"
        + "  prod:\n    <<: *base\n    deploy: {replicas: 4}\n"
        + "  qa: *base\n"
    )
    assert load_service_config(env="qa").config.deploy.replicas == 2
    prod = load_service_config(env="prod").config
    assert (prod.deploy.replicas, prod.deploy.namespace, prod.probes.startup_budget_s) == (4, None, 600)
    assert load_service_config(env="staging").config.deploy.namespace == "ml"


def test_an_alias_bomb_is_refused_by_a_real_process_with_little_memory(tmp_path: Path) -> None:
    # Expanded, this file is 9**9 strings: gigabytes. Bounded memory (1 GiB of address space) and a generous
    # timeout are a safety net for the machine running the tests, not a timing assertion.
    import resource
    import subprocess
    import sys

    write(MINIMAL + BOMB)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))

    done = subprocess.run(
        [sys.executable, "-m", "mlctl", "config", "validate"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert done.returncode == ExitCode.CONFIG, done.stderr
    assert done.stderr.startswith("error: mlctl.yaml:7: more than 2500 keys and values")


# Fragments that real and hostile files are made of; hypothesis strings them together with arbitrary text.
_FRAGMENTS = [
    "name: fraud-scorer\n", "serving:\n  app: a.b:app\n", "  port: 8080\n", "environments:\n", "  prod:\n",
    "    deploy: {replicas: 2}\n", "&a ", "*a", "<<: ", "!!python/object:os.system ", "!x ", "!!str ", "!!int ",
    "!!binary ", "? ", ": ", "- ", "[", "]", "{", "}", ",", "'", '"', "\\", "#", "|\n", ">-\n", "---\n", "...\n",
    "%YAML 1.1\n", "\t", "\n", "  ", "~", ".nan", "0x1F", "2020-01-01", "1e400", "\ufeff", "\x85", "\u2028",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8)), max_size=40))
def test_nothing_in_mlctl_yaml_reaches_internal_error(cli, parts: list[str]) -> None:
    (Path.cwd() / "mlctl.yaml").write_bytes("".join(parts).encode("utf-8", "surrogatepass"))
    result = cli("config", "validate")
    assert result.exit_code in (ExitCode.OK, ExitCode.CONFIG), result.stderr
    if result.exit_code == ExitCode.CONFIG:
        assert result.stderr.startswith("error: mlctl.yaml"), result.stderr


IMAGE_BY_DIGEST = "demo-svc:v1@sha256:" + "a" * 64


@pytest.mark.parametrize(
    "args",
    [
        ("build",),
        ("images", "plan"),
        ("render", "--image", IMAGE_BY_DIGEST),
        ("diff", "--image", IMAGE_BY_DIGEST),
        ("deploy", "--dry-run", "--image", IMAGE_BY_DIGEST),
        ("deploy", "--target", "local", "--image", IMAGE_BY_DIGEST),
        ("promote", "--from", "staging", "--to", "prod"),
        ("status",),
        ("down",),
        ("ci", "generate", "--dry-run"),
        ("doctor", "--timeout", "0.5"),
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_every_command_that_reads_the_config_announces_overrides_once(
    cli, service: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    """DESIGN: MLCTL_* variables never change mlctl.yaml silently. Whether the command then succeeds or
    fails (no Docker engine, no cluster here) does not matter: the override is said first, once."""
    monkeypatch.setenv("MLCTL_CONFIG__SERVING__MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = cli("-C", str(service), *args)
    announced = [line for line in result.stderr.splitlines() if "MLCTL_CONFIG__SERVING__MAX_BATCH_SIZE" in line]
    assert announced == ["warning: MLCTL_CONFIG__SERVING__MAX_BATCH_SIZE overrides serving.max_batch_size "
                         "(mlctl.yaml: 16, now: 8)"], result.stderr  # fmt: skip
