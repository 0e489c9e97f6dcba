"""kube-scheduler, reduced to the filters a GPU deployment meets, with its FailedScheduling texts.

Per node, the filters run in the default plugin order (NodeUnschedulable, TaintToleration, NodeAffinity,
NodeResourcesFit) and the first failing one gives the node's reason, except resources, where every insufficient
resource counts. The message aggregates reasons across nodes and adds the preemption verdict, as in
``0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint {nvidia.com/gpu:
present}. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is
not helpful for scheduling.`` (taint and affinity failures cannot be fixed by preempting pods; no pod priorities
are modelled, so there are never victims).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from kube.apiserver import LocalClient
from kube.events import EventRecorder
from kube.schema import parse_amount
from kube.store import now

Amounts = dict[str, Decimal]  # resource name -> amount (cpu in cores, memory in bytes, GPUs, pods)
UNRESOLVABLE = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


class Scheduler:
    def __init__(self, client: LocalClient, events: EventRecorder) -> None:
        self._client = client
        self._events = events
        self._last_failure: dict[str, str] = {}  # pod uid -> last FailedScheduling message

    def step(self, pods: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
        usage: dict[str, Amounts] = {node["metadata"]["name"]: defaultdict(Decimal) for node in nodes}
        for pod in pods:
            node_name = pod["spec"].get("nodeName")
            if node_name in usage and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                _add(usage[node_name], pod_requests(pod))
        for pod in pods:
            spec = pod["spec"]
            if spec.get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            chosen, message = self._place(pod, nodes, usage)
            if chosen is None:
                self._unschedulable(pod, message)
            else:
                _add(usage[chosen], pod_requests(pod))
                self._bind(pod, chosen)

    def _place(
        self, pod: dict[str, Any], nodes: list[dict[str, Any]], usage: dict[str, Amounts]
    ) -> tuple[str | None, str]:
        if not nodes:
            return None, "no nodes available to schedule pods"
        reasons: Counter[str] = Counter()
        preemption: Counter[str] = Counter()
        for node in nodes:
            name = node["metadata"]["name"]
            unresolvable = _unresolvable_reason(pod, node)
            if unresolvable:
                reasons[unresolvable] += 1
                preemption[UNRESOLVABLE] += 1
                continue
            missing = _insufficient(pod_requests(pod), node, usage[name])
            if not missing:
                return name, ""
            for reason in missing:
                reasons[reason] += 1
            preemption[NO_VICTIMS] += 1
        total = len(nodes)
        found = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
        verdict = ", ".join(sorted(f"{count} {reason}" for reason, count in preemption.items()))
        return None, f"0/{total} nodes are available: {found}. preemption: 0/{total} nodes are available: {verdict}."

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        uid = pod["metadata"]["uid"]
        if self._last_failure.get(uid) == message:
            return  # the real scheduler retries with backoff; one Event per distinct verdict is enough here
        self._last_failure[uid] = message
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": now(),
        }
        pod.setdefault("status", {})["conditions"] = [condition]
        pod["status"]["phase"] = "Pending"
        self._client.update(pod, status=True)
        self._events.record(pod, "Warning", "FailedScheduling", message, "default-scheduler")

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        self._last_failure.pop(pod["metadata"]["uid"], None)
        pod["spec"]["nodeName"] = node
        bound = self._client.update(pod)
        condition = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now()}
        bound.setdefault("status", {})["conditions"] = [condition]
        bound = self._client.update(bound, status=True)
        meta = pod["metadata"]
        message = f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}"
        self._events.record(bound, "Normal", "Scheduled", message, "default-scheduler")


def pod_requests(pod: dict[str, Any]) -> Amounts:
    """What a pod asks of its node: containers' requests (a limit stands in for a missing request), plus one pod."""
    total: Amounts = defaultdict(Decimal, {"pods": Decimal(1)})
    for container in pod["spec"].get("containers") or []:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, amount in wanted.items():
            total[name] += parse_amount(amount) or 0
    return total


def _add(usage: Amounts, requests: Amounts) -> None:
    for name, amount in requests.items():
        usage[name] += amount


def _unresolvable_reason(pod: dict[str, Any], node: dict[str, Any]) -> str | None:
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return "node(s) were unschedulable"
    tolerations = pod["spec"].get("tolerations") or []
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(_tolerates(t, taint) for t in tolerations):
            return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    if not _affinity_matches(pod, node):
        return "node(s) didn't match Pod's node affinity/selector"
    return None


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or bool(toleration["key"] == taint["key"])
    return bool(toleration.get("key") == taint["key"] and toleration.get("value", "") == taint.get("value", ""))


def _affinity_matches(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    selector = pod["spec"].get("nodeSelector") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        return False
    required = ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    # Terms are ORed; the expressions (and fields) of one term are ANDed; an empty term matches nothing.
    for term in required.get("nodeSelectorTerms") or []:
        expressions = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not expressions and not fields:
            continue
        by_label = all(_expression_matches(e, labels) for e in expressions)
        by_field = all(_expression_matches(e, {"metadata.name": node["metadata"]["name"]}) for e in fields)
        if by_label and by_field:
            return True
    return False


def _expression_matches(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
    value = labels.get(key)
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and value.lstrip("-").isdigit() and values:
        return int(value) > int(values[0]) if operator == "Gt" else int(value) < int(values[0])
    return False


def _insufficient(requests: Amounts, node: dict[str, Any], used: Amounts) -> list[str]:
    allocatable = {
        name: parse_amount(amount) or Decimal(0)
        for name, amount in ((node.get("status") or {}).get("allocatable") or {}).items()
    }
    missing = []
    for name, amount in sorted(requests.items()):
        if amount > 0 and used[name] + amount > allocatable.get(name, Decimal(0)):
            missing.append("Too many pods" if name == "pods" else f"Insufficient {name}")
    return missing
