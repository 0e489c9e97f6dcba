"""Running the CI pipelines `mlctl ci generate` writes, job by job, on this machine (test_pipeline_gitlab,
test_pipeline_github; test_service_readme uses the package index).

* **A package index of the team's own** on 127.0.0.1 (``package_index``): PEP 503 pages over mlctl's
  wheel (built from this checkout), its dependencies, the CPU torch and what the service needs to build
  and test. It holds no mlctl-serve: the jobs must take the runtime from mlctl (``mlctl runtime wheel``).
  The jobs see no pip configuration of this machine (``PIP_CONFIG_FILE`` is the null device), so
  anything they install comes from that index.
* **GitLab**: gitlab-ci-local runs ``.gitlab-ci.yml`` as it is, with its shell executor, each job in a
  fresh copy of the checkout (``--shell-isolation``). A job that names an ``image:`` would be run in
  Docker with gitlab-ci-local's helper image from Docker Hub, which cannot be reached here; a shell
  runner of GitLab ignores ``image:``, so ``as_shell_runner`` gives gitlab-ci-local the file without
  those keys and nothing else changed (the test holds it to that).
* **GitHub**: no local runner exists, so ``run_workflow`` does what the runner does with what the
  workflow uses: for each job whose ``if:`` holds (GitHub's expression syntax, the part of it the
  workflow uses), a fresh clone, ``actions/setup-python`` as a new virtual environment of that Python
  first on PATH, ``actions/upload-artifact`` as a copy, and every ``run:`` step with ``bash -e`` in
  order, with the workflow's, job's and step's ``env:`` (secrets and variables as the expressions map
  them), ``$GITHUB_OUTPUT`` read back as the step's outputs, and ``$HOME`` the job's own.
"""

from __future__ import annotations

import functools
import hashlib
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import registries
from building import mlctl
from conftest import REGISTRY_NAMESPACE, pushable_registry
from kube.emulator import FakeCluster
from registries import PASSWORD, USER
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent

# --- the package index -------------------------------------------------------------------------------------


def index_requirements() -> list[str]:
    """What the jobs install besides mlctl itself, torch and the runtime's dependencies (the test wheelhouse):
    mlctl's dependencies, the service's test tools and the build backend of its editable install."""
    from mlctl.images.wheels import read_toml

    return [*read_toml(REPO / "pyproject.toml")["project"]["dependencies"], "pytest>=8", "hatchling>=1.25", "editables"]


def mlctl_wheel(target: Path) -> Path:
    """mlctl as a wheel, built from this checkout."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(target), str(REPO)],
        check=True,
        capture_output=True,
    )
    [wheel] = target.glob("mlctl-*.whl")
    return wheel


def _project(wheel: str) -> str:
    return re.sub(r"[-_.]+", "-", wheel.split("-")[0]).lower()


@contextmanager
def package_index(root: Path, wheel_dirs: list[Path]) -> Iterator[str]:
    """Serve the wheels of ``wheel_dirs`` as a PEP 503 simple index on 127.0.0.1; yields its URL."""
    files = root / "files"
    files.mkdir(parents=True)
    projects: dict[str, list[str]] = {}
    for directory in wheel_dirs:
        for wheel in sorted(directory.glob("*.whl")):
            if not (files / wheel.name).exists():
                (files / wheel.name).symlink_to(wheel.resolve())
                projects.setdefault(_project(wheel.name), []).append(wheel.name)
    assert "mlctl-serve" not in projects, "the index must not hold the runtime: the jobs take it from mlctl"
    for project, wheels in projects.items():
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True)
        links = "".join(f'<a href="../../files/{html.escape(w)}">{html.escape(w)}</a><br>\n' for w in wheels)
        page.write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    links = "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects))
    (root / "simple" / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


def job_environment(index_url: str, **extra: str) -> dict[str, str]:
    """The environment a CI job starts from: this machine's, without its pip configuration, mlctl's own
    virtual environment or a KUBECONFIG (a runner has none: the jobs make their own from the secret), pip
    pointed at the package index (and not compiling bytecode, for speed).

    Every job of every pipeline test shares one pip cache (``PIP_CACHE_DIR``), as the jobs of one runner
    do: GitLab documents caching ``PIP_CACHE_DIR`` for pip, and a self-hosted GitHub runner keeps its
    user's cache between jobs. It is the runner's, not the job's: each job still installs into a fresh
    virtual environment, as the pipeline files say."""
    own = str(REPO / ".venv")
    dropped = ("PIP_", "MLCTL_", "VIRTUAL_ENV", "PYTHON", "KUBECONFIG")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(own))
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL=index_url,
        PIP_COMPILE="false",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_DEFAULT_TIMEOUT="60",
        PIP_CACHE_DIR=str(REPO / ".cache" / "ci-pip"),
    )
    env.update(extra)
    return env


# --- GitLab ------------------------------------------------------------------------------------------------


def gitlab_ci_local() -> Path:
    """gitlab-ci-local, installed under .cache/ once (scripts/install-gitlab-ci-local)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "install-gitlab-ci-local")], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr
    return REPO / done.stdout.strip()


def drop_images(document: Any) -> Any:
    """A GitLab pipeline as a shell runner runs it: every job's (and template's) ``image:`` left out."""
    return {
        key: ({k: v for k, v in value.items() if k != "image"} if isinstance(value, dict) else value)
        for key, value in document.items()
    }


def as_shell_runner(pipeline: Path, target: Path) -> Path:
    """Write ``pipeline`` without its ``image:`` keys to ``target`` (as JSON, which is YAML)."""
    document = YAML(typ="safe").load(pipeline.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(drop_images(document), indent=1))
    return target


def gitlab_job_log(clone: Path, job: str) -> str:
    path = clone / ".gitlab-ci-local" / "output" / f"{job}.log"
    return path.read_text() if path.is_file() else ""


# --- GitHub ------------------------------------------------------------------------------------------------


class Expression:
    """GitHub's expression syntax, the part of it workflows use: literals, contexts (``a.b.c``, names
    with ``-``), ``!``, ``==``/``!=`` (strings compared without case, as GitHub does), ``&&``/``||``
    (yielding an operand, as GitHub does), parentheses, and ``startsWith``, ``always``, ``success``,
    ``failure``, ``cancelled``. Anything else is an error, so a workflow that starts using more fails here
    rather than being run wrongly."""

    TOKEN = re.compile(
        r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!(),.])"
        r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
    )

    def __init__(self, text: str, contexts: Mapping[str, Any], status: str = "success") -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.strip()
        while position < len(text):
            found = self.TOKEN.match(text, position)
            assert found, f"cannot read the expression {text!r} at {position}"
            assert found.end() > position, f"cannot read the expression {text!r} at {position}"
            kind = found.lastgroup
            assert kind is not None
            self.tokens.append((kind, found.group(kind)))
            position = found.end()
        self.contexts, self.status, self.at = contexts, status, 0

    def value(self) -> Any:
        result = self._or()
        assert self.at == len(self.tokens), f"unexpected {self.tokens[self.at :]}"
        return result

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self, op: str | None = None) -> tuple[str, str]:
        token = self._peek()
        assert token is not None, f"expected {op!r}, got the end"
        assert op is None or token == ("op", op), f"expected {op!r}, got {token}"
        self.at += 1
        return token

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == ("op", "||"):
            self._take()
            right = self._and()
            left = left if _truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._unary()
        while self._peek() == ("op", "&&"):
            self._take()
            right = self._unary()
            left = right if _truthy(left) else left
        return left

    def _unary(self) -> Any:
        if self._peek() == ("op", "!"):
            self._take()
            return not _truthy(self._unary())
        left = self._primary()
        token = self._peek()
        if token in (("op", "=="), ("op", "!=")):
            self._take()
            right = self._primary()
            same = _loose(left) == _loose(right)
            return same if token == ("op", "==") else not same
        return left

    def _primary(self) -> Any:
        kind, text = self._take()
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return float(text)
        if (kind, text) == ("op", "("):
            inner = self._or()
            self._take(")")
            return inner
        assert kind == "name", f"unexpected {text!r}"
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if self._peek() == ("op", "("):
            self._take()
            args = []
            while self._peek() != ("op", ")"):
                args.append(self._or())
                if self._peek() == ("op", ","):
                    self._take()
            self._take(")")
            return self._call(text, args)
        assert text in self.contexts, f"unknown context {text!r}"
        value: Any = self.contexts[text]
        while self._peek() == ("op", "."):
            self._take()
            _, key = self._take()
            value = value.get(key) if isinstance(value, Mapping) else None
        return value

    def _call(self, name: str, args: list[Any]) -> Any:
        if name == "startsWith":
            return str(args[0] or "").lower().startswith(str(args[1] or "").lower())
        assert not args, f"{name}() takes no arguments here"
        checks = {"always": True, "success": self.status == "success", "failure": self.status == "failure"}
        checks["cancelled"] = False
        assert name in checks, f"the function {name}() is not one this runner knows"
        return checks[name]


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, 0.0, "")


def _loose(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def evaluate(expression: str, contexts: Mapping[str, Any], status: str = "success") -> Any:
    """An ``if:`` (with or without ``${{ }}``)."""
    text = expression.strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    return Expression(text, contexts, status).value()


def interpolate(text: str, contexts: Mapping[str, Any]) -> str:
    """A string value with every ``${{ ... }}`` replaced by its value (null becomes '')."""

    def one(found: re.Match[str]) -> str:
        value = Expression(found.group(1), contexts).value()
        return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    return re.sub(r"\$\{\{(.*?)\}\}", one, str(text))


@dataclass
class JobRun:
    """What one job did: its result (success, failure or skipped), outputs, each step's log, artefacts."""

    result: str
    outputs: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    artifacts: Path | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.log)


def push_matches(on: Mapping[str, Any], ref: str) -> bool:
    """Whether a push to ``ref`` triggers a workflow with these ``on:`` filters (``*`` patterns; a
    backslash escapes a special character, as GitHub's filter syntax says)."""
    push = on.get("push") or {}
    kind, _, name = ref.removeprefix("refs/").partition("/")
    patterns = push.get("branches" if kind == "heads" else "tags")
    if patterns is None:
        return False

    def matches(pattern: str) -> bool:
        regex, escaped = "", False
        for char in pattern:
            if escaped:
                regex += re.escape(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                regex += ".*" if char == "*" else re.escape(char)
        return re.fullmatch(regex, name) is not None

    return any(matches(p) for p in patterns)


def run_workflow(
    workflow: Path,
    *,
    origin: Path,
    ref: str,
    work: Path,
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    variables: Mapping[str, str],
    only: tuple[str, ...] | None = None,
    needs_done: Mapping[str, JobRun] | None = None,
) -> dict[str, JobRun]:
    """Run ``workflow`` for a push of ``ref`` (``refs/heads/main``, ``refs/tags/v1``) to ``origin``.

    ``only``: run just these jobs, taking the results of their needs from ``needs_done`` (a job of an
    earlier run). Returns every job's run, skipped ones too.
    """
    from mlctl.ci.pipeline import GITHUB_ACTIONS

    document = YAML(typ="safe").load(workflow.read_text())
    assert push_matches(document["on"], ref), f"a push of {ref} does not trigger {workflow.name}"
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=origin, capture_output=True, text=True, check=True
    ).stdout.strip()
    github = {"event_name": "push", "ref": ref, "sha": sha, "workspace": ""}
    top = {"github": github, "vars": dict(variables), "secrets": dict(secrets)}
    workflow_env = {k: interpolate(v, top) for k, v in (document.get("env") or {}).items()}
    pinned = {value.split(" #")[0] for value in GITHUB_ACTIONS.values()}
    runs: dict[str, JobRun] = dict(needs_done or {})
    for name, job in document["jobs"].items():
        if only is not None and name not in only:
            continue
        needs = job.get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        status = "success" if all(runs[n].result == "success" for n in needs) else "failure"
        contexts = {**top, "needs": {n: {"result": runs[n].result, "outputs": runs[n].outputs} for n in needs}}
        if not _truthy(evaluate(str(job.get("if", "success()")), contexts, status)):
            runs[name] = JobRun("skipped")
            continue
        job_env = {**env, **workflow_env}
        runs[name] = _run_job(name, job, origin, sha, work / name, job_env, contexts, pinned, work.parent / "toolcache")
    return runs


def _run_job(
    name: str,
    job: Mapping[str, Any],
    origin: Path,
    sha: str,
    home: Path,
    base_env: Mapping[str, str],
    contexts: dict[str, Any],
    pinned: set[str],
    toolcache: Path,
) -> JobRun:
    home.mkdir(parents=True)
    workspace, artifacts, output = home / "workspace", home / "artifacts", home / "github_output"
    env = {
        **base_env,
        **{k: interpolate(v, contexts) for k, v in (job.get("env") or {}).items()},
        "HOME": str(home / "home"),
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_REF": contexts["github"]["ref"],
        "GITHUB_SHA": sha,
        "GITHUB_EVENT_NAME": "push",
        "RUNNER_TEMP": str(home / "tmp"),
    }
    (home / "home").mkdir()
    (home / "tmp").mkdir()
    run = JobRun("success", artifacts=artifacts)
    steps: dict[str, Any] = {}
    for index, step in enumerate(job["steps"]):
        step_contexts = {**contexts, "steps": steps}
        status = "success" if run.result == "success" else "failure"
        if not _truthy(evaluate(str(step.get("if", "success()")), step_contexts, status)):
            continue
        label = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
        run.log.append(f"--- {name} step {index + 1}: {label}")
        if "uses" in step:
            assert step["uses"] in pinned, f"{step['uses']} is not an action mlctl pins (mlctl.ci.pipeline)"
            ok = _action(step, workspace, origin, sha, env, artifacts, run, toolcache)
        else:
            step_env = {**env, **{k: interpolate(v, step_contexts) for k, v in (step.get("env") or {}).items()}}
            output.write_text("")
            script = home / f"step-{index + 1}.sh"
            script.write_text(step["run"])
            done = subprocess.run(
                ["bash", "-e", str(script)],
                cwd=workspace,
                env={**step_env, "GITHUB_OUTPUT": str(output)},
                capture_output=True,
                text=True,
            )
            run.log += [done.stdout, done.stderr, f"(exit {done.returncode})"]
            ok = done.returncode == 0
            if "id" in step:
                steps[step["id"]] = {"outputs": _outputs(output.read_text()), "outcome": "success" if ok else "failure"}
        if not ok:
            run.result = "failure"
    if run.result == "success":
        step_contexts = {**contexts, "steps": steps}
        run.outputs = {k: interpolate(v, step_contexts) for k, v in (job.get("outputs") or {}).items()}
    return run


def _action(
    step: Mapping[str, Any],
    workspace: Path,
    origin: Path,
    sha: str,
    env: dict[str, str],
    artifacts: Path,
    run: JobRun,
    toolcache: Path,
) -> bool:
    action = step["uses"].split("@")[0]
    given = step.get("with") or {}
    if action == "actions/checkout":
        subprocess.run(["git", "clone", "-q", str(origin), str(workspace)], check=True, capture_output=True)
        subprocess.run(["git", "checkout", "-q", sha], cwd=workspace, check=True, capture_output=True)
        return True
    if action == "actions/setup-python":
        version = str(given["python-version"])
        base = shutil.which("python3", path=env["PATH"])
        assert base, "no python3 on this machine"
        found = subprocess.run([base, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True)
        assert found.stdout.decode().strip() == version, f"setup-python wants {version}; this machine has {found}"
        python = workspace.parent / "python"
        fresh_python(base, toolcache / version, python)
        env["PATH"] = f"{python / 'bin'}{os.pathsep}{env['PATH']}"
        env["pythonLocation"] = str(python)
        return True
    if action == "actions/upload-artifact":
        source = workspace / given["path"]
        if source.exists():
            (artifacts / given["name"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(source, artifacts / given["name"] / source.name)
        else:
            run.log.append(f"warning: no files were found at {given['path']}")
        return True
    raise AssertionError(f"the workflow uses {action}, which this runner does not do")


def fresh_python(base: str, cached: Path, target: Path) -> None:
    """A clean virtual environment of ``base`` at ``target``, with pip and nothing else installed.

    GitHub's runner takes the Python of setup-python from its tool cache instead of building one per
    job; here the cache is one clean virtual environment (made once per runner: ``venv`` with pip
    takes seconds), copied for each job with its paths rewritten to the copy (its scripts' shebangs,
    the activate scripts), so every job still installs into a Python of its own."""
    if not cached.is_dir():
        subprocess.run([base, "-m", "venv", str(cached)], check=True, capture_output=True)
    shutil.copytree(cached, target, symlinks=True)
    old, new = str(cached).encode(), str(target).encode()
    for path in (target / "bin").iterdir():
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if old in data:
                path.write_bytes(data.replace(old, new))
    for config in target.rglob("pyvenv.cfg"):
        config.write_bytes(config.read_bytes().replace(old, new))


def _outputs(text: str) -> dict[str, str]:
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<")[0]:
            key, _, delimiter = line.partition("<<")
            outputs[key] = "\n".join(iter(lambda: next(lines), delimiter))
        elif "=" in line:
            key, _, value = line.partition("=")
            outputs[key] = value
    return outputs


def registry_labels(address: str, repository: str, reference: str, auth: tuple[str, str]) -> dict[str, str]:
    """The labels of an image as the registry holds it: its manifest, then its config blob."""
    import base64
    import urllib.request

    header = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()

    def get(path: str, accept: str) -> bytes:
        request = urllib.request.Request(
            f"http://{address}/v2/{repository}/{path}", headers={"Authorization": header, "Accept": accept}
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return bytes(reply.read())

    manifest = json.loads(get(f"manifests/{reference}", "application/vnd.docker.distribution.manifest.v2+json"))
    config = json.loads(get(f"blobs/{manifest['config']['digest']}", "application/octet-stream"))
    return dict(config["config"].get("Labels") or {})


# --- what the pipeline tests share: their fixtures (imported by each test file) and checks ---------------


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
    """docker-registry with htpasswd auth: the build jobs must log in with the pipeline's secrets to push.
    The kept login registry (tests/registries.py) when one runs, else one of this module's."""
    data = tmp_path_factory.mktemp("registry")
    with pushable_registry("login", data, auth=registries.login_auth(data)) as address:
        yield address


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
