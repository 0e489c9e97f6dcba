"""The local deploy target: the built service image on this machine's Docker engine.

It runs the image as the cluster would run it (the same environment from mlctl.yaml, GPUs when the
engine has them, the same /dev/shm and memory limit, a read-only root with a writable /tmp), waits for
``/v2/health/ready`` within the start-up budget with the same live view, and explains a failure the
same way (exit code, OOM kill, the log's last lines). No cluster, registry or Helm is involved.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
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


def container_name(service: str, env: str | None) -> str:
    """The local container of a service (and environment)."""
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

    Raises:
        InputError: the image is not built on this machine, or is another service's (without ``force``).
        ConflictError: the port is taken. EnvironmentProblem: no Docker engine. DeployError: the
        server exited, was OOM-killed, or was not ready within its start-up budget (the container is
        removed; its log is quoted).
    """
    from mlctl.adapters.docker import Containers

    reporter = reporter or NullReporter()
    started = time.monotonic()
    config = loaded.config
    env = loaded.environment
    ref = image
    name = container_name(config.name, env)
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
        if containers.state(name) is not None:
            reporter.step(f"replacing the running {name}")
            containers.stop(name, timeout=grace)
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
        environment = contract.container_environment(config)
        memory_limit = add(config.resources.memory, config.resources.shm_size)
        reporter.step(f"starting {name} from {ref} on 127.0.0.1:{host_port}" + (f" with {gpus} GPU(s)" if gpus else ""))
        containers.run(
            ref,
            name=name,
            env=environment,
            ports={f"{contract.port(config)}/tcp": ("127.0.0.1", host_port)},
            labels={LABEL_SERVICE: config.name, LABEL_ENV: env or ""},
            shm_size=to_bytes(config.resources.shm_size),
            mem_limit=to_bytes(memory_limit),
            gpus=gpus,
            tmpfs={"/tmp": ""},
        )
        url = f"http://127.0.0.1:{host_port}"
        result = LocalDeployResult(config.name, name, ref, url, "started", gpus, 0.0, tuple(warnings))
        if not wait:
            return _with_time(result, started)
        budget = int(timeout_s or config.probes.startup_budget_s)
        reporter.step(f"waiting for {url}/v2/health/ready (up to {budget} s)")
        finding = _watch(containers, name, url, budget, memory_limit, reporter)
        if finding is not None:
            containers.stop(name, timeout=grace)
            raise DeployError(f"{name} did not become ready; it was stopped and removed", findings=[finding])
        return _with_time(LocalDeployResult(config.name, name, ref, url, "ready", gpus, 0.0, tuple(warnings)), started)
    finally:
        containers.close()


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
            if env is None or c.labels.get(LABEL_ENV) == env
        ]
        for container in found:
            reporter.step(f"stopping {container.name}")
            containers.stop(container.name, timeout=int(config.serving.graceful_shutdown_s) + 5)
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
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConflictError(
                f"port {port} on 127.0.0.1 is in use", hint=f"stop what uses it, or pass --port (e.g. {port + 1})"
            ) from None


def _with_time(result: LocalDeployResult, started: float) -> LocalDeployResult:
    import dataclasses

    return dataclasses.replace(result, seconds=round(time.monotonic() - started, 2))
