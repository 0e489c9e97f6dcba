"""The local deploy target: the built service image on this machine's Docker engine.

It runs the image as the cluster would run it (the same environment from mlctl.yaml, GPUs when the
engine has them, the same /dev/shm and memory limit, a read-only root with a writable /tmp), waits for
``/v2/health/ready`` within the start-up budget with the same live view, and explains a failure the
same way (exit code, OOM kill, the log's last lines). No cluster, registry or Helm is involved.

The service's port belongs to a small front (``mlctl.deploy.local_proxy``, in a container of its
own: ``mlctl-SERVICE``), not to the server. Deploying again starts the new server
(``mlctl-SERVICE-ID``) beside the running one on a network of the service, waits until it is ready,
points the front at it, and only then stops the old server, which finishes what it has in flight:
no request fails, as in a cluster's rolling update with a preStop delay. A new server that does not
become ready is removed, and the old one goes on serving.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
import urllib.error
import urllib.request
import uuid
from importlib import resources
from typing import TYPE_CHECKING

from mlctl import contract
from mlctl.config import LoadedConfig
from mlctl.deploy.explain import Finding, crash_finding, oom_finding, startup_budget_finding
from mlctl.errors import ConflictError, DeployError, InputError
from mlctl.models import ImageRef, LocalDeployResult, LocalStatus
from mlctl.quantity import add, to_bytes
from mlctl.reporting import NullReporter, Reporter

if TYPE_CHECKING:
    from mlctl.adapters.docker import Containers, ContainerState

LABEL_SERVICE = "org.mlctl.service"
LABEL_ENV = "org.mlctl.env"
#: "front" (the proxy holding the port) or "server"; containers of an older mlctl have none (a server).
#: Other roles carry the service's label too but are not the local target's: "prepare" is a build's
#: model.prepare, which `down` or a local deploy must not stop.
LABEL_ROLE = "org.mlctl.role"
LOCAL_ROLES = ("server", "front", None)
#: Seconds between pointing the front at the new server and stopping the old one: the requests the front
#: sent off just before are well on their way (the local twin of a pod's preStop delay).
DRAIN_S = 1.0
#: The front's own memory (a small asyncio process) and /dev/shm.
FRONT_MEMORY = 128 << 20
FRONT_SHM = 1 << 20


def container_name(service: str, env: str | None) -> str:
    """The local front of a service (and environment): the container that holds its port."""
    return f"mlctl-{service}" + (f"-{env}" if env else "")


def local_image(loaded: LoadedConfig, image: str | None) -> str:
    """``--image``, else the latest build of the service that ``mlctl build`` recorded in it.

    Raises:
        InputError: a bad reference, or no image given and no build recorded.
    """
    if image:
        return ImageRef.parse(image).reference
    from mlctl.images.record import latest_build

    build = latest_build(loaded.directory, loaded.config.image_repository)
    if build is None:
        raise InputError(
            f"no build of {loaded.config.image_repository} is recorded in this service, so there is no image to run",
            hint="build it first: mlctl build" + (f" --env {loaded.environment}" if loaded.environment else ""),
        )
    return f"{build.image.repository}:{build.image.tag}"  # the local engine knows it by tag


#: The label ``mlctl build`` puts on a service image: the service it was built for.
IMAGE_SERVICE_LABEL = "mlctl.service"


def check_image_owner(service: str, image: str, labels: dict[str, str], *, force: bool = False) -> str | None:
    """Refuse another service's image (its ``mlctl.service`` label names another), unless ``force``.

    Returns:
        A warning to give when the image carries no such label (not built by ``mlctl build``), else None.

    Raises:
        InputError: the image was built for another service and ``force`` is not set.
    """
    owner = labels.get(IMAGE_SERVICE_LABEL)
    if owner is None:
        return f"{image} was not built by mlctl build (it has no {IMAGE_SERVICE_LABEL} label): it runs as {service}"
    if owner != service and not force:
        raise InputError(
            f"the image {image} is {owner}'s (label {IMAGE_SERVICE_LABEL}={owner}), not {service}'s",
            hint=f"pass --image of a build of {service}, or --force to run it as {service} anyway",
        )
    return None


def deploy_local(
    loaded: LoadedConfig,
    image: str,
    *,
    port: int | None = None,
    wait: bool = True,
    timeout_s: float | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> LocalDeployResult:
    """Run ``image`` (``local_image``) as the service on the local Docker engine and wait until it is ready.

    A running one is replaced without a failed request: the new server starts beside it and takes over
    once ready (with ``wait=False``, at once).

    Raises:
        InputError: the image is not built on this machine, or is another service's (without ``force``).
        ConflictError: the port is taken. EnvironmentProblem: no Docker engine. DeployError: the
        server exited, was OOM-killed, or was not ready within its start-up budget (that container is
        removed; its log is quoted; a server that was running goes on serving).
    """
    from mlctl.adapters.docker import Containers

    reporter = reporter or NullReporter()
    started = time.monotonic()
    config = loaded.config
    env = loaded.environment
    ref = image
    front = container_name(config.name, env)
    host_port = port or contract.port(config)
    containers = Containers.connect()
    try:
        labels = containers.image_labels(ref)
        if labels is None:
            raise InputError(
                f"the image {ref} is not built: this machine's Docker engine has no such image",
                hint="build it first: mlctl build" + (f" --env {env}" if env else "") + " (or pass --image)",
            )
        unlabelled = check_image_owner(config.name, ref, labels, force=force)
        if unlabelled:
            reporter.warn(unlabelled)
        grace = int(config.serving.graceful_shutdown_s) + 5
        mine = _containers(containers, config.name, env)
        proxy = next((c for c in mine if c.labels.get(LABEL_ROLE) == "front" and c.status == "running"), None)
        if proxy is not None and proxy.ports.get(f"{contract.port(config)}/tcp") != f"127.0.0.1:{host_port}":
            reporter.step(f"moving {front} to port {host_port}")
            containers.stop(proxy.name, timeout=5)
            proxy = None
        old = [c for c in mine if c.labels.get(LABEL_ROLE) != "front"]
        if proxy is None:
            for container in [*old, *(c for c in mine if c.labels.get(LABEL_ROLE) == "front")]:
                reporter.step(f"stopping {container.name} (it holds the port the new front needs)")
                containers.stop(container.name, timeout=grace)
            old = []
            _check_port(host_port)
        gpus = config.resources.gpu.count if config.runtime.accelerator == "cuda" else 0
        warnings: list[str] = []
        if gpus and not containers.has_gpus():
            warnings.append(
                f"this Docker engine has no NVIDIA runtime, so the {gpus} GPU(s) in mlctl.yaml are not given to "
                "the container: it runs on CPU here (the server picks CUDA when a GPU is present)"
            )
            reporter.warn(warnings[-1])
            gpus = 0
        labels = {LABEL_SERVICE: config.name, LABEL_ENV: env or ""}
        containers.ensure_network(front, labels)
        name = f"{front}-{uuid.uuid4().hex[:6]}"
        memory_limit = add(config.resources.memory, config.resources.shm_size)
        if old:
            reporter.step(f"replacing {', '.join(c.name for c in old)}: it serves until {name} is ready")
        reporter.step(f"starting {name} from {ref}" + (f" with {gpus} GPU(s)" if gpus else ""))
        serving = f"{contract.port(config)}/tcp"
        state = containers.run(
            ref,
            name=name,
            env=contract.container_environment(config),
            ports={serving: ("127.0.0.1", None)},  # its own loopback port, to see it get ready before it serves
            labels={**labels, LABEL_ROLE: "server"},
            shm_size=to_bytes(config.resources.shm_size),
            mem_limit=to_bytes(memory_limit),
            gpus=gpus,
            tmpfs={"/tmp": ""},
            network=front,
        )
        url = f"http://127.0.0.1:{host_port}"
        try:
            if wait:
                budget = int(timeout_s or config.probes.startup_budget_s)
                own = f"http://{state.ports[serving]}"
                reporter.step(f"waiting for {name} to be ready (up to {budget} s)")
                finding = _watch(containers, name, own, budget, memory_limit, reporter)
                if finding is not None:
                    kept = f"; {old[0].name} goes on serving" if old else ""
                    message = f"{name} did not become ready; it was stopped and removed{kept}"
                    raise DeployError(message, findings=[finding])
            address = f"{containers.address(name, front)}:{contract.port(config)}"
            if proxy is None:
                reporter.step(f"starting {front} on 127.0.0.1:{host_port}, in front of {name}")
                containers.run(
                    ref,
                    name=front,
                    env={},
                    ports={serving: ("127.0.0.1", host_port)},
                    labels={**labels, LABEL_ROLE: "front"},
                    shm_size=FRONT_SHM,
                    mem_limit=FRONT_MEMORY,
                    tmpfs={"/tmp": ""},
                    command=["python", "-c", _front_source(), str(contract.port(config)), address],
                    network=front,
                )
                if wait:
                    _until_ready(url, 10.0)
            else:
                _point(containers, front, address)
                reporter.step(f"{front} now sends requests to {name}")
                if old:
                    time.sleep(DRAIN_S)
        except BaseException:
            # Whatever stopped the take-over (the server not ready, the front's port taken meanwhile,
            # Ctrl-C): the new server goes, and a first start leaves nothing behind (front, network);
            # a server that was running goes on serving.
            with contextlib.suppress(Exception):  # the error that got here is the one to report
                containers.stop(name, timeout=grace)
            if proxy is None:
                with contextlib.suppress(Exception):
                    containers.stop(front, timeout=5)
                with contextlib.suppress(Exception):
                    containers.remove_network(front)
            raise
        for container in old:
            reporter.step(f"stopping {container.name} (it finishes the requests it has first)")
            containers.stop(container.name, timeout=grace)
        status = "ready" if wait else "started"
        return _with_time(LocalDeployResult(config.name, name, ref, url, status, gpus, 0.0, tuple(warnings)), started)
    finally:
        containers.close()


def server_container(containers: Containers, service: str, env: str | None) -> str | None:
    """The running server of a service (the newest, while a replacement is under way), if any."""
    servers = [c for c in _containers(containers, service, env) if c.labels.get(LABEL_ROLE) != "front"]
    running = sorted((c for c in servers if c.status == "running"), key=lambda c: c.started_at)
    return running[-1].name if running else (servers[-1].name if servers else None)


def _containers(containers: Containers, service: str, env: str | None) -> list[ContainerState]:
    return [
        c
        for c in containers.find(f"{LABEL_SERVICE}={service}")
        if c.labels.get(LABEL_ENV, "") == (env or "") and c.labels.get(LABEL_ROLE) in LOCAL_ROLES
    ]


def _front_source() -> str:
    return resources.files("mlctl.deploy").joinpath("local_proxy.py").read_text(encoding="utf-8")


def _point(containers: Containers, front: str, address: str) -> None:
    """Tell the front which server to send requests to (it reads the file again for each request)."""
    from mlctl.deploy.local_proxy import BACKEND_FILE

    script = "import os, sys; f = sys.argv[1]; open(f + '.new', 'w').write(sys.argv[2]); os.replace(f + '.new', f)"
    code = containers.exec(front, ["python", "-c", script, BACKEND_FILE, address])
    if code != 0:
        raise DeployError(f"could not point {front} at the new server (exit {code}); the old one still serves")


def _until_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not _ready(url) and time.monotonic() < deadline:
        time.sleep(0.1)


def down(loaded: LoadedConfig, *, reporter: Reporter | None = None) -> list[str]:
    """Stop and remove the service's local containers (of ``loaded``'s environment, if it has one); their names."""
    from mlctl.adapters.docker import Containers

    reporter = reporter or NullReporter()
    config, env = loaded.config, loaded.environment
    containers = Containers.connect()
    try:
        found = [
            c
            for c in containers.find(f"{LABEL_SERVICE}={config.name}")
            if (env is None or c.labels.get(LABEL_ENV) == env) and c.labels.get(LABEL_ROLE) in LOCAL_ROLES
        ]
        # The front first: nothing new reaches a server while it stops.
        found.sort(key=lambda c: c.labels.get(LABEL_ROLE) != "front")
        for container in found:
            reporter.step(f"stopping {container.name}")
            containers.stop(container.name, timeout=int(config.serving.graceful_shutdown_s) + 5)
        for front in {container_name(config.name, c.labels.get(LABEL_ENV) or None) for c in found}:
            containers.remove_network(front)
        return [c.name for c in found]
    finally:
        containers.close()


def local_status(loaded: LoadedConfig) -> LocalStatus:
    """The service's local container (of ``loaded``'s environment): its state, image and readiness.

    Raises:
        InputError: no local container of the service. EnvironmentProblem: no Docker engine.
    """
    from mlctl.adapters.docker import Containers

    config = loaded.config
    name = container_name(config.name, loaded.environment)
    containers = Containers.connect()
    try:
        state = containers.state(name)
    finally:
        containers.close()
    if state is None:
        raise InputError(
            f"no local container {name}: nothing of {config.name} runs on this machine's Docker engine",
            hint="start it: mlctl deploy --target local"
            + (f" --env {loaded.environment}" if loaded.environment else ""),
        )
    address = state.ports.get(f"{contract.port(config)}/tcp", "")
    url = f"http://{address}" if address else ""
    return LocalStatus(
        service=config.name,
        container=name,
        image=state.image,
        state=state.status,
        ready=bool(url) and state.status == "running" and _ready(url),
        health=state.health,
        url=url,
        started_at=state.started_at,
        exit_code=state.exit_code,
        oom_killed=state.oom_killed,
    )


def _watch(
    containers: Containers, name: str, url: str, budget: int, memory_limit: str, reporter: Reporter
) -> Finding | None:
    started = time.monotonic()
    delay = 0.1
    while True:
        elapsed = time.monotonic() - started
        state = containers.state(name)
        if state is None or state.status in ("exited", "dead"):
            return _exit_finding(containers, name, state, memory_limit)
        if _ready(url):
            return None
        doing = "starting" if state.status != "running" else "loading the model"
        reporter.status(
            f"0/1 ready (1 {doing})",
            f"{elapsed:.0f} s of a {budget} s start-up budget",
            [f"{name}  {doing}  {state.image}"],
        )
        if elapsed >= budget:
            return startup_budget_finding(budget)
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)


def _exit_finding(containers: Containers, name: str, state: ContainerState | None, memory_limit: str) -> Finding:
    log = containers.logs(name, tail=20) if state is not None else ""
    if state is not None and state.oom_killed:
        return oom_finding(memory_limit, log)
    code = state.exit_code if state is not None else "?"
    return crash_finding(code, log, "", "fix the error in its log; `mlctl run` serves it from source to debug")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _check_port(port: int) -> None:
    """Refuse a port something listens on.

    The engine publishes the port, not mlctl: a port below 1024, which mlctl's own user may not bind,
    is the engine's to take or refuse, so only "in use" counts.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return
            raise ConflictError(
                f"port {port} on 127.0.0.1 is in use", hint=f"stop what uses it, or pass --port (e.g. {port + 1})"
            ) from None


def _with_time(result: LocalDeployResult, started: float) -> LocalDeployResult:
    import dataclasses

    return dataclasses.replace(result, seconds=round(time.monotonic() - started, 2))
