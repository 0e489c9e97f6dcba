"""Shared fixtures: an isolated environment per test and an in-process ``mlctl`` runner."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlctl.cli.app import run_cli

REPO = Path(__file__).resolve().parent.parent
MLCTL = [sys.executable, "-m", "mlctl"]
#: The root image the image tests build on (scripts/make-test-root), and the packages their ladder holds.
ROOT_IMAGE = "mlctl-test/debian:bookworm"
RUNTIME_REQUIREMENTS = ["torch==2.13.0", "uvicorn[standard]>=0.30,<0.56", "orjson>=3.10", "prometheus-client>=0.20"]

# --- what this test process makes on the shared Docker engine, and only that, it removes ---------------
# Other runs (other checkouts, other engineers, the user's own images) share the engine at the same
# time. Everything a test makes there carries this process's mark: service names end in -RUN
# (images, their containers), images and containers carry the label RUN_LABEL, registry tags live
# under REGISTRY_NAMESPACE. Teardown removes only what carries the mark. The content-addressed base
# layers (mlctl/python, mlctl/torch) and the root image are a build cache shared by every run: they stay.
RUN = uuid.uuid4().hex[:8]
RUN_LABEL_KEY = "mlctl-test.run"
RUN_LABEL = f"{RUN_LABEL_KEY}={RUN}"
REGISTRY_NAMESPACE = f"ml-{RUN}"


def run_name(base: str) -> str:
    """A service name of this test process's own (its images and containers are named after it)."""
    return f"{base}-{RUN}"


def remove_leftovers(run: str = RUN) -> list[str]:
    """Remove the containers, networks and images test process ``run`` made, and nothing else; their IDs.

    Theirs: what carries its label, and the service images, containers and networks (the local
    target's) named for it (a build that forgot ``--label``). Images that a rebuild untagged still
    carry both, so they go too.
    """
    import docker
    from docker.errors import APIError

    def ours(labels: dict[str, str] | None, service_key: str) -> bool:
        labels = labels or {}
        return labels.get(RUN_LABEL_KEY) == run or labels.get(service_key, "").endswith(f"-{run}")

    removed = []
    client = docker.from_env(timeout=120)
    try:
        for container in client.api.containers(
            all=True, filters={"label": "org.mlctl.service"}
        ) + client.api.containers(all=True, filters={"label": f"{RUN_LABEL_KEY}={run}"}):
            if ours(container.get("Labels"), "org.mlctl.service") and container["Id"] not in removed:
                client.api.remove_container(container["Id"], force=True)
                removed.append(container["Id"])
        for network in client.api.networks(filters={"label": "org.mlctl.service"}):
            if ours(network.get("Labels"), "org.mlctl.service"):
                client.api.remove_network(network["Id"])
                removed.append(network["Id"])
        images = client.api.images(filters={"label": "mlctl.service"}) + client.api.images(
            filters={"label": f"{RUN_LABEL_KEY}={run}"}
        )
        for image in images:
            if ours(image.get("Labels"), "mlctl.service") and image["Id"] not in removed:
                try:
                    client.api.remove_image(image["Id"], force=True)
                except APIError as exc:
                    if exc.status_code != 404:  # already gone with a parent: fine
                        raise
                removed.append(image["Id"])
    finally:
        client.close()
    return removed


def untag_namespace(address: str, namespace: str = REGISTRY_NAMESPACE) -> list[str]:
    """Remove the local tags pointing into ``address/namespace`` (pushes and pulls leave them); the
    images themselves stay where another tag holds them. Returns the tags removed."""
    import docker

    prefix = f"{address}/{namespace}/"
    client = docker.from_env(timeout=120)
    try:
        # The low-level list needs no inspect per image, so an image another run removes meanwhile
        # cannot fail the listing; a tag gone by the time it is removed is not an error either.
        tags = [tag for image in client.api.images() for tag in image.get("RepoTags") or () if tag.startswith(prefix)]
        for tag in tags:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.api.remove_image(tag, noprune=False)
    finally:
        client.close()
    return tags


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in an empty directory with a clean, fixed environment."""
    for name in list(os.environ):
        if name.startswith(("MLCTL_", "SERVING_")) or name in ("KUBECONFIG", "DOCKER_CONTEXT"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERM", "dumb")
    # git: no user or system config leaks in; a fixed identity unless a test removes it.
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    (home / ".gitconfig").write_text("[user]\n\tname = Test User\n\temail = test@example.com\n")
    monkeypatch.setenv("KUBECONFIG", str(home / "no-kubeconfig"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def cli() -> object:
    """Run mlctl in-process: ``cli("new", "x")`` -> Result(exit_code, stdout, stderr)."""

    def invoke(*args: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_cli(list(args))
        return Result(code, out.getvalue(), err.getvalue())

    return invoke


def tree(root: Path) -> list[str]:
    """Every file under ``root`` (relative, sorted), leaving out .git internals."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def longest_first(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered so that pytest-xdist's work stealing starts the ``long`` tests first.

    Work stealing hands each of the ``workers`` a contiguous slice of the list (the first gets
    ``len // workers`` items, the next a share of what is left, and so on) and runs each slice in order;
    an idle worker takes half of the busiest one's queue from its end. Each ``long`` test (``long(S)``:
    about S seconds on this 2-core machine) goes to the head of the slice with the least expected work
    so far, the largest first (longest-processing-time scheduling); the other tests keep their
    (pytest-randomly) order and fill the slices. Every worker computes the same order, as xdist requires."""
    long = [item for item in items if item.get_closest_marker("long")]
    if not long or workers < 2:
        return items
    rest = [item for item in items if not item.get_closest_marker("long")]
    expected = {item.nodeid: float(item.get_closest_marker("long").args[0]) for item in long}  # type: ignore[union-attr]
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    load = [0.0] * workers
    for item in sorted(long, key=lambda i: (-expected[i.nodeid], i.nodeid)):
        slot = load.index(min(load))
        heads[slot].append(item)
        load[slot] += expected[item.nodeid]
    ordered: list[pytest.Item] = []
    left = len(items)
    for slot in range(workers):
        size = left // (workers - slot)  # what work stealing will send this worker
        fill = max(0, size - len(heads[slot]))
        ordered += heads[slot] + rest[:fill]
        del rest[:fill]
        left -= len(heads[slot]) + fill
    return ordered + rest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``docker`` tests skip on a workstation without an engine; with CI=true they always run (and fail);
    under pytest-xdist, the tests marked ``long`` start first, each on a worker of its own where it can."""
    if hasattr(config, "workerinput"):
        items[:] = longest_first(items, int(config.workerinput["workercount"]))
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return
    if not any(item.get_closest_marker("docker") for item in items) or docker_available():
        return
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.skip(reason="no Docker engine here (CI starts one; CI=true never skips)"))


@pytest.fixture
def service(cli: object, isolated: Path) -> Path:
    """A freshly scaffolded pytorch-predict service (CPU, no git) in the test's directory."""
    result = cli("new", "demo-svc", "--set", "accelerator=cpu", "--no-git")  # type: ignore[operator]
    assert result.exit_code == 0, result.stderr
    return isolated / "demo-svc"


# --- the real components of the image tests (session-wide: made once, shared by every module) ---


@pytest.fixture(scope="session")
def root_image() -> Iterator[str]:
    """The shared root image; at the end of the session, this process's leftovers on the engine go."""
    subprocess.run([str(REPO / "scripts" / "make-test-root"), ROOT_IMAGE], check=True, capture_output=True)
    yield ROOT_IMAGE
    remove_leftovers()


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """torch's CPU wheel and the runtime's dependencies, resolved once on the host (cached in the clone)."""
    from mlctl.images import wheels
    from mlctl.reporting import NullReporter

    return wheels.download(
        RUNTIME_REQUIREMENTS,
        python="3.11",
        platform="linux/amd64",
        cache=REPO / ".cache" / "test-wheels",
        index_url=None,
        reporter=NullReporter(),
    )


@contextlib.contextmanager
def running_registry(data: Path, *, auth: str = "") -> Iterator[str]:
    """Debian's docker-registry serving ``data`` on a free loopback port, stopped at the end; ``auth`` is its
    config's auth section (YAML, indented under ``auth:``). Yields ``127.0.0.1:PORT``."""
    import registries

    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/start-services installs it)")
    port = free_port()
    path = registries.config(data, port, auth=auth)
    process = subprocess.Popen(
        ["docker-registry", "serve", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        registries.wait_for(f"127.0.0.1:{port}", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def pushable_registry(kind: str, data: Path, *, auth: str = "") -> Iterator[str]:
    """The kept ``kind`` registry of tests/registries.py when scripts/start-services started it, else one of
    this session's in ``data``. The local tags of this run's namespace there are removed at the end."""
    import registries

    kept = registries.running(kind)
    with contextlib.nullcontext(kept) if kept else running_registry(data, auth=auth) as address:
        try:
            yield address
        finally:
            untag_namespace(address)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """docker-registry on loopback for pushes (the engine treats 127.0.0.0/8 as insecure).

    Tests push under ``ADDRESS/REGISTRY_NAMESPACE``. It is the kept open registry (tests/registries.py)
    when one runs, so that base layers pushed by earlier runs are mounted rather than uploaded again."""
    with pushable_registry("open", tmp_path_factory.mktemp("registry")) as address:
        yield address


# --- the guard: a run leaves what it did not make in place ------------------------------------------------
# Before the first test, the controlling process puts things on the engine that look like a user's
# own: a service image built by hand, an unused base layer (what `mlctl images prune` would remove)
# and a stopped container of a service. After the last test and every teardown (of every xdist
# worker too), each must still be there; if one is gone, the run fails. Then they are removed.


def _bystanders_wanted(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and docker_available()


def _docker(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=120)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _bystanders_wanted(session.config):
        return
    empty_tar = b"\0" * 1024  # an empty tar archive: two zero blocks
    made: list[tuple[str, str]] = []
    for ref, labels in (
        (
            f"mlctl-bystander-{RUN}/fraud-scorer:built-by-hand",
            ["org.mlctl.layer=service", "mlctl.service=fraud-scorer"],
        ),
        (f"mlctl/python:bystander-{RUN}", ["org.mlctl.layer=python", "mlctl.python=3.11"]),
    ):
        changes = [arg for label in labels for arg in ("--change", f"LABEL {label}")]
        if _docker("import", *changes, "-", ref, stdin=empty_tar).returncode == 0:
            made.append(("image", ref))
    container = f"mlctl-fraud-scorer-bystander-{RUN}"
    if (
        made
        and _docker(
            "create", "--name", container, "--label", "org.mlctl.service=fraud-scorer", made[0][1], "x"
        ).returncode
        == 0
    ):
        made.append(("container", container))
    session.config.stash[_BYSTANDERS] = made


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    made = session.config.stash.get(_BYSTANDERS, [])
    if not made:
        return
    missing = [f"{kind} {name}" for kind, name in made if _docker(kind, "inspect", name).returncode != 0]
    for kind, name in reversed(made):
        _docker("rm" if kind == "container" else "rmi", name)
    if missing:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(
                "error: the test run removed what it did not make (bystanders put on the engine before it "
                "started): " + ", ".join(missing),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BYSTANDERS = pytest.StashKey[list[tuple[str, str]]]()
