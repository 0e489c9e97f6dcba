"""Watching a rollout to the end, saying what the pods are doing, and why when they are stuck."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlctl.deploy.explain import Finding, deadline_finding, explain, timeout_finding
from mlctl.errors import ClusterError
from mlctl.models import PodState
from mlctl.ports import Cluster
from mlctl.reporting import Reporter
from mlctl.views import Deployment, Node, Pod

INSTANCE = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class Rollout:
    """How a rollout ended: ready, or not and why."""

    ok: bool
    findings: tuple[Finding, ...]
    seconds: float
    ready: int
    desired: int
    pods: tuple[PodState, ...]
    timed_out: bool = False


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
    """The pods of the Deployment's current revision (not the old ones a rollout is replacing)."""
    selector = f"{INSTANCE}={release}"
    for replica_set in cluster.replica_sets(namespace, selector):
        if deployment.revision and replica_set.revision == deployment.revision and replica_set.template_hash:
            return cluster.pods(namespace, f"{selector},pod-template-hash={replica_set.template_hash}")
    return [p for p in cluster.pods(namespace, selector) if not p.terminating]


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
    """Follow the release's Deployment until it is ready, fails for good, or time runs out.

    Follow the release's Deployment until all replicas are ready, a failure that will not fix
    itself appears (image pull, crash loop, start-up probe kills, progress deadline), or the timeout.
    """
    started = time.monotonic()
    delay = poll_s[0]
    warned: set[str] = set()
    nodes: list[Node] | None = None
    pods: list[Pod] = []
    desired = ready = 0
    while True:
        elapsed = time.monotonic() - started
        deployment = cluster.deployment(namespace, release)
        if deployment is not None:
            desired, ready = deployment.replicas, deployment.ready
            pods = current_pods(cluster, namespace, release, deployment)
            states = [pod_state(p) for p in pods]
            if deployment.rolled_out:
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
    pods: list[Pod],
    nodes: list[Node] | None,
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
    return explain(stuck, events, nodes, logs=logs, startup_budget_s=budget, memory_limit=memory_limit)


def _nodes(cluster: Cluster) -> list[Node] | None:
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
