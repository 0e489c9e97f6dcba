"""``mlctl deploy --target local`` and ``mlctl down``: the built image on the real Docker engine.

The service image is built once (on the test root image, from the wheelhouse, as test_build does),
then run as the cluster would run it; failures are real ones (a missing weights file, an OOM kill)
explained from the container's own state and log.

The service is named for this test run (conftest.run_name), so its container and images are its own
on an engine other runs share; only they are removed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from building import build, mlctl, scaffold
from conftest import RUN_LABEL, free_port, run_name

pytestmark = [pytest.mark.docker, pytest.mark.slow]
NAME = run_name("svc-local")
CONTAINER = f"mlctl-{NAME}"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def remove_containers() -> None:
    ids = docker("ps", "-aq", "--filter", f"label=org.mlctl.service={NAME}").split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    subprocess.run(["docker", "network", "rm", CONTAINER], capture_output=True)  # the service's network, if made


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, root_image: str, wheelhouse: Path) -> Iterator[Path]:
    service = scaffold(tmp_path_factory.mktemp("local"), NAME)
    build(service, root_image, wheelhouse)
    yield service
    remove_containers()
    images = docker("images", "-q", "--filter", f"label=mlctl.service={NAME}").split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *set(images)], capture_output=True)


@pytest.fixture
def clean(built: Path) -> Iterator[Path]:
    remove_containers()
    yield built
    remove_containers()


def infer(url: str) -> dict:  # type: ignore[type-arg]
    body = {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": [[0.5] * 8]}]}
    request = urllib.request.Request(
        f"{url}/v2/models/{NAME}/infer", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


@contextlib.contextmanager
def steady_load(port: int, clients: int = 2) -> Iterator[tuple[list[int], list[str]]]:
    """Predictions sent back to back on kept-alive connections while the block runs (and a moment around it);
    yields the statuses answered 200 and every failure (another status, a refused or dropped connection)."""
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": [[0.5] * 8]}]})
    stop = threading.Event()
    answered: list[int] = []
    failed: list[str] = []

    def load() -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            try:
                client.request("POST", f"/v2/models/{NAME}/infer", body, {"Content-Type": "application/json"})
                reply = client.getresponse()
                reply.read()
                if reply.status == 200:
                    answered.append(reply.status)
                else:
                    failed.append(f"HTTP {reply.status}")
            except (OSError, http.client.HTTPException) as exc:
                failed.append(repr(exc))
                client.close()
                client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        client.close()

    threads = [threading.Thread(target=load) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        yield answered, failed
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def test_deploy_local_serves_like_the_cluster_and_down_stops_it(clean: Path) -> None:
    port = free_port()
    result = mlctl(clean, "--json", "deploy", "--target", "local", "--port", str(port))
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert (data["status"], data["url"]) == ("ready", f"http://127.0.0.1:{port}")
    server = data["container"]
    assert server.startswith(f"{CONTAINER}-")
    assert data["image"].startswith(f"{NAME}:")
    assert infer(data["url"])["outputs"][0]["shape"] == [1, 3]

    (inspected,) = json.loads(docker("inspect", server))
    host = inspected["HostConfig"]
    assert host["ShmSize"] == 1 << 30  # resources.shm_size
    assert host["Memory"] == 5 << 30  # memory + shm, as the pod's limit
    assert host["ReadonlyRootfs"] is True
    assert host["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"  # its own port, on loopback only
    env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert env["SERVING_MODEL_PATH"] == "/srv/weights/model.pt"
    assert env["SERVING_MAX_BATCH_SIZE"] == "16"
    assert (env["SERVING_METRICS_PORT"], env["SERVING_MAX_CONNECTIONS"]) == ("9090", "1024")  # mlctl.yaml defaults
    # /metrics is served inside the server's container on its own port, and not on the serving one (nor
    # through the front, which forwards to the serving port).
    scrape = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9090/metrics').read().decode())"
    assert "mlserve_requests_total" in docker("exec", server, "python", "-c", scrape)
    with pytest.raises(urllib.error.HTTPError) as moved:
        urllib.request.urlopen(f"{data['url']}/metrics", timeout=10)
    assert moved.value.code == 404
    # The service's port is the front's: the container that stays while servers come and go.
    (front,) = json.loads(docker("inspect", CONTAINER))
    assert front["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert front["HostConfig"]["ReadonlyRootfs"] is True

    logs = mlctl(clean, "logs", "--target", "local")
    assert logs.exit_code == 0, logs.stderr
    assert "Uvicorn running on http://0.0.0.0:8080" in logs.stdout  # the server's own log, not the front's

    # status, as for a cluster release: what runs, from what image, where, and whether it is ready.
    status = mlctl(clean, "--json", "status", "--target", "local")
    assert status.exit_code == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["health"] in ("starting", "healthy")  # the image's HEALTHCHECK, as the engine last ran it
    assert {k: shown[k] for k in ("service", "container", "image", "state", "ready", "url", "exit_code")} == {
        "service": NAME,
        "container": CONTAINER,
        "image": data["image"],
        "state": "running",
        "ready": True,
        "url": f"http://127.0.0.1:{port}",
        "exit_code": 0,
    }
    plain = mlctl(clean, "status", env={"MLCTL_DEPLOY_TARGET": "local"})  # the target from the environment
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout.startswith(f"{CONTAINER}: running, ready")
    assert f"\nimage {data['image']}\nurl   http://127.0.0.1:{port}\n" in plain.stdout

    # Fault 7, on this machine: replacing the running container refused requests while the new one started.
    # Now the new server starts beside the old, the front sends new requests to it once it is ready, and the
    # old one stops only then, finishing what it had (SIGTERM: stop accepting, drain, exit).
    front_id = front["Id"]
    with steady_load(port) as (answered, failed):
        again = mlctl(clean, "deploy", "--target", "local", "--port", str(port))
    assert again.exit_code == 0, again.stderr
    assert failed == []
    assert len(answered) > 20  # it really was under load all along
    assert docker("inspect", "--format", "{{.Id}}", CONTAINER).strip() == front_id  # the front never restarted
    assert f"replacing {server}: it serves until {CONTAINER}-" in again.stderr
    assert f"Running {NAME} at http://127.0.0.1:{port}: ready" in again.stdout
    assert "mlctl down" in again.stdout
    assert docker("ps", "-aq", "--filter", f"name=^{server}$").strip() == ""  # the old server is gone

    down = mlctl(clean, "--json", "down")
    assert down.exit_code == 0, down.stderr
    stopped = json.loads(down.stdout)["stopped"]
    assert stopped[0] == CONTAINER
    assert len(stopped) == 2
    assert docker("ps", "-aq", "--filter", f"label=org.mlctl.service={NAME}").strip() == ""
    assert docker("network", "ls", "-q", "--filter", f"name=^{CONTAINER}$").strip() == ""
    assert "no local container of this service is running" in mlctl(clean, "down").stdout
    gone = mlctl(clean, "status", "--target", "local")
    assert gone.exit_code == 4
    assert gone.stderr == (
        f"error: no local container {CONTAINER}: nothing of {NAME} runs on this machine's Docker engine\n"
        "hint: start it: mlctl deploy --target local\n"
    )


def test_a_crash_is_explained_with_the_servers_last_words(clean: Path) -> None:
    result = mlctl(
        clean,
        "deploy",
        "--target",
        "local",
        "--port",
        str(free_port()),
        env={"MLCTL_CONFIG__MODEL__PATH": "weights/missing.pt"},
    )
    assert result.exit_code == 8, result.stderr
    assert f"error: {CONTAINER}-" in result.stderr
    assert " did not become ready; it was stopped and removed\n" in result.stderr
    assert "why: the server exited (exit code 3)" in result.stderr  # the runtime's code for a failed model load
    assert "FileNotFoundError: weights not found at /srv/weights/missing.pt" in result.stderr  # its own log
    assert docker("ps", "-aq", "--filter", f"name={CONTAINER}").strip() == ""
    assert docker("network", "ls", "-q", "--filter", f"name=^{CONTAINER}$").strip() == ""  # nothing left behind


def test_an_oom_kill_names_the_limit(clean: Path) -> None:
    small = {"MLCTL_CONFIG__RESOURCES__MEMORY": "48Mi", "MLCTL_CONFIG__RESOURCES__SHM_SIZE": "16Mi"}
    result = mlctl(clean, "deploy", "--target", "local", "--port", str(free_port()), env=small)
    assert result.exit_code == 8, result.stderr
    assert "why: the server ran out of memory and was killed (OOMKilled, limit 64Mi)" in result.stderr
    assert "raise resources.memory" in result.stderr


def test_bad_local_input(clean: Path) -> None:
    missing = mlctl(clean, "deploy", "--target", "local", "--image", f"{NAME}:not-built")
    assert missing.exit_code == 4
    assert f"the image {NAME}:not-built is not built: this machine's Docker engine has no such image" in missing.stderr
    assert "mlctl build" in missing.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = mlctl(clean, "deploy", "--target", "local", "--port", str(port))
    assert busy.exit_code == 5
    assert f"port {port} on 127.0.0.1 is in use" in busy.stderr
    flags = mlctl(clean, "deploy", "--target", "local", "--set", "replicaCount=2", "--dry-run")
    assert flags.exit_code == 4
    assert "--set, --dry-run apply to cluster deploys only" in flags.stderr
    wrong = mlctl(clean, "deploy", "--target", "moon")
    assert wrong.exit_code == 4
    assert "--target moon: must be cluster or local" in wrong.stderr
    assert docker("ps", "-aq", "--filter", f"name={CONTAINER}").strip() == ""


def test_another_services_image_is_refused_unless_forced(clean: Path) -> None:
    """An image mlctl build made for another service (its mlctl.service label) is not run as this one
    by mistake; --force runs it. A hand-made image labelled for another service stands for its build."""
    other = run_name("svc-other")
    image = f"{other}:labelled"
    ours = docker("images", "-q", "--filter", f"label=mlctl.service={NAME}").split()[0]
    subprocess.run(
        ["docker", "build", "-q", "-t", image, "--label", f"mlctl.service={other}", "--label", RUN_LABEL, "-"],
        input=f"FROM {ours}\n".encode(),
        capture_output=True,
        check=True,
    )
    try:
        _refused_unless_forced(clean, other, image)
    finally:
        remove_containers()
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


def _refused_unless_forced(clean: Path, other: str, image: str) -> None:
    port = str(free_port())
    refused = mlctl(clean, "deploy", "--target", "local", "--image", image, "--port", port)
    assert refused.exit_code == 4
    assert refused.stderr == (
        f"error: the image {image} is {other}'s (label mlctl.service={other}), not {NAME}'s\n"
        f"hint: pass --image of a build of {NAME}, or --force to run it as {NAME} anyway\n"
    )
    assert docker("ps", "-aq", "--filter", f"name={CONTAINER}").strip() == ""
    # A cluster deploy refuses it too, before anything reaches a cluster (none is configured here).
    cluster = mlctl(clean, "deploy", "--dry-run", "--image", image)
    assert cluster.exit_code == 4
    assert f"error: the image {image} is {other}'s" in cluster.stderr

    forced = mlctl(clean, "--json", "deploy", "--target", "local", "--image", image, "--port", port, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(forced.stdout)["image"] == image
    (inspected,) = json.loads(docker("inspect", CONTAINER))
    assert inspected["Config"]["Image"] == image


def test_day_two_commands_a_local_run_has_no_use_for_say_so(clean: Path) -> None:
    for command, why in (
        ("history", "a local run keeps no revisions (each `mlctl deploy --target local` replaces its container)"),
        ("rollback", "a local run keeps no revisions to go back to"),
        ("diff", "a local run has no manifests to compare with"),
        ("delete", "a local run is not a release to uninstall"),
    ):
        result = mlctl(clean, command, "--target", "local")
        assert result.exit_code == 4, command
        assert result.stderr.startswith(
            f"error: mlctl {command} is for a cluster release, and the target is local (--target local): {why}\n"
        ), result.stderr
    configured = mlctl(clean, "history", env={"MLCTL_CONFIG__DEPLOY__TARGET": "local"})
    assert configured.exit_code == 4
    assert "the target is local (deploy.target: local)" in configured.stderr
    pod = mlctl(clean, "logs", "some-pod", "--target", "local")
    assert (pod.exit_code, pod.stderr) == (
        4,
        "error: POD applies to cluster releases only; the local target runs one container\n",
    )


def test_down_leaves_a_builds_model_prepare_running(clean: Path, root_image: str) -> None:
    # A build's model.prepare runs in a container labelled with the service (org.mlctl.role=prepare):
    # `mlctl down` in another terminal stops the local target's containers, not the build's.
    prepare = f"mlctl-prepare-{NAME}"
    docker(
        "run", "-d", "--name", prepare, "--label", f"org.mlctl.service={NAME}", "--label", "org.mlctl.role=prepare",
        "--label", RUN_LABEL, root_image, "sleep", "300",
    )  # fmt: skip
    try:
        result = mlctl(clean, "down")
        assert result.exit_code == 0, result.stderr
        assert prepare not in result.stdout + result.stderr
        assert docker("inspect", "-f", "{{.State.Running}}", prepare).strip() == "true"
    finally:
        subprocess.run(["docker", "rm", "-f", prepare], capture_output=True)
