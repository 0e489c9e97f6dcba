"""What mlctl reads of a Kubernetes cluster, as frozen views parsed once from the API's JSON.

The Kubernetes adapter (``mlctl.adapters.kube``) turns each object it fetches into one of these;
the GPU gate, the rollout watch and its explanations read fields, never dict keys. Tests build them
directly, or from API-shaped dicts with ``from_api``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: GPU Feature Discovery's labels on GPU nodes.
GPU_PRODUCT = "nvidia.com/gpu.product"
DRIVER_MAJOR = "nvidia.com/cuda.driver.major"
#: The extended resource the NVIDIA device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
#: The Deployment's revision, on it and on the ReplicaSet of each revision.
REVISION = "deployment.kubernetes.io/revision"


def _count(value: Any) -> int:
    """A whole-number quantity as the API gives it (``"2"``, 2); anything else is 0."""
    try:
        return int(str(value if value is not None else "0"))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Taint:
    """A node's taint."""

    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class Node:
    """A node: its labels, allocatable GPUs and taints."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Allocatable nvidia.com/gpu.
    gpus: int = 0
    taints: tuple[Taint, ...] = ()

    @property
    def product(self) -> str | None:
        """The GPU product (GPU Feature Discovery's label), if the node carries it."""
        return self.labels.get(GPU_PRODUCT) or None

    @property
    def driver_major(self) -> int | None:
        """The NVIDIA driver's major version (GPU Feature Discovery's label), if the node carries it."""
        value = self.labels.get(DRIVER_MAJOR)
        return _count(value) if value is not None else None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Node:
        metadata, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        return cls(
            name=str(metadata.get("name", "")),
            labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
            gpus=_count((status.get("allocatable") or {}).get(GPU_RESOURCE)),
            taints=tuple(
                Taint(str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", "")))
                for t in spec.get("taints") or []
            ),
        )


@dataclass(frozen=True)
class Container:
    """A container's status in a pod."""

    name: str
    image: str = ""
    ready: bool = False
    restarts: int = 0
    #: Why it waits (ContainerCreating, ImagePullBackOff, CrashLoopBackOff...), and the kubelet's words.
    waiting_reason: str = ""
    waiting_message: str = ""
    #: How its previous run ended (OOMKilled, Error...) and its exit code, after a restart.
    last_reason: str = ""
    last_exit_code: int | None = None

    @property
    def ended_before(self) -> bool:
        """A previous run of it ended (it has been restarted at least once since)."""
        return bool(self.last_reason) or self.last_exit_code is not None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Container:
        waiting = (obj.get("state") or {}).get("waiting") or {}
        last = (obj.get("lastState") or {}).get("terminated") or {}
        return cls(
            name=str(obj.get("name", "")),
            image=str(obj.get("image", "")),
            ready=bool(obj.get("ready")),
            restarts=_count(obj.get("restartCount")),
            waiting_reason=str(waiting.get("reason", "")),
            waiting_message=str(waiting.get("message", "")),
            last_reason=str(last.get("reason", "")),
            last_exit_code=_count(last["exitCode"]) if "exitCode" in last else None,
        )


@dataclass(frozen=True)
class Pod:
    """A pod: where it is scheduled, what its containers do, what it asks for."""

    name: str
    phase: str = "Pending"
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Being deleted (an old replica on its way out).
    terminating: bool = False
    node: str | None = None
    #: The PodScheduled condition: True, False (with the scheduler's message), or None before it is set.
    scheduled: bool | None = None
    unschedulable_message: str = ""
    containers: tuple[Container, ...] = ()
    #: nvidia.com/gpu asked for, over all its containers' limits.
    gpus: int = 0
    #: GPU products its required node affinity allows (empty: any).
    gpu_products: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return bool(self.containers) and all(c.ready for c in self.containers)

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.containers)

    @property
    def holds_resources(self) -> bool:
        """It counts against its node's allocatable (bound, and not Succeeded or Failed), as the scheduler counts."""
        return self.node is not None and self.phase not in ("Succeeded", "Failed")

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Pod:
        metadata, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        scheduled: bool | None = None
        message = ""
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled":
                scheduled = condition.get("status") == "True"
                message = "" if scheduled else str(condition.get("message") or "")
        gpus = sum(
            _count(((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE))
            for c in spec.get("containers") or []
        )
        return cls(
            name=str(metadata.get("name", "")),
            phase=str(status.get("phase", "Pending")),
            labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
            terminating=bool(metadata.get("deletionTimestamp")),
            node=spec.get("nodeName") or None,
            scheduled=scheduled,
            unschedulable_message=message,
            containers=tuple(Container.from_api(c) for c in status.get("containerStatuses") or []),
            gpus=gpus,
            gpu_products=_required_products(spec),
        )


def _required_products(spec: Mapping[str, Any]) -> tuple[str, ...]:
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == GPU_PRODUCT:
                return tuple(str(v) for v in expression.get("values") or [])
    return ()


@dataclass(frozen=True)
class Deployment:
    """A Deployment: desired replicas, the controller's counts and the rollout's state."""

    name: str
    generation: int = 1
    #: Desired replicas (spec).
    replicas: int = 1
    #: The controller's view (status).
    observed_generation: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    #: Pods of every revision, old ones included.
    total: int = 0
    revision: str | None = None
    progress_deadline_s: int = 600
    #: The controller gave up: Progressing is False with ProgressDeadlineExceeded.
    deadline_exceeded: bool = False
    #: Container name -> image of the pod template.
    images: Mapping[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        """The server container's image (the first container's, for charts that name it otherwise)."""
        return self.images.get("server") or next(iter(self.images.values()), "")

    @property
    def rolled_out(self) -> bool:
        """Every replica of the current revision is updated, available and ready, and no old one is left."""
        return self.rolled_out_to(self.replicas)

    def rolled_out_to(self, wanted: int) -> bool:
        """``wanted`` replicas (at least) of the current revision are updated, available and ready, no old one left."""
        wanted = max(wanted, self.replicas)
        return (
            self.observed_generation >= self.generation
            and self.updated >= wanted
            and self.available >= wanted
            and self.ready >= wanted
            and self.total <= wanted
        )

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Deployment:
        metadata, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        exceeded = any(
            c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            for c in status.get("conditions") or []
        )
        return cls(
            name=str(metadata.get("name", "")),
            generation=_count(metadata.get("generation", 1)),
            replicas=_count(spec.get("replicas", 1)),
            observed_generation=_count(status.get("observedGeneration")),
            ready=_count(status.get("readyReplicas")),
            updated=_count(status.get("updatedReplicas")),
            available=_count(status.get("availableReplicas")),
            total=_count(status.get("replicas")),
            revision=(metadata.get("annotations") or {}).get(REVISION),
            progress_deadline_s=_count(spec.get("progressDeadlineSeconds", 600)),
            deadline_exceeded=exceeded,
            images={str(c.get("name", "")): str(c.get("image", "")) for c in containers},
        )


@dataclass(frozen=True)
class ReplicaSet:
    """A ReplicaSet: which revision of a Deployment it holds."""

    name: str
    revision: str | None = None
    #: The pod-template-hash its pods are labelled with.
    template_hash: str | None = None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> ReplicaSet:
        metadata = obj.get("metadata") or {}
        return cls(
            name=str(metadata.get("name", "")),
            revision=(metadata.get("annotations") or {}).get(REVISION),
            template_hash=(metadata.get("labels") or {}).get("pod-template-hash"),
        )


@dataclass(frozen=True)
class Event:
    """A core/v1 Event about an object, as ``kubectl describe`` lists them."""

    reason: str
    message: str = ""
    type: str = "Normal"
    #: lastTimestamp (or eventTime), for "the latest such event".
    time: str = ""

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Event:
        return cls(
            reason=str(obj.get("reason", "")),
            message=str(obj.get("message") or ""),
            type=str(obj.get("type", "Normal")),
            time=str(obj.get("lastTimestamp") or obj.get("eventTime") or ""),
        )


@dataclass(frozen=True)
class Autoscaler:
    """A HorizontalPodAutoscaler: the bounds it holds its target's replicas in."""

    name: str
    min_replicas: int = 1
    max_replicas: int = 1
    #: The controller's view (status): the replicas it found, and the count it wants.
    current: int = 0
    desired: int = 0

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Autoscaler:
        metadata, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        return cls(
            name=str(metadata.get("name", "")),
            min_replicas=_count(spec.get("minReplicas", 1)),
            max_replicas=_count(spec.get("maxReplicas", 1)),
            current=_count(status.get("currentReplicas")),
            desired=_count(status.get("desiredReplicas")),
        )


def free_gpus(nodes: list[Node], pods: list[Pod]) -> dict[str, int]:
    """Each node's allocatable nvidia.com/gpu less what the pods bound to it ask for (the scheduler's sum)."""
    used: dict[str, int] = {}
    for pod in pods:
        if pod.holds_resources and pod.node:
            used[pod.node] = used.get(pod.node, 0) + pod.gpus
    return {node.name: max(node.gpus - used.get(node.name, 0), 0) for node in nodes}
