"""Watching a rollout to the end, saying what the pods are doing, and why when they are stuck."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlctl.deploy.explain import Finding, deadline_finding, explain, timeout_finding
from mlctl.errors import ClusterError
from mlctl.models import PodState
from mlctl.ports import Cluster
from mlctl.reporting import Reporter
from mlctl.views import Deployment, Node, Pod, free_gpus

INSTANCE = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class Rollout:
    """How a rollout ended: ready, or not and why."""

    ok: bool
    findings: tuple[Finding, ...]
    seconds: float
    #: Ready pods of the new revision, and the replicas wanted (the HPA's minReplicas when it is higher).
    ready: int
    desired: int
    pods: tuple[PodState, ...]
    timed_out: bool = False
    #: Seconds a pod of the new revision waited for a node, when that is what ended the watch.
    unschedulable_s: float = 0.0


def pod_state(pod: Pod) -> PodState:
    """A pod in words, the way someone watching a model load thinks of it."""
    waiting = next((c.waiting_reason for c in pod.containers if c.waiting_reason), "")
    if pod.terminating:
        state = "terminating"
    elif pod.ready:
        state = "ready"
    elif not pod.scheduled:
        state = "waiting for a node"
    elif waiting == "ContainerCreating":
        state = "pulling the image"
    elif waiting:
        state = waiting
    elif pod.phase == "Running":
        state = "loading the model"
    else:
        state = pod.phase.lower() or "pending"
    return PodState(pod.name, pod.phase, pod.ready, pod.restarts, pod.node, pod.gpus, state)


def current_pods(cluster: Cluster, namespace: str, release: str, deployment: Deployment) -> list[Pod]:
    """The pods of the Deployment's current revision (not the old ones a rollout is replacing).

    Until the controller has seen the Deployment's latest spec (observedGeneration), the current
    revision's ReplicaSet may not exist yet: there are none of its pods then.
    """
    if deployment.observed_generation < deployment.generation:
        return []
    selector = f"{INSTANCE}={release}"
    for replica_set in cluster.replica_sets(namespace, selector):
        if deployment.revision and replica_set.revision == deployment.revision and replica_set.template_hash:
            return cluster.pods(namespace, f"{selector},pod-template-hash={replica_set.template_hash}")
    return []


def wanted_replicas(cluster: Cluster, namespace: str, release: str, deployment: Deployment) -> int:
    """The replicas a rollout must bring up: the Deployment's, or its HPA's minReplicas when that is higher.

    A chart leaves ``replicas`` to the HPA, so a new Deployment starts at 1 until the HPA scales it to its
    floor: ready means the floor, not the 1.
    """
    autoscaler = cluster.autoscaler(namespace, release)
    return max(deployment.replicas, autoscaler.min_replicas if autoscaler else 0)


def watch_rollout(
    cluster: Cluster,
    namespace: str,
    release: str,
    *,
    timeout_s: float,
    startup_budget_s: int,
    memory_limit: str | None,
    reporter: Reporter,
    unschedulable_budget_s: float = 120,
    poll_s: tuple[float, float] = (0.1, 1.0),
) -> Rollout:
    """Follow the release's Deployment until it is ready, fails for good, or time runs out.

    Ready means every wanted replica (``wanted_replicas``) is updated, available and ready, and no pod of
    an older revision is left. It fails at once on what will not fix itself (image pull, crash loop,
    start-up probe kills, the progress deadline), and when a pod of the new revision has waited longer than
    ``unschedulable_budget_s`` for a node (with the scheduler's reason); else at the timeout.
    """
    started = time.monotonic()
    delay = poll_s[0]
    warned: set[str] = set()
    nodes: list[Node] | None = None
    free: dict[str, int] | None = None
    pods: list[Pod] = []
    waiting_since: dict[str, float] = {}  # pod -> when the watch first saw it unschedulable
    desired = ready = 0
    while True:
        elapsed = time.monotonic() - started
        deployment = cluster.deployment(namespace, release)
        if deployment is not None:
            desired = wanted_replicas(cluster, namespace, release, deployment)
            pods = current_pods(cluster, namespace, release, deployment)
            states = [pod_state(p) for p in pods]
            ready = sum(1 for p in pods if p.ready and not p.terminating)
            if deployment.rolled_out_to(desired):
                return Rollout(True, (), round(elapsed, 2), ready, desired, tuple(states))
            reporter.status(
                _status_line(states, ready, desired),
                f"{elapsed:.0f} s of a {startup_budget_s} s start-up budget",
                [f"{p.name}  {p.state}  node {p.node or '-'}  restarts {p.restarts}" for p in states],
            )
            now = time.monotonic()
            for pod in pods:
                if pod.scheduled is False and not pod.terminating:
                    waiting_since.setdefault(pod.name, now)
                else:
                    waiting_since.pop(pod.name, None)
            if waiting_since and _old_pods_stopping(cluster, namespace, release):
                # They hold what the new pods wait for (maxSurge 0: a GPU): the wait counts from when they are gone.
                waiting_since = dict.fromkeys(waiting_since, now)
            findings = _findings(cluster, namespace, pods, nodes, free, startup_budget_s, memory_limit)
            if any(f.kind in SCHEDULING for f in findings) and nodes is None:
                nodes, free = _nodes(cluster)
                findings = _findings(cluster, namespace, pods, nodes, free, startup_budget_s, memory_limit)
            deadline = deadline_finding(deployment)
            if deadline is not None:
                return Rollout(False, (deadline, *findings), round(elapsed, 2), ready, desired, tuple(states))
            if any(f.final for f in findings):
                return Rollout(False, tuple(findings), round(elapsed, 2), ready, desired, tuple(states))
            longest = max((now - since for since in waiting_since.values()), default=0.0)
            if longest > unschedulable_budget_s:
                nodes, free = _nodes(cluster)  # what is free now, for the verdict
                findings = _findings(cluster, namespace, pods, nodes, free, startup_budget_s, memory_limit)
                found = tuple(f for f in findings if f.kind in SCHEDULING) or tuple(findings)
                return Rollout(
                    False, found, round(elapsed, 2), ready, desired, tuple(states), unschedulable_s=round(longest, 1)
                )
            for finding in findings:
                if finding.kind not in warned:
                    warned.add(finding.kind)
                    later = (
                        f"; after {unschedulable_budget_s:g} s of it the deploy fails"
                        if finding.kind in SCHEDULING
                        else ""
                    )
                    reporter.warn(f"{finding.message} ({finding.hint}{later})")
        if elapsed >= timeout_s:
            if nodes is None:
                nodes, free = _nodes(cluster)
            findings = _findings(cluster, namespace, pods, nodes, free, startup_budget_s, memory_limit)
            states = [pod_state(p) for p in pods]
            if not findings:
                findings = [timeout_finding(states, timeout_s, startup_budget_s)]
            return Rollout(False, tuple(findings), round(elapsed, 2), ready, desired, tuple(states), timed_out=True)
        # Quick at first (most rollouts that fail, fail at once; small ones finish in a second),
        # then once a second: a few GETs per look, kind to the API server during a long model load.
        time.sleep(delay)
        delay = min(poll_s[1], delay * 1.5)


#: Findings about a pod no node can take (yet).
SCHEDULING = ("gpu_shortage", "no_matching_node", "untolerated_taint", "unschedulable")


def _findings(
    cluster: Cluster,
    namespace: str,
    pods: list[Pod],
    nodes: list[Node] | None,
    free: dict[str, int] | None,
    budget: int,
    memory_limit: str | None,
) -> list[Finding]:
    stuck = [p for p in pods if not p.ready]
    if not stuck:
        return []
    events = {p.name: cluster.events(namespace, p.name) for p in stuck}
    logs = {}
    for pod in stuck:
        if pod.restarts > 0:
            try:
                logs[pod.name] = cluster.pod_log(namespace, pod.name, previous=True, tail=20)
            except ClusterError:  # a missing log must not hide the finding itself
                logs[pod.name] = ""
    return explain(stuck, events, nodes, logs=logs, startup_budget_s=budget, memory_limit=memory_limit, free_gpus=free)


def _old_pods_stopping(cluster: Cluster, namespace: str, release: str) -> bool:
    return any(p.terminating for p in cluster.pods(namespace, f"{INSTANCE}={release}"))


def _nodes(cluster: Cluster) -> tuple[list[Node] | None, dict[str, int] | None]:
    """The nodes and their free GPUs; None for what we may not read (explain without it)."""
    try:
        nodes = cluster.nodes()
    except ClusterError:
        return None, None
    try:
        return nodes, free_gpus(nodes, cluster.bound_pods())
    except ClusterError:
        return nodes, None


def _status_line(states: list[PodState], ready: int, desired: int) -> str:
    """``1/2 ready (1 pulling the image)``: the new revision's pods only (old ones on their way out are not)."""
    counts: dict[str, int] = {}
    for state in states:
        if not state.ready:
            counts[state.state] = counts.get(state.state, 0) + 1
    doing = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or ("" if states else "creating pods")
    return f"{ready}/{desired} ready" + (f" ({doing})" if doing else "")
