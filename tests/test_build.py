"""``mlctl build`` against the real Docker engine and a real registry.

The whole cpu ladder is built from a root image made locally (scripts/make-test-root), with torch
installed from a wheelhouse holding the CPU wheel; the service image is run and asked for a
prediction; pushes go to a docker-registry started on loopback.

The engine is shared with other test runs and with the user's own images: services are named for
this run (conftest.run_name), builds carry its label, and only those are removed (conftest). Tests
that change a service change a copy of their own (``copy``), so they pass in any order.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from building import build, build_args, copy_service, git, mlctl, scaffold, statuses
from conftest import REGISTRY_NAMESPACE, RUN, RUN_LABEL, RUN_LABEL_KEY, free_port, run_name

from mlctl.cli.output import LOG_LINE_LIMIT
from mlctl.errors import ExitCode
from mlctl.images import locks

pytestmark = [pytest.mark.docker, pytest.mark.slow]
A = run_name("svc-a")
PACKAGE_A = A.replace("-", "_")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="module")
def first(workdir: Path, root_image: str, wheelhouse: Path) -> tuple[Path, dict]:
    """Service A, built once; never changed (tests that change it take a ``copy``)."""
    service = scaffold(workdir, A)
    return service, build(service, root_image, wheelhouse)


@pytest.fixture
def copy(first: tuple[Path, dict], tmp_path: Path) -> Path:
    """A copy of service A for this test to change: same tree and tag, so the same image to start with."""
    return copy_service(first[0], tmp_path / A)


def docker_json(*args: str) -> object:
    return json.loads(subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout)


def test_the_image_runs_answers_and_is_labelled(first: tuple[Path, dict]) -> None:
    service, data = first
    reference = f"{data['image']['repository']}:{data['image']['tag']}"
    commit = git(service, "rev-parse", "HEAD").strip()
    tree = git(service, "rev-parse", "HEAD^{tree}").strip()
    # The weights name the image: the digest of the file the build put in it, in its tag and label.
    weights = "sha256:" + hashlib.sha256((service / "weights" / "model.pt").read_bytes()).hexdigest()
    assert data["weights"] == weights
    assert data["image"]["tag"] == f"{tree[:12]}-g{commit[:7]}-w{weights[7:19]}"
    assert data["dirty"] is False
    assert [layer["layer"] for layer in data["layers"]] == ["python", "torch", "service"]

    [inspected] = docker_json("image", "inspect", reference)  # type: ignore[misc]
    config = inspected["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["org.opencontainers.image.title"] == A
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert "org.opencontainers.image.source" in labels
    assert (labels["mlctl.python"], labels["mlctl.torch"], labels["mlctl.flavor"]) == ("3.11", "2.13.0", "cpu")
    assert (labels["mlctl.template"], labels["mlctl.service"]) == ("pytorch-predict", A)
    assert labels["mlctl.weights"] == weights
    assert labels[RUN_LABEL_KEY] == RUN  # mlctl build --label
    assert data["labels"][RUN_LABEL_KEY] == RUN
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/v2/health/ready" in config["Healthcheck"]["Test"][-1]
    assert config["Cmd"] == ["python", "-m", "mlctl_serve", f"{PACKAGE_A}.server:app"]

    port = free_port()
    container = subprocess.run(
        ["docker", "run", "-d", "--label", RUN_LABEL, "-p", f"127.0.0.1:{port}:8080", reference],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert time.monotonic() < deadline, subprocess.run(
                ["docker", "logs", container], capture_output=True, text=True
            ).stdout
            time.sleep(0.2)
        rows = [[0.5 * i for i in range(8)]]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/{A}/infer",
            data=json.dumps(
                {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": rows}]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            got = json.loads(reply.read())["outputs"][0]["data"]
        expected = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import json,sys,torch; from {PACKAGE_A}.model import load_model; "
                "m=load_model('weights/model.pt', torch.device('cpu')); "
                "print(json.dumps(m(torch.tensor(json.loads(sys.argv[1]))).reshape(-1).tolist()))",
                json.dumps(rows),
            ],
            cwd=service,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert got == pytest.approx(json.loads(expected), abs=1e-6)
        whoami = subprocess.run(["docker", "exec", container, "id", "-u"], capture_output=True, text=True).stdout
        assert whoami.strip() == "10001"
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def test_the_build_is_recorded_where_deploys_find_it(first: tuple[Path, dict]) -> None:
    """The road build -> deploy: the deploy takes the image from the build's record, re-deriving nothing."""
    service, data = first
    assert git(service, "status", "--porcelain") == ""  # the record ignores itself: the tree stays clean
    record = json.loads((service / ".mlctl" / "builds.json").read_text())
    [build] = [b for b in record["builds"] if b["image"]["repository"] == A]
    assert (build["image"], build["labels"], build["dirty"]) == (data["image"], data["labels"], False)
    rendered = mlctl(service, "render", "--json")  # what a deploy would apply, offline
    assert rendered.exit_code == 0, rendered.stderr
    image = json.loads(rendered.stdout)["values"]["image"]
    assert image == {"repository": A, "tag": data["image"]["tag"], "digest": ""}
    assert f"image {A}:{data['image']['tag']}, built " in rendered.stderr


def test_a_build_that_cannot_be_recorded_still_builds(copy: Path, root_image: str, wheelhouse: Path) -> None:
    import shutil

    shutil.rmtree(copy / ".mlctl")
    (copy / ".mlctl").write_text("in the way")  # not a folder: the record cannot be written
    result = mlctl(copy, *build_args(root_image, wheelhouse))
    assert result.exit_code == 0, result.stderr
    assert "warning: the build could not be recorded in the service (" in result.stderr
    assert "deploys need --image" in result.stderr


def test_nothing_changed_nothing_rebuilt(copy: Path, root_image: str, wheelhouse: Path) -> None:
    # A copy: a build rewrites the service's record, which test_the_build_is_recorded_... reads.
    again = build(copy, root_image, wheelhouse)
    assert statuses(again) == {"python": "reused", "torch": "reused", "service": "reused"}


def commit_change(service: Path, text: str) -> None:
    server = service / PACKAGE_A / "server.py"
    server.write_text(server.read_text() + f"\n# {text}\n")
    git(service, "commit", "-q", "-am", text)


def own_tag(copy: Path) -> None:
    """Give a copy a tag of its own before a forced rebuild.

    A rebuild of an unchanged copy would make a new image under the tag it shares with ``first``, and
    the tests reading ``first`` would then see that image (or its record) in an order-dependent way.
    """
    commit_change(copy, "a commit of the copy's own")


def test_a_code_change_rebuilds_only_the_code(copy: Path, root_image: str, wheelhouse: Path) -> None:
    # The builder reuses the newest image made by the same step, so a --no-cache build elsewhere on the
    # engine could give the two builds different dependency layers: the engine's build lock keeps
    # other builds out from the first build to the second.
    with locks.held(locks.engine_lock_path()):
        commit_change(copy, "a first change")
        data = build(copy, root_image, wheelhouse)
        commit_change(copy, "a second change")
        after = build(copy, root_image, wheelhouse)
    assert statuses(after) == {"python": "reused", "torch": "reused", "service": "built"}
    [service_layer] = [layer for layer in after["layers"] if layer["layer"] == "service"]
    assert service_layer["reason"] == "changed: code"
    # Every step but ARG BASE, FROM, the code's COPY and the final LABEL came from the builder's cache.
    assert service_layer["steps"] - service_layer["cached_steps"] == 4, service_layer
    before = docker_json("image", "inspect", f"{data['image']['repository']}:{data['image']['tag']}")[0]  # type: ignore[index]
    new = docker_json("image", "inspect", f"{after['image']['repository']}:{after['image']['tag']}")[0]  # type: ignore[index]
    old_layers, new_layers = before["RootFS"]["Layers"], new["RootFS"]["Layers"]
    assert len(old_layers) == len(new_layers)
    assert old_layers[:-1] == new_layers[:-1]  # dependencies and weights reused; only the code layer is new
    assert old_layers[-1] != new_layers[-1]


def test_dirty_trees_get_their_own_tags_and_are_not_pushed(
    copy: Path, root_image: str, wheelhouse: Path, registry: str
) -> None:
    model = copy / PACKAGE_A / "model.py"
    original = model.read_text()
    tags = []
    for variant in ("# one\n", "# two\n"):
        model.write_text(original + variant)
        data = build(copy, root_image, wheelhouse)
        assert data["dirty"] is True
        tags.append(data["image"]["tag"])
    assert tags[0] != tags[1]
    assert all("-dirty-" in tag for tag in tags)
    refused = mlctl(
        copy,
        *build_args(root_image, wheelhouse),
        "--push",
        env={"MLCTL_CONFIG__IMAGE__REGISTRY": f"{registry}/{REGISTRY_NAMESPACE}"},
    )
    assert refused.exit_code == ExitCode.CONFLICT
    assert refused.stderr.splitlines()[-2].startswith(f"error: refusing to push {A}: the service has uncommitted")


def test_the_plan_names_the_input_that_changed(copy: Path, root_image: str, wheelhouse: Path) -> None:
    model = copy / PACKAGE_A / "model.py"
    model.write_text(model.read_text() + "# planned\n")
    result = mlctl(
        copy, "images", "plan", "--root", root_image, "--wheelhouse", str(wheelhouse), "--label", RUN_LABEL, "--json"
    )
    assert result.exit_code == 0, result.stderr
    plan = {entry["layer"]: entry for entry in json.loads(result.stdout)}
    assert (plan["python"]["status"], plan["torch"]["status"]) == ("present", "present")
    assert (plan["service"]["status"], plan["service"]["reason"]) == ("build", "changed: code")


def test_retrained_weights_make_another_image_and_the_plan_says_why(
    first: tuple[Path, dict], copy: Path, root_image: str, wheelhouse: Path
) -> None:
    # weights/ is git-ignored: the tree and commit stay the same, only the weights' digest tells the images apart.
    service, built = first
    old = built["weights"]
    # Other code of the service built since (another branch, a test run in any order): the plan still
    # explains the rebuild by the closest earlier image, the one with these very inputs but the weights.
    since = copy_service(service, copy.parent / "since" / A)
    commit_change(since, "other code built since")
    assert statuses(build(since, root_image, wheelhouse))["service"] == "built"
    (copy / "weights" / "model.pt").write_bytes(b"retrained")
    new = "sha256:" + hashlib.sha256(b"retrained").hexdigest()
    result = mlctl(
        copy, "images", "plan", "--root", root_image, "--wheelhouse", str(wheelhouse), "--label", RUN_LABEL, "--json"
    )
    assert result.exit_code == 0, result.stderr
    service = {entry["layer"]: entry for entry in json.loads(result.stdout)}["service"]
    assert service["status"] == "build"
    assert service["reason"] == f"changed: weights ({old[:19]} -> {new[:19]})"
    assert service["image"] == built["image"]["repository"] + ":" + built["image"]["tag"].replace(old[7:19], new[7:19])


def test_weights_pinned_by_uri_are_downloaded_into_the_image(
    copy: Path, root_image: str, wheelhouse: Path, tmp_path: Path
) -> None:
    # model.source uri: the weights are not in the service at all; the build downloads them (file:// here)
    # into mlctl's cache, checks the pin, and puts them at model.path in the image.
    (copy / "weights" / "model.pt").unlink()
    published = tmp_path / "published" / "model-v2.pt"
    published.parent.mkdir()
    published.write_bytes(b"weights from a release")
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    config = copy / "mlctl.yaml"
    text = re.sub(r"  source: \w+ .*\n", "  source: uri\n", config.read_text())
    text = re.sub(r"  prepare: .*\n", f"  uri: {published.as_uri()}\n  sha256: {digest}\n", text)
    config.write_text(text)
    git(copy, "commit", "-q", "-am", "weights from a pinned URI")
    data = build(copy, root_image, wheelhouse)
    assert data["weights"] == f"sha256:{digest}"
    assert data["image"]["tag"].endswith(f"-w{digest[:12]}")
    reference = f"{data['image']['repository']}:{data['image']['tag']}"
    [inspected] = docker_json("image", "inspect", reference)  # type: ignore[misc]
    assert inspected["Config"]["Labels"]["mlctl.weights"] == f"sha256:{digest}"
    run = ["docker", "run", "--rm", "--label", RUN_LABEL, "--entrypoint", "sha256sum", reference]
    inside = subprocess.run([*run, "/srv/weights/model.pt"], capture_output=True, text=True, check=True)
    assert inside.stdout.split()[0] == digest
    from mlctl.resources import cache_dir

    cached = cache_dir() / "weights" / "sha256" / digest  # content-addressed
    assert cached.read_bytes() == published.read_bytes()


def test_list_shows_the_ladder_and_its_users(first: tuple[Path, dict]) -> None:
    service, _ = first
    result = mlctl(service, "images", "list", "--json")
    assert result.exit_code == 0, result.stderr
    images = {entry["layer"]: entry for entry in json.loads(result.stdout) if A in entry["used_by"]}
    assert set(images) == {"python", "torch"}
    assert images["torch"]["size"] > 500_000_000
    pruned = mlctl(service, "images", "prune", "--dry-run", "--json")
    assert all(A not in entry["used_by"] for entry in json.loads(pruned.stdout))


def test_rebuild_forces_a_layer_without_the_cache(copy: Path, root_image: str, wheelhouse: Path) -> None:
    own_tag(copy)
    data = build(copy, root_image, wheelhouse, "--rebuild", "service")
    [layer] = [layer for layer in data["layers"] if layer["layer"] == "service"]
    assert (layer["status"], layer["cached_steps"]) == ("built", 0)


def test_a_failing_build_names_the_step_and_shows_its_log(workdir: Path, root_image: str, wheelhouse: Path) -> None:
    name = run_name("svc-broken")
    service = scaffold(workdir, name)
    pyproject = service / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"torch>=2.5",', '"torch>=2.5",\n  "no-such-package-mlctl==1.0",')
    )
    git(service, "commit", "-q", "-am", "a dependency the wheelhouse lacks")
    result = mlctl(service, *build_args(root_image, wheelhouse))
    assert result.exit_code == ExitCode.BUILD
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error[0].startswith(f"error: {name}:")
    assert "exited with status 1" in error[0]
    assert "RUN echo" in error[0]
    assert "No matching distribution found for no-such-package-mlctl==1.0" in result.stderr


def test_a_failed_build_removes_the_step_images_it_made(root_image: str, tmp_path: Path) -> None:
    """The classic builder keeps the steps a failed build committed: untagged images no one can name.
    mlctl removes those it made, and keeps the cached ones it reused (another build's cache)."""
    from mlctl.adapters.docker import DockerImageBuilder, build_context
    from mlctl.errors import BuildError

    def context(*steps: str) -> bytes:
        dockerfile = "\n".join([f"FROM {root_image}", *steps]) + "\n"
        return build_context([("Dockerfile", dockerfile.encode(), 0o644)])

    builder = DockerImageBuilder.connect()
    cached_step = f"RUN echo cached-{RUN} > /cached"
    try:
        kept, _ = builder.build(
            context(cached_step, f"LABEL {RUN_LABEL}"), tag=f"mlctl-test-{RUN}/steps:ok", buildargs={}
        )
        lines: list[str] = []
        with pytest.raises(BuildError) as failed:
            builder.build(
                context(cached_step, f"RUN echo new-{RUN} > /new", "ENV STEP=made", "RUN exit 3"),
                tag=f"mlctl-test-{RUN}/steps:broken",
                buildargs={},
                on_line=lambda line, log: lines.append(line),
            )
    finally:
        builder.close()
    assert "exited with status 3" in failed.value.message
    committed = [line.split("---> ")[1].strip() for line in lines if line.strip().startswith("---> ")]
    committed = [c for c in committed if c not in ("Using cache",) and not c.startswith("Running in")]
    # FROM (the root), the cached step (reused), then the two steps this build made.
    assert len(committed) == 4, lines
    exists = [subprocess.run(["docker", "image", "inspect", c], capture_output=True).returncode == 0 for c in committed]
    assert exists == [True, True, False, False]
    assert subprocess.run(["docker", "image", "inspect", kept], capture_output=True).returncode == 0


def test_no_engine_is_an_environment_problem(first: tuple[Path, dict], wheelhouse: Path) -> None:
    service, _ = first
    result = mlctl(service, "build", "--wheelhouse", str(wheelhouse), env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert "error: no Docker engine answers at unix:///nonexistent.sock" in result.stderr


def test_plain_progress_names_each_layer_and_its_steps(copy: Path, root_image: str, wheelhouse: Path) -> None:
    own_tag(copy)
    result = mlctl(copy, *build_args(root_image, wheelhouse), "--rebuild", "service")
    assert result.exit_code == 0, result.stderr
    # Other builds on the shared engine (other test files, other runs) may hold it first: that wait is said.
    waiting = "• waiting for another mlctl build on this Docker engine to finish"
    lines = [line for line in result.stderr.splitlines() if line != waiting]
    # The secret check comes first: this test's cache is new, so every file of the code is scanned.
    assert re.fullmatch(r"• scanning \d+ files of the code for secrets \(\d+ KiB\)", lines[0]), lines[0]
    assert lines[1].startswith("• python layer: reusing mlctl/python:")
    assert lines[2].startswith("• torch layer: reusing mlctl/torch:")
    assert lines[3].startswith(f"• service layer: building {A}:")
    assert any(line.startswith("  [service] Step 1/") for line in lines)
    assert not any("Using cache" in line for line in lines)  # logs get the steps, not every line
    # The steps as the builder wrote them: rich once turned "app:x:10001:" into "app❌10001:".
    assert any("echo 'app:x:10001:' >> /etc/group" in line for line in lines)
    # A LABEL step (a few KB) is cut in the log and kept whole in the log file the output names.
    [log] = [line.removeprefix("  full output: ") for line in lines if line.startswith("  full output: ")]
    label = next(line for line in Path(log).read_text().splitlines() if " : LABEL " in line)
    assert len(label) > LOG_LINE_LIMIT
    assert f"  {label[:LOG_LINE_LIMIT]}... ({len(label) - LOG_LINE_LIMIT} more characters)" in lines
    assert result.stdout.startswith(f"Built {A}: {A}:")
    assert "LAYER    IMAGE" in result.stdout


def test_a_layer_never_changes_a_package_of_its_parent(workdir: Path, root_image: str, wheelhouse: Path) -> None:
    service = scaffold(workdir, run_name("svc-pinned"))
    pyproject = service / "pyproject.toml"
    # The torch layer holds typing-extensions 4.x; asking for another version must fail, not downgrade it.
    pyproject.write_text(pyproject.read_text().replace('"torch>=2.5",', '"torch>=2.5",\n  "typing-extensions<4",'))
    git(service, "commit", "-q", "-am", "a requirement that conflicts with the torch layer")
    result = mlctl(service, *build_args(root_image, wheelhouse))
    assert result.exit_code == ExitCode.BUILD
    assert "typing-extensions<4" in result.stderr
    assert "exited with status 1" in result.stderr


def test_prune_removes_only_unused_base_layers_and_only_those_asked_about(
    root_image: str, tmp_path: Path, first: tuple[Path, dict]
) -> None:
    """Hand-made base layers: a python layer, a torch layer standing on it (used by no service), and
    an unused python layer of someone else's. ``prune --label`` touches only what carries the label."""
    python, torch, theirs = f"mlctl/python:test-{RUN}", f"mlctl/torch:test-{RUN}", f"mlctl/python:theirs-{RUN}"

    def make(ref: str, base: str, labels: str) -> None:
        (tmp_path / "Dockerfile").write_text(f"FROM {base}\nLABEL {labels}\n")
        subprocess.run(["docker", "build", "-q", "-t", ref, str(tmp_path)], check=True, capture_output=True)

    make(python, root_image, f"org.mlctl.layer=python mlctl.python=0.0 {RUN_LABEL}")
    make(torch, python, f"org.mlctl.layer=torch mlctl.parent={python} {RUN_LABEL}")
    make(theirs, root_image, f"org.mlctl.layer=python mlctl.python=0.1 {RUN_LABEL_KEY}=someone-else")
    service, _ = first
    try:
        listed = json.loads(mlctl(service, "images", "list", "--label", RUN_LABEL, "--json").stdout)
        assert {(e["image"], tuple(e["used_by"])) for e in listed} == {(python, (torch,)), (torch, ())}
        result = mlctl(service, "images", "prune", "--label", RUN_LABEL)
        assert result.exit_code == 0, result.stderr
        # Only the torch layer: the python layer was in use by it when prune looked.
        assert re.fullmatch(rf"removed {re.escape(torch)} \([0-9.]+ MB\)\n", result.stdout), result.stdout
        present = {
            ref: subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0
            for ref in (python, torch, theirs)
        }
        assert present == {python: True, torch: False, theirs: True}
        again = mlctl(service, "images", "prune", "--label", RUN_LABEL)
        assert re.fullmatch(rf"removed {re.escape(python)} \([0-9.]+ MB\)\n", again.stdout), again.stdout
        assert mlctl(service, "images", "prune", "--label", RUN_LABEL).stdout == (
            f"nothing to prune: every base layer labelled {RUN_LABEL} is in use\n"
        )
        still = {e["image"] for e in json.loads(mlctl(service, "images", "list", "--json").stdout)}
        assert theirs in still
        assert any(image.startswith("mlctl/torch:") for image in still)  # svc-a's, in use: never a candidate
    finally:
        subprocess.run(["docker", "rmi", theirs, python, torch], capture_output=True)
