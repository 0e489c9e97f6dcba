"""``mlctl new``: the scaffolded tree, its git history, and every kind of bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO, tree

from mlctl.errors import ExitCode

EXPECTED_FILES = [
    ".dockerignore",
    ".github/workflows/mlctl.yml",  # mlctl ci generate --provider github
    ".gitignore",
    "README.md",
    "fraud_scorer/__init__.py",
    "fraud_scorer/model.py",
    "fraud_scorer/server.py",
    "fraud_scorer/weights.py",
    "mlctl.yaml",
    "pyproject.toml",
    "tests/conftest.py",
    "tests/test_model.py",
    "tests/test_server.py",
]

EXPECTED_CONFIG = """\
# mlctl.yaml: everything mlctl needs to run, build and deploy fraud-scorer.
# Check it with `mlctl config validate`; see the effective values with `mlctl config show [--env ENV]`.
name: fraud-scorer

# Where this service came from; `mlctl update` uses it. Do not edit by hand.
template:
  name: pytorch-predict
  version: 1.4.0
  answers:
    accelerator: "cuda"
    description: "A PyTorch model service"
    gpu_count: 2
    max_batch_size: 16
    namespace: "ml"
    port: 8080
    python_version: "3.11"
    registry: "127.0.0.1:5000/ml"
    torch_version: "2.13.0"

runtime:
  python: "3.11"
  torch: "2.13.0"
  accelerator: cuda   # cuda or cpu; CUDA is picked at run time when a GPU is present

model:
  source: prepare                 # made by model.prepare when missing; baked into their own image layer
  path: weights/model.pt          # the image's tag and mlctl.weights label carry the weights' digest
  prepare: python -m fraud_scorer.weights weights/model.pt

serving:
  app: fraud_scorer.server:app
  port: 8080
  max_batch_size: 16
  max_batch_delay_ms: auto        # auto: 0 on CPU (batch what queues while busy), 2 ms on a GPU
  max_queue: 256                  # beyond this many waiting requests: 503 with Retry-After
  request_timeout_s: 30           # 504 after this long
  graceful_shutdown_s: 30         # on SIGTERM, in-flight requests get this long to finish
  warmup_batch_sizes: [1]         # ready only after batches of these sizes ran
  compile:
    enabled: false                # torch.compile during warm-up; falls back to eager if unsupported
    mode: default

resources:
  gpu:
    count: 2
    products: []                  # e.g. [NVIDIA-A100-SXM4-80GB]; empty means any GPU
  cpu: "2"
  memory: 4Gi
  shm_size: 1Gi

probes:
  startup_budget_s: 300           # model load + warm-up, worst case

image:
  registry: "127.0.0.1:5000/ml"
  repository: fraud-scorer

deploy:
  namespace: "ml"       # each environment below has its own: staging and prod never share a release
  replicas: 1

environments:
  dev:
    deploy:
      namespace: "ml-dev"
      replicas: 1
  staging:
    deploy:
      namespace: "ml-staging"
      replicas: 1
  prod:
    deploy:
      namespace: "ml-prod"
      replicas: 2
"""


def new(cli, *args: str):  # type: ignore[no-untyped-def]
    return cli("new", *args)


def test_scaffolds_the_whole_tree(cli, isolated: Path) -> None:
    result = new(
        cli,
        "fraud-scorer",
        "--set",
        "accelerator=cuda",
        "--set",
        "gpu_count=2",
        "--set",
        "registry=127.0.0.1:5000/ml",
        "--set",
        "namespace=ml",
    )
    assert result.exit_code == 0, result.stderr
    root = isolated / "fraud-scorer"
    assert tree(root) == EXPECTED_FILES
    assert (root / "mlctl.yaml").read_text() == EXPECTED_CONFIG
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "fraud-scorer"
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["fraud_scorer"]
    for path in EXPECTED_FILES:
        text = re.sub(r"\$\{\{[^}]*\}\}", "", (root / path).read_text())  # GitHub's own ${{ expressions }}
        assert "{{" not in text.replace("{{ package }}", "") or path.endswith(".md"), path
        assert "{%" not in text, path
        if path.endswith(".py"):
            compile(text, path, "exec")
    assert "A PyTorch model service" in (root / "README.md").read_text()
    assert "fraud_scorer.server:app" in (root / "fraud_scorer" / "server.py").read_text()


def test_output_names_the_defaults_taken_and_the_next_commands(
    cli, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlctl.adapters.gpu import seen_gpus
    from mlctl.scaffold.create import accelerator_default

    monkeypatch.delenv("CI", raising=False)  # the reason given is then the missing terminal

    accelerator, why = accelerator_default(seen_gpus())  # this machine's (test_new_defaults checks both kinds)
    result = new(cli, "fraud-scorer", "--no-git")
    assert result.stdout == (
        "Created fraud-scorer in ./fraud-scorer from pytorch-predict 1.4.0 (13 files).\n"
        "\n"
        "Defaults taken (no terminal to ask in; choose with --set NAME=VALUE):\n"
        "  description     A PyTorch model service\n"
        f"  accelerator     {accelerator.ljust(23)}  {why}\n"
        + ("  gpu_count       1\n" if accelerator == "cuda" else "")
        + "  python_version  3.11\n"
        "  torch_version   2.13.0\n"
        "  port            8080\n"
        "  max_batch_size  16\n"
        "  registry        ''\n"
        "  namespace       ''\n"
        "\n"
        "Next:\n"
        "  cd fraud-scorer\n"
        "  python -m pip install \"$(mlctl runtime wheel)\" -e '.[test]'\n"
        "  python -m pytest\n"
        "  mlctl run\n"
    )
    assert result.stderr == "• rendering pytorch-predict 1.4.0\n• writing 13 files\n"


def test_git_repository_with_one_clean_commit(cli, isolated: Path) -> None:
    result = new(cli, "fraud-scorer", "--json")
    data = json.loads(result.stdout)
    root = isolated / "fraud-scorer"
    log = subprocess.run(["git", "log", "--format=%H %an %s"], cwd=root, capture_output=True, text=True).stdout
    assert log == f"{data['git_commit']} Test User Scaffold fraud-scorer from pytorch-predict 1.4.0\n"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert status == ""
    branch = subprocess.run(["git", "branch", "--show-current"], cwd=root, capture_output=True, text=True).stdout
    assert branch == "main\n"
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    assert sorted(tracked) == EXPECTED_FILES


def test_git_without_an_identity_commits_as_mlctl_and_says_so(cli, isolated: Path) -> None:
    Path(os.environ["GIT_CONFIG_GLOBAL"]).write_text("")
    result = new(cli, "fraud-scorer")
    assert result.exit_code == 0, result.stderr
    assert "warning: git has no user.name/user.email here; the first commit is authored by 'mlctl'" in result.stderr
    author = subprocess.run(["git", "log", "--format=%an <%ae>"], cwd="fraud-scorer", capture_output=True, text=True)
    assert author.stdout == "mlctl <mlctl@localhost>\n"


def test_answers_are_recorded_for_updates(cli, isolated: Path) -> None:
    new(cli, "fraud-scorer", "--set", "accelerator=cpu", "--set", "max_batch_size=64", "--no-git")
    from mlctl.config import load_service_config

    config = load_service_config(isolated / "fraud-scorer").config
    assert config.template is not None
    assert (config.template.name, config.template.version) == ("pytorch-predict", "1.4.0")
    assert config.template.answers["accelerator"] == "cpu"
    assert config.template.answers["max_batch_size"] == 64
    assert config.template.answers["gpu_count"] == 1  # not asked for cpu; default recorded
    assert config.resources.gpu.count == 0
    assert config.serving.max_batch_size == 64


def test_json_result(cli, isolated: Path) -> None:
    data = json.loads(new(cli, "fraud-scorer", "--no-git", "--json").stdout)
    assert data["name"] == "fraud-scorer"
    assert data["path"] == str(isolated / "fraud-scorer")
    assert data["git_commit"] is None
    assert data["dry_run"] is False
    assert {f["path"] for f in data["files"]} == set(EXPECTED_FILES)


def test_dry_run_lists_files_and_writes_nothing(cli, isolated: Path) -> None:
    result = new(cli, "fraud-scorer", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.startswith(
        "Would create fraud-scorer in ./fraud-scorer from pytorch-predict 1.4.0 (dry run, nothing written):\n"
    )
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert sorted(listed) == EXPECTED_FILES
    assert list(isolated.iterdir()) == []


def test_dir_option_and_an_existing_empty_directory(cli, isolated: Path) -> None:
    (isolated / "empty").mkdir()
    assert new(cli, "fraud-scorer", "--dir", "empty", "--no-git").exit_code == 0
    assert tree(isolated / "empty") == EXPECTED_FILES
    assert new(cli, "other", "--dir", "a/b/c", "--no-git").exit_code == 0
    assert (isolated / "a/b/c/mlctl.yaml").is_file()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "FraudScorer",
            "invalid service name 'FraudScorer': contains uppercase letters; use lowercase letters, digits and '-'",
        ),
        ("fraud_scorer", "invalid service name 'fraud_scorer': contains '_'; use '-' between words"),
        (
            "a" * 41,
            f"invalid service name '{'a' * 41}': is 41 characters long; the limit is 40 (it becomes "
            "Kubernetes, Helm and pod names)",
        ),
        ("9lives", "invalid service name '9lives': must start with a letter"),
        ("", "invalid service name '': must not be empty"),
        ("trailing-", "invalid service name 'trailing-': must not end with '-'"),
        ("dot.ted", "invalid service name 'dot.ted': contains '.'; use lowercase letters, digits and '-'"),
    ],
)
def test_invalid_names(cli, isolated: Path, name: str, message: str) -> None:
    result = new(cli, name)
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr.splitlines()[0] == f"error: {message}"
    assert list(isolated.iterdir()) == []


def test_invalid_name_suggests_a_valid_one(cli) -> None:
    assert new(cli, "Fraud_Scorer").stderr.splitlines()[1] == "hint: try 'fraud-scorer'"
    assert new(cli, "9lives").stderr.splitlines()[1] == "hint: try 'svc-9lives'"


@pytest.mark.parametrize(
    ("name", "message", "hint"),
    [
        ("os", "its Python package 'os' would shadow the standard-library module 'os'", "os-service"),
        ("test", "its Python package 'test' would shadow the standard-library module 'test'", "test-service"),
        ("distutils", "its Python package 'distutils' would shadow the standard-library module 'distutils'",
         "distutils-service"),  # removed in 3.12, still there for a service on 3.11
        ("torch", "its Python package 'torch' would shadow 'torch', which the service depends on", "torch-service"),
        ("typing-extensions", "its Python package 'typing_extensions' would shadow 'typing_extensions', which the "
         "service depends on", "typing-extensions-service"),
        ("mlctl", "'mlctl' is mlctl's own package", "mlctl-service"),
        ("mlctl-serve", "'mlctl_serve' is mlctl's own package", "mlctl-serve-service"),
        ("kube-scorer", "Kubernetes keeps names starting with 'kube-' for itself", "scorer"),
        ("kubernetes", "Kubernetes keeps 'kubernetes' for itself", "kubernetes-service"),
        ("default", "Kubernetes keeps 'default' for itself", "default-service"),
        ("weights", "the service's weights/ directory has that name", "weights-service"),
        ("tests", "the service's tests/ directory has that name", "tests-service"),
    ],
)  # fmt: skip
def test_reserved_names_are_refused_with_a_suggestion(cli, isolated: Path, name: str, message: str, hint: str) -> None:
    result = new(cli, name)
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr.splitlines() == [f"error: invalid service name {name!r}: is reserved: {message}",
                                          f"hint: try {hint!r}"]  # fmt: skip
    assert list(isolated.iterdir()) == []
    assert new(cli, hint, "--no-git", "--ci", "none").exit_code == 0  # the suggestion is taken as it is


def test_a_reserved_name_in_mlctl_yaml_is_a_config_error(cli, service: Path) -> None:
    path = service / "mlctl.yaml"
    path.write_text(path.read_text().replace("name: demo-svc", "name: torch", 1))
    result = cli("-C", str(service), "config", "validate")
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr.splitlines()[0] == (
        "error: mlctl.yaml:3 name: service name 'torch' is reserved: its Python package 'torch' would shadow "
        "'torch', which the service depends on"
    )


@pytest.mark.parametrize("template", ["pytorch-predict", "pytorch-generate"])
def test_every_package_a_service_installs_is_reserved(cli, isolated: Path, template: str) -> None:
    """The reserved list holds the whole dependency closure of a generated service, as installed here."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    from mlctl.names import package_name, reserved_name_problem

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    assert new(cli, "svc", "--template", template, "--no-git", "--ci", "none").exit_code == 0
    pyproject = tomllib.loads((isolated / "svc" / "pyproject.toml").read_text())
    wanted = [*pyproject["project"]["dependencies"], *pyproject["project"]["optional-dependencies"]["test"]]
    wanted += pyproject["build-system"]["requires"]
    runtime = tomllib.loads((REPO / "runtime/pyproject.toml").read_text())
    wanted += runtime["project"]["dependencies"]
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in wanted]
    while todo:
        requirement = todo.pop()
        key = (norm(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        distribution = metadata.distribution(requirement.name)
        for text in distribution.requires or []:
            sub = Requirement(text)
            if sub.marker and not any(sub.marker.evaluate({"extra": e}) for e in (requirement.extras or {""})):
                continue
            todo.append(sub)
    names = {name for name, _ in seen}
    for module, distributions in metadata.packages_distributions().items():
        if any(norm(d) in names for d in distributions) and re.fullmatch(r"[a-z][a-z0-9_]*", module):
            names.add(module)
    assert len(names) > 30
    missing = sorted(n for n in names if reserved_name_problem(package_name(n).replace("_", "-")) is None)
    assert missing == []


def test_existing_non_empty_directory_is_left_alone(cli, isolated: Path) -> None:
    (isolated / "fraud-scorer").mkdir()
    (isolated / "fraud-scorer" / "keep.txt").write_text("mine")
    result = new(cli, "fraud-scorer")
    assert result.exit_code == ExitCode.CONFLICT
    assert result.stderr.splitlines()[0] == f"error: {isolated / 'fraud-scorer'} already exists and is not empty"
    assert tree(isolated) == ["fraud-scorer/keep.txt"]


def test_unknown_template(cli, isolated: Path) -> None:
    result = new(cli, "x", "--template", "pytorch-predcit")
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr == (
        "error: unknown template 'pytorch-predcit'; available: pytorch-generate, pytorch-predict\n"
        "hint: did you mean 'pytorch-predict'? see `mlctl templates list`\n"
    )
    assert list(isolated.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("gpu_cont=2", "error: --set gpu_cont=2: template 'pytorch-predict' has no question 'gpu_cont'"),
        ("gpu_count=two", "error: --set gpu_count=two: gpu_count must be an integer, got 'two'"),
        ("gpu_count=0", "error: --set gpu_count=0: gpu_count must be >= 1, got '0'"),
        ("accelerator=tpu", "error: --set accelerator=tpu: accelerator must be one of cuda, cpu; got 'tpu'"),
        (
            "namespace=Bad_NS",
            "error: --set namespace=Bad_NS: namespace must be a Kubernetes namespace prefix (lowercase "
            "letters, digits and '-'; not default or kube-*), got 'Bad_NS'",
        ),
        ("novalue", "error: --set novalue: expected KEY=VALUE, e.g. --set gpu_count=2"),
    ],
)
def test_bad_set_values(cli, isolated: Path, option: str, message: str) -> None:
    result = new(cli, "fraud-scorer", "--set", option)
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr.splitlines()[0] == message
    assert list(isolated.iterdir()) == []


def test_set_unknown_key_suggests_the_closest_question(cli) -> None:
    assert new(cli, "x", "--set", "gpu_cont=2").stderr.splitlines()[1] == (
        "hint: did you mean 'gpu_count'? its questions: description, accelerator, gpu_count, python_version, "
        "torch_version, port, max_batch_size, registry, namespace"
    )


def broken_template(root: Path, body: str) -> None:
    source = REPO / "templates" / "pytorch-predict"
    target = root / "broken"
    shutil.copytree(source, target)
    manifest = (target / "template.yaml").read_text().replace("name: pytorch-predict", "name: broken", 1)
    (target / "template.yaml").write_text(manifest)
    (target / "files" / "zz_last.txt.j2").write_text(body)


def test_a_render_failure_leaves_nothing_behind(cli, isolated: Path, tmp_path: Path, monkeypatch) -> None:
    broken_template(tmp_path / "tpl", "{{ no_such_variable }}\n")
    monkeypatch.setenv("MLCTL_TEMPLATE_PATH", str(tmp_path / "tpl"))
    result = new(cli, "fraud-scorer", "--template", "broken", "--dir", "deep/down/fraud-scorer")
    assert result.exit_code == ExitCode.FAILURE
    assert result.stderr.splitlines()[1:] == [
        "error: template broken failed to render zz_last.txt.j2:1: 'no_such_variable' is undefined"
    ]
    assert list(isolated.iterdir()) == []


def test_a_git_failure_removes_the_half_made_service(cli, isolated: Path, monkeypatch) -> None:
    # A pre-commit hook cannot stop us (--no-verify), but an unusable git config can.
    Path(os.environ["GIT_CONFIG_GLOBAL"]).write_text(
        "[user]\n\tname = T\n\temail = t@e\n[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = /bin/false\n"
    )
    result = new(cli, "fraud-scorer", "--dir", "x/fraud-scorer")
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert result.stderr.splitlines()[-2:] == [
        "error: git failed in the new service: fatal: failed to write commit object",
        "hint: fix git (see the message) or pass --no-git",
    ]
    assert list(isolated.iterdir()) == []


def test_templates_from_mlctl_template_path_shadow_built_ins(cli, tmp_path: Path, monkeypatch) -> None:
    broken_template(tmp_path / "tpl", "extra file for {{ name }}\n")
    monkeypatch.setenv("MLCTL_TEMPLATE_PATH", str(tmp_path / "tpl"))
    assert new(cli, "fraud-scorer", "--template", "broken", "--no-git").exit_code == 0
    assert Path("fraud-scorer/zz_last.txt").read_text() == "extra file for fraud-scorer\n"


def test_python_twin_needs_no_typer(isolated: Path) -> None:
    code = (
        "import sys; from mlctl import new_service; "
        "r = new_service('fraud-scorer', answers={'accelerator': 'cpu'}, git=False); "
        "print(r.template_version, len(r.files), 'typer' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "1.4.0 13 False\n"


def test_prompts_in_a_terminal_with_defaults_and_retries(isolated: Path) -> None:
    import pexpect

    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mlctl", "new", "fraud-scorer", "--no-git", "--set", "registry="],
        env=env,
        cwd=str(isolated),
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 200),
    )
    child.expect_exact("One line saying what the service does (A PyTorch model service): ")
    child.sendline("")
    from mlctl.adapters.gpu import seen_gpus

    default = "cuda" if seen_gpus().count else "cpu"  # this machine's
    child.expect_exact(f"Build and deploy for NVIDIA GPUs (cuda) or for CPUs only (cpu) [cuda/cpu] ({default}): ")
    child.sendline("tpu")
    child.expect_exact("Please select one of the available options")
    child.sendline("cpu")
    child.expect_exact("Python version of the service image [3.10/3.11/3.12] (3.11): ")
    child.sendline("3.12")
    child.expect_exact("PyTorch version of the service image (2.13.0): ")
    child.sendline("")
    child.expect_exact("Port the HTTP server listens on inside the container (8080): ")
    child.sendline("eighty")
    child.expect_exact("port must be an integer, got 'eighty'")
    child.sendline("9000")
    child.expect_exact("Largest batch the server runs through the model at once (16): ")
    child.sendline("")
    child.expect_exact(
        "Kubernetes namespace prefix: each environment deploys to PREFIX-ENV (empty: the service name) (): "
    )
    child.sendline("ml")
    child.expect_exact("Created fraud-scorer")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    from mlctl.config import load_service_config

    config = load_service_config(isolated / "fraud-scorer").config
    assert config.runtime.accelerator == "cpu"
    assert config.runtime.python == "3.12"
    assert config.serving.port == 9000
    assert config.deploy.namespace == "ml"
    assert config.image.registry == ""


def test_no_prompts_without_a_terminal_even_without_yes(isolated: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlctl", "new", "fraud-scorer", "--no-git"],
        cwd=isolated,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Created fraud-scorer" in done.stdout
