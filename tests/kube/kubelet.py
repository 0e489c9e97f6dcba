"""The kubelets of all nodes: container lifecycles, probes, pod status, container logs and their Events.

Time is compressed where Kubernetes waits long: a crashed container restarts after 0.5 s, 1 s, then every 2 s
(the CrashLoopBackOff message still says 10s, 20s, 40s, ... as a kubelet would), and a deleted pod is Terminating
for 0.3 s whatever its grace period. Containers are ready as soon as they run, unless ``slow_images`` delays them
(a crashing container is never ready); probe ``initialDelaySeconds`` only counts towards the kill budget.
Init containers are not run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kube.apiserver import LocalClient
from kube.events import EventRecorder
from kube.status import ApiError, not_found
from kube.store import now

RUN_BEFORE_CRASH = 0.2  # seconds a crashing container runs before it exits
PULL_BACKOFF_AFTER = 0.3  # seconds from ErrImagePull to ImagePullBackOff
TERMINATION_GRACE = 0.3  # seconds a deleted pod stays Terminating (its terminationGracePeriodSeconds, compressed)


class Behaviour(Protocol):
    """The test's knobs (FakeCluster): which images fail, crash, or start slowly."""

    bad_images: set[str]
    crash_images: dict[str, tuple[int, list[str]]]
    slow_images: dict[str, float]


@dataclass
class Container:
    """What the kubelet knows of one container of a pod (the API only shows its status)."""

    name: str
    image: str
    state: str = "waiting"  # waiting, running, terminated (only when the pod's restartPolicy says not to restart)
    reason: str = "ContainerCreating"
    message: str = ""
    restarts: int = 0
    pulled: bool = False
    started_at: float = 0.0  # monotonic time of the current run
    started_stamp: str = ""
    wake_at: float = 0.0  # when a waiting container tries again
    ready: bool = False
    started: bool = False
    terminated: dict[str, Any] | None = None
    last_terminated: dict[str, Any] | None = None

    @property
    def container_id(self) -> str:
        return "containerd://" + hashlib.sha256(f"{self.name}/{self.image}/{self.restarts}".encode()).hexdigest()

    @property
    def image_id(self) -> str:
        digest = hashlib.sha256(self.image.encode()).hexdigest()
        return f"{_qualified(self.image).rsplit(':', 1)[0]}@sha256:{digest}" if self.pulled else ""


@dataclass
class PodRuntime:
    ip: str
    started: str
    containers: dict[str, Container]
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # condition -> (status, since)
    terminating_since: float | None = None


class Kubelet:
    def __init__(self, client: LocalClient, events: EventRecorder, behaviour: Behaviour) -> None:
        self._client = client
        self._events = events
        self._behaviour = behaviour
        self._pods: dict[str, PodRuntime] = {}  # by pod uid
        self._addresses = 0
        self._nodes = 0

    def step(self, pods: list[dict[str, Any]], nodes: dict[str, dict[str, Any]], clock: float) -> None:
        alive = set()
        for pod in pods:
            node = nodes.get(pod["spec"].get("nodeName") or "")
            if node is None:
                continue
            uid = pod["metadata"]["uid"]
            alive.add(uid)
            runtime = self._pods.get(uid) or self._admit(pod)
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod, node, runtime, clock)
                continue
            for spec in pod["spec"]["containers"]:
                self._advance(pod, node, runtime, spec, runtime.containers[spec["name"]], clock)
            status = self._status(pod, node, runtime)
            if status != pod.get("status"):
                pod["status"] = status
                self._client.update(pod, status=True)
        for uid in set(self._pods) - alive:
            del self._pods[uid]

    def join(self, node: dict[str, Any], *, cpu: str, memory: str, gpus: int) -> None:
        """Create a Node and report it Ready with its capacity, as a kubelet does when it joins the cluster."""
        self._nodes += 1
        created = self._client.create(node)
        name = node["metadata"]["name"]
        capacity = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
        stamp = now()
        conditions = [
            {
                "type": kind,
                "status": "False",
                "reason": f"KubeletHas{reason}",
                "message": f"kubelet has {text}",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
            for kind, reason, text in (
                ("MemoryPressure", "SufficientMemory", "sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "no disk pressure"),
                ("PIDPressure", "SufficientPID", "sufficient PID available"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }
        )
        version = self._client.server_version()["gitVersion"]
        created["status"] = {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": f"10.0.0.{self._nodes + 10}"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": created["metadata"]["uid"],
                "containerRuntimeVersion": "containerd://1.7.20",
                "kernelVersion": "6.1.0-25-amd64",
                "kubeProxyVersion": version,
                "kubeletVersion": version,
                "machineID": created["metadata"]["uid"].replace("-", ""),
                "operatingSystem": "linux",
                "osImage": "Ubuntu 22.04.4 LTS",
                "systemUUID": created["metadata"]["uid"],
            },
        }
        self._client.update(created, status=True)

    def logs(self, namespace: str, pod_name: str, container: str | None, previous: bool) -> str:
        pod = self._client.get("v1", "Pod", namespace, pod_name)
        if pod is None:
            raise not_found(self._client.resource("v1", "Pod"), pod_name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container is None and len(names) > 1:
            raise ApiError(
                400,
                "BadRequest",
                f"a container name must be specified for pod {pod_name}, choose one of: [{' '.join(names)}]",
            )
        name = container or names[0]
        if name not in names:
            raise ApiError(400, "BadRequest", f"container {name} is not valid for pod {pod_name}")
        runtime = self._pods.get(pod["metadata"]["uid"])
        state = runtime.containers[name] if runtime else None
        if previous and (state is None or state.last_terminated is None):
            raise ApiError(400, "BadRequest", f'previous terminated container "{name}" in pod "{pod_name}" not found')
        if state is None or (state.state == "waiting" and state.last_terminated is None):
            pulling = state is not None and state.reason in ("ErrImagePull", "ImagePullBackOff")
            waiting = "trying and failing to pull image" if pulling else "ContainerCreating"
            raise ApiError(400, "BadRequest", f'container "{name}" in pod "{pod_name}" is waiting to start: {waiting}')
        # A crashing image prints what the test gave it; any other container one start-up line, so that a log
        # reader has something to show.
        started = f"fake kubelet: container {name} started from image {state.image}"
        _, lines = self._behaviour.crash_images.get(state.image, (0, [started]))
        return "".join(f"{line}\n" for line in lines)

    # --- container lifecycle ------------------------------------------------------------------------------------

    def _admit(self, pod: dict[str, Any]) -> PodRuntime:
        self._addresses += 1
        containers = {c["name"]: Container(c["name"], c.get("image", "")) for c in pod["spec"]["containers"]}
        ip = f"10.244.{self._addresses // 250}.{self._addresses % 250 + 2}"
        runtime = PodRuntime(ip=ip, started=now(), containers=containers)
        self._pods[pod["metadata"]["uid"]] = runtime
        return runtime

    def _advance(
        self,
        pod: dict[str, Any],
        node: dict[str, Any],
        runtime: PodRuntime,
        spec: dict[str, Any],
        container: Container,
        clock: float,
    ) -> None:
        behaviour = self._behaviour
        image = container.image
        if container.state == "terminated":
            return
        if container.state == "waiting":
            if clock < container.wake_at:
                return
            if image in behaviour.bad_images:
                self._pull_failed(pod, node, container, clock)
            else:
                self._start(pod, node, container, clock)
            return
        elapsed = clock - container.started_at
        if image in behaviour.crash_images:  # never ready: it exits while still starting up
            if elapsed >= RUN_BEFORE_CRASH:
                exit_code, _ = behaviour.crash_images[image]
                reason = {0: "Completed", 137: "OOMKilled"}.get(exit_code, "Error")
                self._exited(pod, node, container, clock, exit_code, reason)
            return
        ready_after = behaviour.slow_images.get(image, 0.0)
        if elapsed >= ready_after:
            container.started = container.ready = True
            return
        probe_name, probe = next(((n, spec[n]) for n in ("startupProbe", "livenessProbe") if spec.get(n)), ("", None))
        if probe is not None and elapsed >= _budget(probe):
            kind = probe_name.removesuffix("Probe")
            event = self._recorder(pod, node, container)
            event(
                "Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {_probe_failure(probe, spec, runtime.ip)}"
            )
            event("Normal", "Killing", f"Container {container.name} failed {kind} probe, will be restarted")
            self._exited(pod, node, container, clock, 143, "Error")  # SIGTERM, then the restart

    def _terminate(self, pod: dict[str, Any], node: dict[str, Any], runtime: PodRuntime, clock: float) -> None:
        """Stop a Terminating pod's containers, then delete the pod for good (after a compressed grace period)."""
        if runtime.terminating_since is None:
            runtime.terminating_since = clock
            for container in runtime.containers.values():
                if container.state == "running":
                    self._recorder(pod, node, container)("Normal", "Killing", f"Stopping container {container.name}")
        elif clock - runtime.terminating_since >= TERMINATION_GRACE:
            self._client.delete(pod, immediately=True)

    def _pull_failed(self, pod: dict[str, Any], node: dict[str, Any], container: Container, clock: float) -> None:
        image = container.image
        event = self._recorder(pod, node, container)
        if container.reason == "ContainerCreating":
            event("Normal", "Pulling", f'Pulling image "{image}"')
            error = f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": not found'
            event("Warning", "Failed", f'Failed to pull image "{image}": {error}')
            event("Warning", "Failed", "Error: ErrImagePull")
            container.reason, container.message = "ErrImagePull", error
            container.wake_at = clock + PULL_BACKOFF_AFTER
        else:
            event("Normal", "BackOff", f'Back-off pulling image "{image}"')
            event("Warning", "Failed", "Error: ImagePullBackOff")
            container.reason, container.message = "ImagePullBackOff", f'Back-off pulling image "{image}"'
            container.wake_at = clock + 2.0

    def _start(self, pod: dict[str, Any], node: dict[str, Any], container: Container, clock: float) -> None:
        event = self._recorder(pod, node, container)
        if container.pulled:
            event("Normal", "Pulled", f'Container image "{container.image}" already present on machine')
        else:
            event("Normal", "Pulling", f'Pulling image "{container.image}"')
            event(
                "Normal", "Pulled", f'Successfully pulled image "{container.image}" in 100ms (100ms including waiting)'
            )
            container.pulled = True
        event("Normal", "Created", f"Created container {container.name}")
        event("Normal", "Started", f"Started container {container.name}")
        container.state, container.reason, container.message = "running", "", ""
        container.started_at, container.started_stamp = clock, now()
        container.ready = container.started = False

    def _exited(
        self, pod: dict[str, Any], node: dict[str, Any], container: Container, clock: float, exit_code: int, reason: str
    ) -> None:
        terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": container.started_stamp,
            "finishedAt": now(),
            "containerID": container.container_id,
        }
        container.ready = container.started = False
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and exit_code == 0):  # done for good (a Job's or test's pod)
            container.state, container.terminated = "terminated", terminated
            return
        container.last_terminated = terminated
        container.restarts += 1
        meta = pod["metadata"]
        pod_ref = f"{meta['name']}_{meta['namespace']}({meta['uid']})"
        shown_backoff = min(10 * 2 ** (container.restarts - 1), 300)
        container.state, container.reason = "waiting", "CrashLoopBackOff"
        container.message = f"back-off {shown_backoff}s restarting failed container={container.name} pod={pod_ref}"
        container.wake_at = clock + min(0.5 * 2 ** (container.restarts - 1), 2.0)
        message = f"Back-off restarting failed container {container.name} in pod {pod_ref}"
        self._recorder(pod, node, container)("Warning", "BackOff", message)

    def _recorder(
        self, pod: dict[str, Any], node: dict[str, Any], container: Container
    ) -> Callable[[str, str, str], None]:
        """Record Events about one container, as the kubelet does (with the container as ``fieldPath``)."""
        host = node["metadata"]["name"]
        field_path = f"spec.containers{{{container.name}}}"

        def record(type_: str, reason: str, message: str) -> None:
            self._events.record(pod, type_, reason, message, "kubelet", host=host, field_path=field_path)

        return record

    # --- pod status ---------------------------------------------------------------------------------------------

    def _status(self, pod: dict[str, Any], node: dict[str, Any], runtime: PodRuntime) -> dict[str, Any]:
        containers = [runtime.containers[c["name"]] for c in pod["spec"]["containers"]]
        statuses = [_container_status(c) for c in containers]
        unready = [c.name for c in containers if not c.ready]
        not_ready = {
            "reason": "ContainersNotReady",
            "message": f"containers with unready status: [{' '.join(unready)}]",
        }
        if all(c.terminated for c in containers):
            phase = "Succeeded" if all(c.terminated and c.terminated["exitCode"] == 0 for c in containers) else "Failed"
            not_ready = {"reason": "PodCompleted"}
        else:
            started = any(c.state != "waiting" or c.restarts for c in containers)
            phase = "Running" if started else "Pending"
        conditions = [
            self._condition(runtime, "PodReadyToStartContainers", True),
            self._condition(runtime, "Initialized", True),
            self._condition(runtime, "Ready", not unready, not_ready),
            self._condition(runtime, "ContainersReady", not unready, not_ready),
            self._condition(runtime, "PodScheduled", True),
        ]
        host_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
        status = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": runtime.ip,
            "podIPs": [{"ip": runtime.ip}],
            "startTime": runtime.started,
            "containerStatuses": statuses,
            "qosClass": _qos_class(pod),
        }
        return status

    @staticmethod
    def _condition(runtime: PodRuntime, kind: str, value: bool, why: dict[str, str] | None = None) -> dict[str, Any]:
        status = "True" if value else "False"
        previous = runtime.transitions.get(kind)
        if previous is None or previous[0] != status:
            runtime.transitions[kind] = (status, now())
        condition = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": runtime.transitions[kind][1],
        }
        return {**condition, **(why or {})} if not value else condition


def _container_status(container: Container) -> dict[str, Any]:
    if container.state == "running":
        state: dict[str, Any] = {"running": {"startedAt": container.started_stamp}}
    elif container.terminated:
        state = {"terminated": container.terminated}
    else:
        waiting = {"reason": container.reason, **({"message": container.message} if container.message else {})}
        state = {"waiting": waiting}
    status = {
        "name": container.name,
        "image": container.image,
        "imageID": container.image_id,
        "ready": container.ready,
        "restartCount": container.restarts,
        "started": container.started,
        "state": state,
        "lastState": {"terminated": container.last_terminated} if container.last_terminated else {},
    }
    if container.state != "waiting" or container.last_terminated:
        status["containerID"] = container.container_id
    return status


def _budget(probe: dict[str, Any]) -> float:
    """Seconds a probe tolerates failures before the kubelet kills the container."""
    return float(
        probe.get("initialDelaySeconds", 0) + probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)
    )


def _probe_failure(probe: dict[str, Any], container: dict[str, Any], ip: str) -> str:
    handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
    if handler is None:  # exec probes report the command's output; a non-starting server usually prints nothing
        return "command exited with a non-zero status"
    port = handler.get("port")
    if isinstance(port, str) and not port.isdigit():  # a named port
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        port = ports.get(port, port)
    if "httpGet" in probe:
        scheme = str(handler.get("scheme", "HTTP")).lower()
        return (
            f'Get "{scheme}://{ip}:{port}{handler.get("path", "/")}": dial tcp {ip}:{port}: connect: connection refused'
        )
    if "grpc" in probe:
        return f'timeout: failed to connect service "{ip}:{port}" within 1s'
    return f"dial tcp {ip}:{port}: connect: connection refused"


def _qos_class(pod: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in pod["spec"]["containers"]]
    if not any(r.get("limits") or r.get("requests") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(name)
        and (r.get("requests") or r.get("limits") or {}).get(name) == r["limits"][name]
        for r in resources
        for name in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _qualified(image: str) -> str:
    """``vllm/vllm:1.0`` -> ``docker.io/vllm/vllm:1.0``, the form container runtimes report."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"
