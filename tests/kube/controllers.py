"""The simulated control plane: Deployment and ReplicaSet controllers, garbage collector, scheduler, kubelets.

All of it runs as one task on the emulator's event loop and ticks every ``TICK`` seconds. It reads and writes
through ``LocalClient``, the same write path HTTP requests take (admission, resourceVersions, watch events), so
Helm's waiters and the Python client see exactly what the controllers did and nothing else.

The Deployment controller follows the real one's arithmetic: a RollingUpdate keeps the pods within replicas +
maxSurge and the available ones at replicas - maxUnavailable or more (so a 1-replica Deployment with maxSurge 0
stops its old pod before the new one starts, and one with maxSurge 1 starts the new pod first); Recreate scales
the old ReplicaSets to 0 and waits for their pods to go. A HorizontalPodAutoscaler holds its target's replicas
within minReplicas..maxReplicas (there are no metrics here, so it never scales on load).
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import time
import traceback
from collections.abc import Callable
from typing import Any

from kube.apiserver import LocalClient
from kube.events import EventRecorder
from kube.kubelet import Behaviour, Kubelet
from kube.scheduler import Scheduler
from kube.status import ApiError
from kube.store import now

TICK = 0.1
REVISION = "deployment.kubernetes.io/revision"
# k8s.io/apimachinery's rand.SafeEncodeString alphabet: no vowels, no confusable digits.
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


class Simulation:
    def __init__(self, client: LocalClient, behaviour: Behaviour) -> None:
        self._client = client
        self._events = EventRecorder(client)
        self._autoscalers = AutoscalerController(client, self._events)
        self._deployments = DeploymentController(client, self._events)
        self._replicasets = ReplicaSetController(client, self._events)
        self._scheduler = Scheduler(client, self._events)
        self._kubelet = Kubelet(client, self._events, behaviour)
        self.errors: list[str] = []

    async def run(self) -> None:
        while True:
            try:
                self.step()
            except Exception:  # a bug in the simulation: keep ticking, and let the test fail at the end
                error = traceback.format_exc()
                if error not in self.errors:
                    self.errors.append(error)
            await asyncio.sleep(TICK)

    def step(self) -> None:
        """One round of every controller, in the order a change flows through a cluster."""
        self._attempt(collect_garbage, self._client)
        for autoscaler in self._client.objects("autoscaling/v2", "HorizontalPodAutoscaler"):
            self._attempt(self._autoscalers.sync, autoscaler)
        for deployment in self._client.objects("apps/v1", "Deployment"):
            self._attempt(self._deployments.sync, deployment)
        for replicaset in self._client.objects("apps/v1", "ReplicaSet"):
            self._attempt(self._replicasets.sync, replicaset)
        nodes = self._client.objects("v1", "Node")
        self._attempt(self._scheduler.step, self._client.objects("v1", "Pod"), nodes)
        by_name = {node["metadata"]["name"]: node for node in nodes}
        self._attempt(self._kubelet.step, self._client.objects("v1", "Pod"), by_name, time.monotonic())

    @staticmethod
    def _attempt(function: Callable[..., None], *args: Any) -> None:
        """A write that lost a race (its object or namespace was deleted meanwhile: 404, 409) is retried on the
        next tick, as controllers requeue; any other rejection is a bug of the simulation."""
        try:
            function(*args)
        except ApiError as error:
            if error.code not in (404, 409):
                raise

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool) -> str:
        return self._kubelet.logs(namespace, pod, container, previous)

    def register_node(self, node: dict[str, Any], *, cpu: str, memory: str, gpus: int) -> None:
        self._kubelet.join(node, cpu=cpu, memory=memory, gpus=gpus)


class AutoscalerController:
    """The HorizontalPodAutoscaler controller's bounds (horizontal.go, reconcileAutoscaler): a target below
    minReplicas is scaled up to it, one above maxReplicas down to it, before any metric is read. No metrics
    exist here, so within the bounds it keeps the current count and says it cannot compute one (ScalingActive
    False), as a cluster without a metrics pipeline does."""

    def __init__(self, client: LocalClient, events: EventRecorder) -> None:
        self._client = client
        self._events = events

    def sync(self, autoscaler: dict[str, Any]) -> None:
        meta, spec = autoscaler["metadata"], autoscaler["spec"]
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind") != "Deployment":
            return
        target = self._client.get("apps/v1", "Deployment", meta["namespace"], ref.get("name", ""))
        if target is None:
            return
        current = int(target["spec"].get("replicas", 1))
        low, high = int(spec.get("minReplicas", 1)), int(spec["maxReplicas"])
        reason = ""
        if current == 0:
            desired = 0  # scaling is disabled while the target is scaled to zero
        elif current > high:
            desired, reason = high, "Current number of replicas above Spec.MaxReplicas"
        elif current < low:
            desired, reason = low, "Current number of replicas below Spec.MinReplicas"
        else:
            desired = current
        status = copy.deepcopy(autoscaler.get("status") or {})
        if reason:
            target["spec"]["replicas"] = desired  # what a write to the scale subresource does
            self._client.update(target)
            message = f"New size: {desired}; reason: {reason}"
            self._events.record(autoscaler, "Normal", "SuccessfulRescale", message, "horizontal-pod-autoscaler")
            status["lastScaleTime"] = now()
        status.update(currentReplicas=current, desiredReplicas=desired)
        status["conditions"] = [
            {
                "type": "AbleToScale",
                "status": "True",
                "reason": "SucceededGetScale",
                "message": "the HPA controller was able to get the target's current scale",
                "lastTransitionTime": _stamp(autoscaler, "AbleToScale"),
            },
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "FailedGetPodsMetric",
                "message": "the HPA was unable to compute the replica count: unable to get metrics (no metrics API)",
                "lastTransitionTime": _stamp(autoscaler, "ScalingActive"),
            },
        ]
        if status != autoscaler.get("status"):
            autoscaler["status"] = status
            self._client.update(autoscaler, status=True)


def _stamp(obj: dict[str, Any], condition: str) -> str:
    """A condition's lastTransitionTime: kept while the condition stays."""
    for existing in (obj.get("status") or {}).get("conditions") or []:
        if existing.get("type") == condition:
            return str(existing.get("lastTransitionTime") or now())
    return now()


class DeploymentController:
    def __init__(self, client: LocalClient, events: EventRecorder) -> None:
        self._client = client
        self._events = events
        self._last_progress: dict[str, float] = {}  # Deployment uid -> monotonic time of its last progress

    def sync(self, deployment: dict[str, Any]) -> None:
        """One pass of the real controller's syncDeployment: at most one scaling step, then the status.

        RollingUpdate follows pkg/controller/deployment/rolling.go: the new ReplicaSet grows while the pods of
        all ReplicaSets stay within replicas + maxSurge (NewRSNewReplicas), and old ones shrink while the
        available pods stay at least replicas - maxUnavailable (reconcileOldReplicaSets, unhealthy ones first).
        Recreate (recreate.go) scales every old ReplicaSet to 0 and waits for their pods to go before the new
        one is created.
        """
        meta, spec = deployment["metadata"], deployment["spec"]
        owned = [
            rs for rs in self._client.objects("apps/v1", "ReplicaSet", meta["namespace"]) if _owned_by(rs, deployment)
        ]
        template_hash = pod_template_hash(spec["template"])
        new = next((rs for rs in owned if rs["metadata"]["labels"].get("pod-template-hash") == template_hash), None)
        old = [rs for rs in owned if rs is not new]
        revision = max((int(rs["metadata"].get("annotations", {}).get(REVISION, 0)) for rs in owned), default=0)
        desired = spec.get("replicas", 1)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        created = False
        if new is not None and int(new["metadata"]["annotations"].get(REVISION, 0)) < revision:
            new["metadata"]["annotations"][REVISION] = str(revision + 1)  # a rollback to an older template
            new = self._client.update(new)
        if recreate:
            new, created = self._recreate(deployment, new, old, template_hash, revision, desired)
        else:
            new, created = self._rolling(deployment, new, old, template_hash, revision, desired)
        if new is not None:
            self._record_revision(deployment, new["metadata"]["annotations"][REVISION])
        self._prune_history(deployment, [rs for rs in old if not rs["spec"].get("replicas")])
        self._write_status(deployment, new, old, created)

    def _rolling(
        self,
        deployment: dict[str, Any],
        new: dict[str, Any] | None,
        old: list[dict[str, Any]],
        template_hash: str,
        revision: int,
        desired: int,
    ) -> tuple[dict[str, Any] | None, bool]:
        surge, unavailable = _fenceposts(deployment)
        if new is None:
            count = _new_replicas(desired, surge, old, None)
            return self._create_replicaset(deployment, template_hash, revision + 1, count), True
        # reconcileNewReplicaSet
        current = new["spec"].get("replicas", 0)
        if current > desired:
            self._scale(deployment, new, desired)
            return new, False
        if current < desired:
            wanted = _new_replicas(desired, surge, old, new)
            if wanted != current:
                self._scale(deployment, new, wanted)
                return new, False
        # reconcileOldReplicaSets
        active = [rs for rs in old if rs["spec"].get("replicas")]
        if not active:
            return new, False
        every = [new, *old]
        min_available = desired - unavailable
        new_unavailable = new["spec"].get("replicas", 0) - _available(new)
        room = _spec_total(every) - min_available - new_unavailable
        if room <= 0:
            return new, False
        for rs in sorted(active, key=lambda r: r["metadata"]["creationTimestamp"]):  # cleanupUnhealthyReplicas
            unhealthy = rs["spec"]["replicas"] - _available(rs)
            if room <= 0 or unhealthy <= 0:
                continue
            cut = min(room, unhealthy)
            self._scale(deployment, rs, rs["spec"]["replicas"] - cut)
            room -= cut
        surplus = sum(_available(rs) for rs in every) - min_available  # scaleDownOldReplicaSetsForRollingUpdate
        for rs in sorted(active, key=lambda r: r["metadata"]["creationTimestamp"]):
            replicas = self._client.get("apps/v1", "ReplicaSet", rs["metadata"]["namespace"], rs["metadata"]["name"])
            if surplus <= 0 or replicas is None or not replicas["spec"].get("replicas"):
                continue
            cut = min(surplus, replicas["spec"]["replicas"])
            self._scale(deployment, replicas, replicas["spec"]["replicas"] - cut)
            surplus -= cut
        return new, False

    def _recreate(
        self,
        deployment: dict[str, Any],
        new: dict[str, Any] | None,
        old: list[dict[str, Any]],
        template_hash: str,
        revision: int,
        desired: int,
    ) -> tuple[dict[str, Any] | None, bool]:
        if any(rs["spec"].get("replicas") or rs.get("status", {}).get("replicas") for rs in old):
            for rs in old:  # the new ReplicaSet waits until the old pods are gone
                self._scale(deployment, rs, 0)
            return new, False
        if new is None:
            return self._create_replicaset(deployment, template_hash, revision + 1, desired), True
        self._scale(deployment, new, desired)
        return new, False

    def _create_replicaset(
        self, deployment: dict[str, Any], template_hash: str, revision: int, replicas: int
    ) -> dict[str, Any]:
        meta, spec = deployment["metadata"], deployment["spec"]
        template = copy.deepcopy(spec["template"])
        labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": template_hash}
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
        replicaset = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{template_hash}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {
                    REVISION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(replicas),
                    "deployment.kubernetes.io/max-replicas": str(replicas + _max_surge(deployment)),
                },
                "ownerReferences": [owner_reference(deployment)],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": template},
        }
        created = self._client.create(replicaset)
        message = f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}"
        self._events.record(deployment, "Normal", "ScalingReplicaSet", message, "deployment-controller")
        return created

    def _record_revision(self, deployment: dict[str, Any], revision: str) -> None:
        """The Deployment carries the revision of its current ReplicaSet (``kubectl rollout history`` reads it)."""
        annotations = deployment["metadata"].setdefault("annotations", {})
        if annotations.get(REVISION) != revision:
            annotations[REVISION] = revision
            self._client.update(deployment)

    def _scale(self, deployment: dict[str, Any], replicaset: dict[str, Any], replicas: int) -> None:
        current = replicaset["spec"].get("replicas", 0)
        if current == replicas:
            return
        replicaset["spec"]["replicas"] = replicas
        self._client.update(replicaset)
        direction = "up" if replicas > current else "down"
        message = f"Scaled {direction} replica set {replicaset['metadata']['name']} from {current} to {replicas}"
        self._events.record(deployment, "Normal", "ScalingReplicaSet", message, "deployment-controller")

    def _prune_history(self, deployment: dict[str, Any], idle: list[dict[str, Any]]) -> None:
        limit = deployment["spec"].get("revisionHistoryLimit", 10)
        idle.sort(key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, 0)))
        for replicaset in idle[: max(len(idle) - limit, 0)]:
            if not replicaset.get("status", {}).get("replicas"):
                self._client.delete(replicaset)

    def _write_status(
        self, deployment: dict[str, Any], new: dict[str, Any] | None, old: list[dict[str, Any]], created: bool
    ) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        desired = spec.get("replicas", 1)
        sets = [rs for rs in [new, *old] if rs is not None]
        counts = {
            "replicas": sum(rs.get("status", {}).get("replicas", 0) for rs in sets),
            "updatedReplicas": (new or {}).get("status", {}).get("replicas", 0),
            "readyReplicas": sum(rs.get("status", {}).get("readyReplicas", 0) for rs in sets),
            "availableReplicas": sum(rs.get("status", {}).get("availableReplicas", 0) for rs in sets),
        }
        counts["unavailableReplicas"] = max(desired - counts["availableReplicas"], 0)
        previous = deployment.get("status") or {}
        conditions = {c["type"]: c for c in previous.get("conditions") or []}
        available = counts["availableReplicas"] >= desired - _max_unavailable(deployment)
        if available:
            reason, message = "MinimumReplicasAvailable", "Deployment has minimum availability."
        else:
            reason, message = "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
        conditions["Available"] = _condition(conditions.get("Available"), "Available", available, reason, message)
        progressing = self._progressing(deployment, new, counts, conditions.get("Progressing"), created)
        if progressing is not None:
            conditions["Progressing"] = progressing
        status = {
            "observedGeneration": meta.get("generation", 1),
            **{key: value for key, value in counts.items() if value},  # zero counts are omitted, as in the API
            "conditions": [conditions[kind] for kind in ("Available", "Progressing") if kind in conditions],
        }
        if status != previous:
            deployment["status"] = status
            self._client.update(deployment, status=True)

    def _progressing(
        self,
        deployment: dict[str, Any],
        new: dict[str, Any] | None,
        counts: dict[str, int],
        current: dict[str, Any] | None,
        created: bool,
    ) -> dict[str, Any] | None:
        """The Progressing condition as the real controller sets it (syncRolloutStatus)."""
        if new is None:
            return current
        name = new["metadata"]["name"]
        desired = deployment["spec"].get("replicas", 1)
        clock = time.monotonic()
        uid = deployment["metadata"]["uid"]
        previous = deployment.get("status") or {}
        changed_spec = previous.get("observedGeneration") != deployment["metadata"].get("generation")
        made_progress = created or changed_spec or _progressed(previous, counts)
        if made_progress or uid not in self._last_progress:
            self._last_progress[uid] = clock
        complete = counts["updatedReplicas"] == counts["replicas"] == counts["availableReplicas"] == desired
        if complete:
            return _condition(
                current,
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}" has successfully progressed.',
            )
        if created:
            return _condition(current, "Progressing", True, "NewReplicaSetCreated", f'Created new replica set "{name}"')
        if made_progress:
            return _condition(current, "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.')
        deadline = deployment["spec"].get("progressDeadlineSeconds", 600)
        finished = current is not None and current.get("reason") == "NewReplicaSetAvailable"
        if not finished and clock - self._last_progress[uid] > deadline:
            return _condition(
                current,
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}" has timed out progressing.',
            )
        return current


class ReplicaSetController:
    def __init__(self, client: LocalClient, events: EventRecorder) -> None:
        self._client = client
        self._events = events
        self._created = 0

    def sync(self, replicaset: dict[str, Any]) -> None:
        meta, spec = replicaset["metadata"], replicaset["spec"]
        pods = [p for p in self._client.objects("v1", "Pod", meta["namespace"]) if _owned_by(p, replicaset)]
        active = [
            p
            for p in pods
            if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")
        ]
        missing = spec.get("replicas", 1) - len(active)
        for _ in range(missing):
            active.append(self._create_pod(replicaset))
        if missing < 0:
            # Like the real controller: unscheduled first, then pending, then not ready pods go first.
            active.sort(
                key=lambda p: (
                    bool(p["spec"].get("nodeName")),
                    p.get("status", {}).get("phase") == "Running",
                    _pod_ready(p),
                )
            )
            surplus, active = active[:-missing], active[-missing:]
            for pod in surplus:
                self._client.delete(pod)
                message = f"Deleted pod: {pod['metadata']['name']}"
                self._events.record(replicaset, "Normal", "SuccessfulDelete", message, "replicaset-controller")
        ready = sum(1 for p in active if _pod_ready(p))
        status = {
            "replicas": len(active),
            **({"fullyLabeledReplicas": len(active)} if active else {}),
            **({"readyReplicas": ready, "availableReplicas": ready} if ready else {}),
            "observedGeneration": meta.get("generation", 1),
        }
        if status != replicaset.get("status"):
            replicaset["status"] = status
            self._client.update(replicaset, status=True)

    def _create_pod(self, replicaset: dict[str, Any]) -> dict[str, Any]:
        meta, template = replicaset["metadata"], replicaset["spec"]["template"]
        self._created += 1
        suffix = _safe_encode(str(_fnv32a(f"{meta['uid']}/{self._created}")))[:5]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **copy.deepcopy(template.get("metadata") or {}),
                "name": f"{meta['name']}-{suffix}",
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "ownerReferences": [owner_reference(replicaset)],
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        created = self._client.create(pod)
        message = f"Created pod: {created['metadata']['name']}"
        self._events.record(replicaset, "Normal", "SuccessfulCreate", message, "replicaset-controller")
        return created


def collect_garbage(client: LocalClient) -> None:
    """Delete objects whose owners are all gone (background cascading deletion)."""
    uids = client.uids()
    for obj in client.dependents():
        if not any(ref.get("uid") in uids for ref in obj["metadata"]["ownerReferences"]):
            client.delete(obj)


def _progressed(before: dict[str, Any], now: dict[str, int]) -> bool:
    """deploymentutil.DeploymentProgressing: more updated, ready or available pods, or fewer old ones."""

    def old_pods(status: dict[str, Any]) -> int:
        return int(status.get("replicas", 0)) - int(status.get("updatedReplicas", 0))

    return (
        now["updatedReplicas"] > before.get("updatedReplicas", 0)
        or old_pods(now) < old_pods(before)
        or now["readyReplicas"] > before.get("readyReplicas", 0)
        or now["availableReplicas"] > before.get("availableReplicas", 0)
    )


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_template_hash(template: dict[str, Any]) -> str:
    """Like the controller's: FNV-32a of the template, its decimal digits encoded with SafeEncodeString."""
    return _safe_encode(str(_fnv32a(json.dumps(template, sort_keys=True))))


def _fnv32a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def _safe_encode(text: str) -> str:
    return "".join(_ALPHANUMS[ord(char) % len(_ALPHANUMS)] for char in text)


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(
        ref.get("controller") and ref.get("uid") == owner["metadata"]["uid"]
        for ref in obj["metadata"].get("ownerReferences") or []
    )


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _percent_or_int(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = total * int(value[:-1]) / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


def _available(replicaset: dict[str, Any]) -> int:
    return int(replicaset.get("status", {}).get("availableReplicas", 0))


def _spec_total(replicasets: list[dict[str, Any]]) -> int:
    """GetReplicaCountForReplicaSets: the pods the ReplicaSets ask for."""
    return sum(int(rs["spec"].get("replicas", 0)) for rs in replicasets)


def _new_replicas(desired: int, surge: int, old: list[dict[str, Any]], new: dict[str, Any] | None) -> int:
    """deploymentutil.NewRSNewReplicas: how far the new ReplicaSet may grow within replicas + maxSurge."""
    current = new["spec"].get("replicas", 0) if new is not None else 0
    total = _spec_total(old) + current
    if total >= desired + surge:
        return int(current)
    return int(current + min(desired + surge - total, desired - current))


def _fenceposts(deployment: dict[str, Any]) -> tuple[int, int]:
    """deploymentutil.ResolveFenceposts: maxSurge rounds up, maxUnavailable down; both 0 means unavailable 1."""
    surge, unavailable = _max_surge(deployment), _max_unavailable(deployment)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, int(deployment["spec"].get("replicas", 1)))


def _max_unavailable(deployment: dict[str, Any]) -> int:
    strategy = deployment["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    return _percent_or_int(value, deployment["spec"].get("replicas", 1), round_up=False)


def _max_surge(deployment: dict[str, Any]) -> int:
    strategy = deployment["spec"].get("strategy") or {}
    value = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    return _percent_or_int(value, deployment["spec"].get("replicas", 1), round_up=True)


def _condition(current: dict[str, Any] | None, kind: str, value: bool, reason: str, message: str) -> dict[str, Any]:
    """A Deployment condition; the timestamps only move when something about it changes."""
    status = "True" if value else "False"
    stamp = now()
    if current is not None and (current["status"], current["reason"], current["message"]) == (status, reason, message):
        return current
    transition = current["lastTransitionTime"] if current is not None and current["status"] == status else stamp
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": stamp,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }
