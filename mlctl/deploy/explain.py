"""Why a rollout is stuck, in plain words, with the fix.

Why a rollout is stuck, in plain words, with the fix: read from what the cluster says about the
pods (their status, their Events, their logs) and the nodes. Pure functions over ``mlctl.views``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlctl.models import PodState
from mlctl.views import Container, Deployment, Event, Node, Pod

#: Waiting reasons that will not fix themselves.
PULL_FAILURES = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")


@dataclass(frozen=True)
class Finding:
    """One reason a rollout is not progressing."""

    #: gpu_shortage, untolerated_taint, no_matching_node, image_pull, crash, oom, startup_probe, deadline,
    #: unschedulable, timeout
    kind: str
    message: str
    hint: str
    #: True when waiting longer cannot help (a pull that fails, a crash loop); False when it might
    #: (GPUs may free up, an autoscaler may add nodes).
    final: bool


def explain(
    pods: list[Pod],
    events: dict[str, list[Event]],
    nodes: list[Node] | None,
    *,
    logs: dict[str, str] | None = None,
    startup_budget_s: int | None = None,
    memory_limit: str | None = None,
    free_gpus: dict[str, int] | None = None,
) -> list[Finding]:
    """What is wrong with the rollout's pods, most telling first, one finding per kind.

    ``free_gpus`` (each node's allocatable GPUs less what its pods use) makes a GPU shortage name what is
    free where; without it, what each node has.
    """
    found: dict[str, Finding] = {}
    for pod in pods:
        pod_events = events.get(pod.name, [])
        for finding in _pod_findings(
            pod, pod_events, nodes, (logs or {}).get(pod.name, ""), startup_budget_s, memory_limit, free_gpus
        ):
            found.setdefault(finding.kind, finding)
    order = [
        "image_pull",
        "oom",
        "crash",
        "startup_probe",
        "gpu_shortage",
        "no_matching_node",
        "untolerated_taint",
        "unschedulable",
    ]
    return sorted(found.values(), key=lambda f: order.index(f.kind) if f.kind in order else len(order))


def deadline_finding(deployment: Deployment) -> Finding | None:
    """The Deployment controller gave up on the rollout (ProgressDeadlineExceeded), if it did."""
    if not deployment.deadline_exceeded:
        return None
    return Finding(
        "deadline",
        f"the rollout made no progress for {deployment.progress_deadline_s} s (the Deployment's "
        "progressDeadlineSeconds)",
        "see the reasons below; if the model is simply slow to load, raise probes.startup_budget_s",
        True,
    )


def oom_finding(memory_limit: str | None, log: str, restarts: str = "") -> Finding:
    """The server was killed for going over its memory limit."""
    return Finding(
        "oom",
        f"the server ran out of memory and was killed (OOMKilled, limit {memory_limit or 'unknown'})"
        + (f", {restarts}" if restarts else "")
        + _log_tail(log),
        "raise resources.memory in mlctl.yaml (the limit is memory plus shm_size)",
        True,
    )


def crash_finding(exit_code: object, log: str, restarts: str, hint: str) -> Finding:
    """The server exited (or keeps exiting), with its last log lines."""
    verb = "keeps exiting" if restarts else "exited"
    detail = f"exit code {exit_code}" + (f", {restarts}" if restarts else "")
    return Finding("crash", f"the server {verb} ({detail})" + _log_tail(log), hint, True)


def startup_budget_finding(budget: int) -> Finding:
    """Not ready within the start-up budget, where nothing killed it for us (the local target)."""
    return Finding(
        "startup_probe",
        f"the server was not ready within its start-up budget of {budget} s (it was stopped, as the start-up "
        "probe would stop it in a cluster)",
        f"raise probes.startup_budget_s in mlctl.yaml (try {max(2 * budget, budget + 60)} s) if the model is "
        "still loading; the log shows how far it got",
        True,
    )


def timeout_finding(states: list[PodState], timeout_s: float, startup_budget_s: int) -> Finding:
    """Nothing is wrong that the cluster can tell; the replicas are just not ready yet."""
    waiting: dict[str, int] = {}
    for state in states:
        if not state.ready:
            waiting[state.state] = waiting.get(state.state, 0) + 1
    doing = ", ".join(f"{n} {what}" for what, n in sorted(waiting.items())) or "no pods yet"
    return Finding(
        "timeout",
        f"the wait ran out after {timeout_s:.0f} s with nothing failing ({doing})",
        f"wait longer (--timeout); if the model takes longer than probes.startup_budget_s ({startup_budget_s} s) "
        "to load, raise it in mlctl.yaml",
        True,
    )


def _pod_findings(
    pod: Pod,
    events: list[Event],
    nodes: list[Node] | None,
    log: str,
    startup_budget_s: int | None,
    memory_limit: str | None,
    free_gpus: dict[str, int] | None = None,
) -> list[Finding]:
    findings: list[Finding] = []
    for container in pod.containers:
        reason = container.waiting_reason
        if reason in PULL_FAILURES:
            detail = _event_message(events, "Failed") or container.waiting_message
            findings.append(
                Finding(
                    "image_pull",
                    f"the cluster cannot pull the image {container.image}: {_flat(detail) or reason}",
                    "check the image exists (mlctl build --push) and the cluster can read the registry "
                    "(imagePullSecrets for a private one)",
                    True,
                )
            )
        elif container.last_reason == "OOMKilled":  # not any exit 137: a probe's kill is a SIGKILL too
            findings.append(oom_finding(memory_limit, log, f"{container.restarts} restart(s)"))
        elif _startup_killed(events):
            findings.append(_startup_finding(container, startup_budget_s))
        elif reason == "CrashLoopBackOff" or (container.ended_before and container.restarts >= 2):
            exit_code = container.last_exit_code if container.last_exit_code is not None else "?"
            findings.append(
                crash_finding(
                    exit_code,
                    log,
                    f"{container.restarts} restart(s)",
                    "fix the error in its log (`mlctl logs --previous`); run the image locally "
                    "(mlctl deploy --target local) to reproduce it",
                )
            )
    if pod.scheduled is False:
        message = _event_message(events, "FailedScheduling") or pod.unschedulable_message
        findings.extend(_scheduling(pod, message, nodes, free_gpus))
    return findings


def _scheduling(pod: Pod, message: str, nodes: list[Node] | None, free: dict[str, int] | None) -> list[Finding]:
    findings = []
    if "Insufficient nvidia.com/gpu" in message:
        if not nodes:
            offered = "no node offers nvidia.com/gpu"
        elif free is not None:
            offered = "free of allocatable: " + ", ".join(f"{n.name} {free.get(n.name, 0)} of {n.gpus}" for n in nodes)
        else:
            offered = (
                ", ".join(f"{n.name} {n.gpus} allocatable" for n in nodes) + "; GPUs in use by other pods count too"
            )
        findings.append(
            Finding(
                "gpu_shortage",
                f"no node has the {pod.gpus} free nvidia.com/gpu a replica asks for ({offered}); "
                f"the scheduler: {_flat(message)}",
                "wait for GPUs to free up, lower resources.gpu.count, or ask for more GPU nodes",
                False,
            )
        )
    if "untolerated taint" in message:
        taints = sorted(set(re.findall(r"untolerated taint \{([^}]*)\}", message)))
        findings.append(
            Finding(
                "untolerated_taint",
                "nodes carry taints the pod does not tolerate: " + ", ".join(f"{{{t}}}" for t in taints),
                "add a toleration (chart value tolerations) if the service may run there, or ask the platform team",
                False,
            )
        )
    if "didn't match Pod's node affinity/selector" in message:
        have = sorted({n.product for n in nodes or [] if n.product})
        if pod.gpu_products:
            text = f"no node has a GPU of type {', '.join(pod.gpu_products)}"
            text += f" (the nodes have: {', '.join(have)})" if have else " (no node is labelled with a GPU product)"
        else:
            text = "no node matches the pod's node selector or affinity"
        findings.append(
            Finding("no_matching_node", text, "change resources.gpu.products in mlctl.yaml, or add such nodes", False)
        )
    if not findings:
        findings.append(
            Finding(
                "unschedulable",
                f"the pod cannot be scheduled: {_flat(message)}",
                "read the scheduler's message above; `mlctl status` shows the pods",
                False,
            )
        )
    return findings


def _startup_killed(events: list[Event]) -> bool:
    return any(e.reason == "Killing" and "startup probe" in e.message for e in events)


def _startup_finding(container: Container, budget: int | None) -> Finding:
    suggestion = f" (it is {budget} s; try {max(2 * budget, budget + 60)} s)" if budget else ""
    return Finding(
        "startup_probe",
        f"the server was killed by its start-up probe before the model finished loading "
        f"({container.restarts} restart(s)); the start-up budget is too short for this model",
        f"raise probes.startup_budget_s in mlctl.yaml{suggestion}; `mlctl logs` shows how far loading got",
        True,
    )


def _event_message(events: list[Event], reason: str) -> str:
    matching = [e for e in events if e.reason == reason]
    if not matching:
        return ""
    return max(matching, key=lambda e: e.time).message


def _flat(text: str) -> str:
    """The text on one line, whole: messages are never cut (``--json`` readers get all of it)."""
    return " ".join(text.split())


def _log_tail(log: str, lines: int = 8) -> str:
    tail = [line for line in log.strip().splitlines() if line.strip()][-lines:]
    return ("; its last lines:\n    " + "\n    ".join(tail)) if tail else ""
