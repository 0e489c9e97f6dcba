"""``mlctl build`` against the real Docker engine and a real registry.

The whole cpu ladder is built from a root image made locally (scripts/make-test-root), with torch
installed from a wheelhouse holding the CPU wheel; the service image is run and asked for a
prediction; pushes go to a docker-registry started on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from building import build, git, mlctl, scaffold, statuses
from conftest import free_port

from mlctl.errors import ExitCode

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("services")
    yield base
    images = subprocess.run(
        ["docker", "images", "-q", "--filter", "label=org.mlctl.layer=service"], capture_output=True, text=True
    ).stdout.split()
    for image in set(images):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


@pytest.fixture(scope="module")
def first(workdir: Path, root_image: str, wheelhouse: Path) -> tuple[Path, dict]:
    service = scaffold(workdir, "svc-a")
    return service, build(service, root_image, wheelhouse)


def docker_json(*args: str) -> object:
    return json.loads(subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout)


def test_the_image_runs_answers_and_is_labelled(first: tuple[Path, dict]) -> None:
    service, data = first
    reference = f"{data['image']['repository']}:{data['image']['tag']}"
    commit = git(service, "rev-parse", "HEAD").strip()
    tree = git(service, "rev-parse", "HEAD^{tree}").strip()
    assert data["image"]["tag"] == f"{tree[:12]}-g{commit[:7]}"
    assert data["dirty"] is False
    assert [layer["layer"] for layer in data["layers"]] == ["python", "torch", "service"]

    [inspected] = docker_json("image", "inspect", reference)  # type: ignore[misc]
    config = inspected["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["org.opencontainers.image.title"] == "svc-a"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert "org.opencontainers.image.source" in labels
    assert (labels["mlctl.python"], labels["mlctl.torch"], labels["mlctl.flavor"]) == ("3.11", "2.13.0", "cpu")
    assert (labels["mlctl.template"], labels["mlctl.service"]) == ("pytorch-predict", "svc-a")
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/v2/health/ready" in config["Healthcheck"]["Test"][-1]
    assert config["Cmd"] == ["python", "-m", "mlctl_serve", "svc_a.server:app"]

    port = free_port()
    container = subprocess.run(
        ["docker", "run", "-d", "-p", f"127.0.0.1:{port}:8080", reference], capture_output=True, text=True, check=True
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
            f"http://127.0.0.1:{port}/v2/models/svc-a/infer",
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
                "import json,sys,torch; from svc_a.model import load_model; "
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


def test_nothing_changed_nothing_rebuilt(first: tuple[Path, dict], root_image: str, wheelhouse: Path) -> None:
    service, _ = first
    again = build(service, root_image, wheelhouse)
    assert statuses(again) == {"python": "reused", "torch": "reused", "service": "reused"}


def test_a_code_change_rebuilds_only_the_code(first: tuple[Path, dict], root_image: str, wheelhouse: Path) -> None:
    service, data = first
    before = docker_json("image", "inspect", f"{data['image']['repository']}:{data['image']['tag']}")[0]  # type: ignore[index]
    server = service / "svc_a" / "server.py"
    server.write_text(server.read_text() + "\n# a code change\n")
    git(service, "commit", "-q", "-am", "code change")
    after = build(service, root_image, wheelhouse)
    assert statuses(after) == {"python": "reused", "torch": "reused", "service": "built"}
    [service_layer] = [layer for layer in after["layers"] if layer["layer"] == "service"]
    assert service_layer["reason"] == "changed: code"
    new = docker_json("image", "inspect", f"{after['image']['repository']}:{after['image']['tag']}")[0]  # type: ignore[index]
    old_layers, new_layers = before["RootFS"]["Layers"], new["RootFS"]["Layers"]
    assert len(old_layers) == len(new_layers)
    assert old_layers[:-1] == new_layers[:-1]  # dependencies and weights reused; only the code layer is new
    assert old_layers[-1] != new_layers[-1]


def test_dirty_trees_get_their_own_tags_and_are_not_pushed(
    first: tuple[Path, dict], root_image: str, wheelhouse: Path, registry: str
) -> None:
    service, _ = first
    model = service / "svc_a" / "model.py"
    original = model.read_text()
    tags = []
    try:
        for variant in ("# one\n", "# two\n"):
            model.write_text(original + variant)
            data = build(service, root_image, wheelhouse)
            assert data["dirty"] is True
            tags.append(data["image"]["tag"])
        assert tags[0] != tags[1]
        assert all("-dirty-" in tag for tag in tags)
        refused = mlctl(
            service,
            "build",
            "--root",
            root_image,
            "--wheelhouse",
            str(wheelhouse),
            "--push",
            env={"MLCTL_CONFIG__IMAGE__REGISTRY": f"{registry}/ml"},
        )
        assert refused.exit_code == ExitCode.CONFLICT
        assert refused.stderr.splitlines()[-2].startswith("error: refusing to push svc-a: the service has uncommitted")
    finally:
        model.write_text(original)


def test_push_and_a_second_service_uploads_only_its_own_layers(
    workdir: Path, first: tuple[Path, dict], root_image: str, wheelhouse: Path, registry: str
) -> None:
    service, _ = first
    env = {"MLCTL_CONFIG__IMAGE__REGISTRY": f"{registry}/ml"}
    pushed = build(service, root_image, wheelhouse, "--push", "--tag", "stable", env=env)
    assert pushed["image"]["digest"].startswith("sha256:")
    assert pushed["reference"] == f"{registry}/ml/svc-a:{pushed['image']['tag']}@{pushed['image']['digest']}"
    with urllib.request.urlopen(f"http://{registry}/v2/ml/svc-a/tags/list") as reply:
        assert set(json.loads(reply.read())["tags"]) == {pushed["image"]["tag"], "stable"}
    with urllib.request.urlopen(f"http://{registry}/v2/_catalog") as reply:
        catalog = set(json.loads(reply.read())["repositories"])
    assert {"ml/mlctl-python", "ml/mlctl-torch", "ml/svc-a"} <= catalog

    other = scaffold(workdir, "svc-b")
    second = build(other, root_image, wheelhouse, "--push", env=env)
    assert statuses(second) == {"python": "reused", "torch": "reused", "service": "built"}
    by_image = {p["image"]: p for p in second["pushes"]}
    for base in ("mlctl-python", "mlctl-torch"):
        [push] = [p for name, p in by_image.items() if f"/{base}:" in name]
        assert push["layers"]["pushed"] == 0, push
    [own] = [p for name, p in by_image.items() if "/svc-b:" in name]
    assert own["layers"]["pushed"] == 2, own  # the weights and the code; everything else was there already
    assert own["layers"]["exists"] + own["layers"]["mounted"] >= 5, own
    assert own["bytes_pushed"] < 1024 * 1024


def test_the_plan_names_the_input_that_changed(first: tuple[Path, dict], root_image: str, wheelhouse: Path) -> None:
    service, _ = first
    model = service / "svc_a" / "model.py"
    original = model.read_text()
    model.write_text(original + "# planned\n")
    try:
        result = mlctl(service, "images", "plan", "--root", root_image, "--wheelhouse", str(wheelhouse), "--json")
    finally:
        model.write_text(original)
    assert result.exit_code == 0, result.stderr
    plan = {entry["layer"]: entry for entry in json.loads(result.stdout)}
    assert (plan["python"]["status"], plan["torch"]["status"]) == ("present", "present")
    assert (plan["service"]["status"], plan["service"]["reason"]) == ("build", "changed: code")


def test_list_shows_the_ladder_and_its_users(first: tuple[Path, dict]) -> None:
    service, _ = first
    result = mlctl(service, "images", "list", "--json")
    assert result.exit_code == 0, result.stderr
    images = {entry["layer"]: entry for entry in json.loads(result.stdout) if "svc-a" in entry["used_by"]}
    assert set(images) == {"python", "torch"}
    assert images["torch"]["size"] > 500_000_000
    pruned = mlctl(service, "images", "prune", "--dry-run", "--json")
    assert all("svc-a" not in entry["used_by"] for entry in json.loads(pruned.stdout))


def test_rebuild_forces_a_layer_without_the_cache(first: tuple[Path, dict], root_image: str, wheelhouse: Path) -> None:
    service, _ = first
    data = build(service, root_image, wheelhouse, "--rebuild", "service")
    [layer] = [layer for layer in data["layers"] if layer["layer"] == "service"]
    assert (layer["status"], layer["cached_steps"]) == ("built", 0)


def test_files_that_look_like_secrets_are_refused(first: tuple[Path, dict], root_image: str, wheelhouse: Path) -> None:
    service, _ = first
    secret = service / "svc_a" / "credentials.json"
    secret.write_text('{"token": "not-real"}')
    try:
        result = mlctl(service, "build", "--root", root_image, "--wheelhouse", str(wheelhouse))
    finally:
        secret.unlink()
    assert result.exit_code == ExitCode.INPUT
    assert result.stderr.splitlines()[-2:] == [
        "error: refusing to put files that look like secrets into the image: svc_a/credentials.json",
        "hint: add them to .dockerignore, or pass --allow-secrets if they are really meant to ship",
    ]


def test_a_failing_build_names_the_step_and_shows_its_log(workdir: Path, root_image: str, wheelhouse: Path) -> None:
    service = scaffold(workdir, "svc-broken")
    pyproject = service / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"torch>=2.5",', '"torch>=2.5",\n  "no-such-package-mlctl==1.0",')
    )
    git(service, "commit", "-q", "-am", "a dependency the wheelhouse lacks")
    result = mlctl(service, "build", "--root", root_image, "--wheelhouse", str(wheelhouse))
    assert result.exit_code == ExitCode.BUILD
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error[0].startswith("error: svc-broken:")
    assert "exited with status 1" in error[0]
    assert "RUN echo" in error[0]
    assert "No matching distribution found for no-such-package-mlctl==1.0" in result.stderr


def test_a_root_image_that_cannot_be_found(workdir: Path, wheelhouse: Path, first: tuple[Path, dict]) -> None:
    service, _ = first
    result = mlctl(service, "build", "--root", "127.0.0.1:9/nowhere/root:1", "--wheelhouse", str(wheelhouse))
    assert result.exit_code == ExitCode.BUILD
    assert (
        "error: the root image 127.0.0.1:9/nowhere/root:1 is not on this machine and cannot be pulled" in result.stderr
    )
    assert "hint: pass --root IMAGE with an image made or loaded locally (air-gapped machines)" in result.stderr


def test_no_engine_is_an_environment_problem(first: tuple[Path, dict], wheelhouse: Path) -> None:
    service, _ = first
    result = mlctl(service, "build", "--wheelhouse", str(wheelhouse), env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert "error: no Docker engine answers at unix:///nonexistent.sock" in result.stderr


def test_plain_progress_names_each_layer_and_its_steps(
    first: tuple[Path, dict], root_image: str, wheelhouse: Path
) -> None:
    service, _ = first
    result = mlctl(service, "build", "--root", root_image, "--wheelhouse", str(wheelhouse), "--rebuild", "service")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("• python layer: reusing mlctl/python:")
    assert lines[1].startswith("• torch layer: reusing mlctl/torch:")
    assert lines[2].startswith("• service layer: building svc-a:")
    assert any(line.startswith("  [service] Step 1/") for line in lines)
    assert not any("Using cache" in line for line in lines)  # logs get the steps, not every line
    assert result.stdout.startswith("Built svc-a: svc-a:")
    assert "LAYER    IMAGE" in result.stdout


def test_a_layer_never_changes_a_package_of_its_parent(workdir: Path, root_image: str, wheelhouse: Path) -> None:
    service = scaffold(workdir, "svc-pinned")
    pyproject = service / "pyproject.toml"
    # The torch layer holds typing-extensions 4.x; asking for another version must fail, not downgrade it.
    pyproject.write_text(pyproject.read_text().replace('"torch>=2.5",', '"torch>=2.5",\n  "typing-extensions<4",'))
    git(service, "commit", "-q", "-am", "a requirement that conflicts with the torch layer")
    result = mlctl(service, "build", "--root", root_image, "--wheelhouse", str(wheelhouse))
    assert result.exit_code == ExitCode.BUILD
    assert "typing-extensions<4" in result.stderr
    assert "exited with status 1" in result.stderr


def test_prune_removes_base_layers_no_service_uses(root_image: str, tmp_path: Path, first: tuple[Path, dict]) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {root_image}\nLABEL org.mlctl.layer=python mlctl.python=0.0\n")
    subprocess.run(
        ["docker", "build", "-q", "-t", "mlctl/python:unused-by-anything", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    service, _ = first
    listed = json.loads(mlctl(service, "images", "list", "--json").stdout)
    assert {"layer": "python", "image": "mlctl/python:unused-by-anything"}.items() <= next(
        e for e in listed if e["image"] == "mlctl/python:unused-by-anything"
    ).items()
    result = mlctl(service, "images", "prune")
    assert result.exit_code == 0, result.stderr
    assert "removed mlctl/python:unused-by-anything" in result.stdout
    assert (
        subprocess.run(
            ["docker", "image", "inspect", "mlctl/python:unused-by-anything"], capture_output=True
        ).returncode
        != 0
    )
    still = {e["image"] for e in json.loads(mlctl(service, "images", "list", "--json").stdout)}
    assert any(image.startswith("mlctl/torch:") for image in still)  # in use by svc-a: kept
