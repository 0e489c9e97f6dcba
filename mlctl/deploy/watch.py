"""Watching a rollout to the end, saying what the pods are doing, and why when they are stuck."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlctl.deploy.explain import Finding, deadline_finding, explain, timeout_finding
from mlctl.errors import ClusterError
from mlctl.models import PodState
from mlctl.reporting import Reporter

if TYPE_CHECKING:
    from mlctl.adapters.kube import Cluster

INSTANCE = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class Rollout:
    ok: bool
    findings: tuple[Finding, ...]
    seconds: float
    ready: int
    desired: int
    pods: tuple[PodState, ...]
    timed_out: bool = False


def pod_state(pod: dict[str, Any]) -> PodState:
    """A pod in words, the way someone watching a model load thinks of it."""
    status = pod.get("status", {})
    containers = status.get("containerStatuses") or []
    ready = bool(containers) and all(c.get("ready") for c in containers)
    restarts = sum(int(c.get("restartCount", 0)) for c in containers)
    scheduled = any(
        c.get("type") == "PodScheduled" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    waiting = next(
        ((c.get("state") or {}).get("waiting") or {} for c in containers if (c.get("state") or {}).get("waiting")), {}
    )
    if pod.get("metadata", {}).get("deletionTimestamp"):
        state = "terminating"
    elif ready:
        state = "ready"
    elif not scheduled:
        state = "waiting for a node"
    elif waiting.get("reason") in ("ContainerCreating", "PodInitializing", "ErrImagePull", "ImagePullBackOff"):
        state = "pulling the image" if waiting.get("reason") == "ContainerCreating" else waiting.get("reason", "")
    elif waiting.get("reason"):
        state = str(waiting["reason"])
    elif status.get("phase") == "Running":
        state = "loading the model"
    else:
        state = str(status.get("phase", "pending")).lower()
    gpus = 0
    for container in pod.get("spec", {}).get("containers", []):
        gpus += int(str(((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", "0")) or 0)
    return PodState(
        pod["metadata"]["name"],
        str(status.get("phase", "")),
        ready,
        restarts,
        pod.get("spec", {}).get("nodeName"),
        gpus,
        state,
    )


def current_pods(cluster: Cluster, namespace: str, release: str, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods of the Deployment's current revision (not the old ones a rollout is replacing)."""
    selector = f"{INSTANCE}={release}"
    revision = (deployment.get("metadata", {}).get("annotations") or {}).get("deployment.kubernetes.io/revision")
    for replica_set in cluster.replica_sets(namespace, selector):
        annotations = replica_set.get("metadata", {}).get("annotations") or {}
        if revision and annotations.get("deployment.kubernetes.io/revision") == revision:
            template_hash = (replica_set.get("metadata", {}).get("labels") or {}).get("pod-template-hash")
            if template_hash:
                return cluster.pods(namespace, f"{selector},pod-template-hash={template_hash}")
    return [p for p in cluster.pods(namespace, selector) if not p.get("metadata", {}).get("deletionTimestamp")]


def watch_rollout(
    cluster: Cluster,
    namespace: str,
    release: str,
    *,
    timeout_s: float,
    startup_budget_s: int,
    memory_limit: str | None,
    reporter: Reporter,
    poll_s: tuple[float, float] = (0.1, 1.0),
) -> Rollout:
    """Follow the release's Deployment until all replicas are ready, a failure that will not fix
    itself appears (image pull, crash loop, start-up probe kills, progress deadline), or the timeout."""
    started = time.monotonic()
    delay = poll_s[0]
    warned: set[str] = set()
    nodes: list[dict[str, Any]] | None = None
    pods: list[dict[str, Any]] = []
    desired = ready = 0
    while True:
        elapsed = time.monotonic() - started
        deployment = cluster.deployment(namespace, release)
        if deployment is not None:
            spec, status = deployment.get("spec", {}), deployment.get("status", {})
            desired = int(spec.get("replicas", 1))
            ready = int(status.get("readyReplicas", 0) or 0)
            observed = int(status.get("observedGeneration", 0) or 0) >= int(deployment["metadata"].get("generation", 1))
            updated = int(status.get("updatedReplicas", 0) or 0)
            available = int(status.get("availableReplicas", 0) or 0)
            total = int(status.get("replicas", 0) or 0)
            pods = current_pods(cluster, namespace, release, deployment)
            states = [pod_state(p) for p in pods]
            if observed and updated >= desired and available >= desired and ready >= desired and total <= desired:
                return Rollout(True, (), round(elapsed, 2), ready, desired, tuple(states))
            reporter.status(
                _status_line(states, ready, desired),
                f"{elapsed:.0f} s of a {startup_budget_s} s start-up budget",
                [f"{p.name}  {p.state}  node {p.node or '-'}  restarts {p.restarts}" for p in states],
            )
            findings = _findings(cluster, namespace, pods, nodes, startup_budget_s, memory_limit)
            if (
                any(f.kind in ("gpu_shortage", "no_matching_node", "untolerated_taint") for f in findings)
                and nodes is None
            ):
                nodes = _nodes(cluster)
                findings = _findings(cluster, namespace, pods, nodes, startup_budget_s, memory_limit)
            deadline = deadline_finding(deployment)
            if deadline is not None:
                return Rollout(False, (deadline, *findings), round(elapsed, 2), ready, desired, tuple(states))
            if any(f.final for f in findings):
                return Rollout(False, tuple(findings), round(elapsed, 2), ready, desired, tuple(states))
            for finding in findings:
                if finding.kind not in warned:
                    warned.add(finding.kind)
                    reporter.warn(f"{finding.message} ({finding.hint})")
        if elapsed >= timeout_s:
            findings = _findings(cluster, namespace, pods, nodes or _nodes(cluster), startup_budget_s, memory_limit)
            states = [pod_state(p) for p in pods]
            if not findings:
                findings = [timeout_finding(states, timeout_s, startup_budget_s)]
            return Rollout(False, tuple(findings), round(elapsed, 2), ready, desired, tuple(states), timed_out=True)
        # Quick at first (most rollouts that fail, fail at once; small ones finish in a second),
        # then once a second: a few GETs per look, kind to the API server during a long model load.
        time.sleep(delay)
        delay = min(poll_s[1], delay * 1.5)


def _findings(
    cluster: Cluster,
    namespace: str,
    pods: list[dict[str, Any]],
    nodes: list[dict[str, Any]] | None,
    budget: int,
    memory_limit: str | None,
) -> list[Finding]:
    stuck = [p for p in pods if not pod_state(p).ready]
    if not stuck:
        return []
    events = {p["metadata"]["name"]: cluster.events(namespace, p["metadata"]["name"]) for p in stuck}
    logs = {}
    for pod in stuck:
        if any(int(c.get("restartCount", 0)) > 0 for c in pod.get("status", {}).get("containerStatuses") or []):
            try:
                logs[pod["metadata"]["name"]] = cluster.pod_log(
                    namespace, pod["metadata"]["name"], previous=True, tail=20
                )
            except ClusterError:  # a missing log must not hide the finding itself
                logs[pod["metadata"]["name"]] = ""
    return explain(stuck, events, nodes, logs=logs, startup_budget_s=budget, memory_limit=memory_limit)


def _nodes(cluster: Cluster) -> list[dict[str, Any]] | None:
    try:
        return cluster.nodes()
    except ClusterError:
        return None  # not allowed to read nodes: explain without them


def _status_line(states: list[PodState], ready: int, desired: int) -> str:
    counts: dict[str, int] = {}
    for state in states:
        if not state.ready:
            counts[state.state] = counts.get(state.state, 0) + 1
    doing = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or ("" if states else "creating pods")
    # The pods say it first; the Deployment's count follows a moment later.
    ready = max(ready, sum(1 for state in states if state.ready))
    return f"{ready}/{desired} ready" + (f" ({doing})" if doing else "")
