"""Why a rollout is stuck, and whether a cluster can run a replica at all: the explanations and the GPU
gate over views parsed from the API's own JSON (pod status, Events, Nodes as a real API server returns
them, with the scheduler's and kubelet's real message texts). The same code runs against the emulator in
test_deploy.py."""

from __future__ import annotations

from typing import Any

import pytest

from mlctl.deploy.explain import deadline_finding, explain
from mlctl.deploy.gate import GpuRequest, gpu_gate
from mlctl.errors import DeployError
from mlctl.views import Container, Deployment, Event, Node, Pod

IMAGE = "registry.example.com/acme/demo-svc:1f2e-g0123@sha256:" + "ab" * 32


def pod(
    *,
    scheduled: bool = True,
    waiting: dict[str, str] | None = None,
    terminated: dict[str, Any] | None = None,
    restarts: int = 0,
    gpus: int = 1,
    products: list[str] | None = None,
) -> Pod:
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False"}]
    if not scheduled:
        conditions[0].update(reason="Unschedulable", message="0/1 nodes are available")
    affinity = {}
    if products:
        term = {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": products}]}
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    container_status = {
        "name": "server",
        "image": IMAGE,
        "imageID": "",
        "ready": False,
        "restartCount": restarts,
        "state": {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-11-28T10:00:00Z"}},
        "lastState": {"terminated": terminated} if terminated else {},
    }
    return Pod.from_api({
        "metadata": {"name": "demo-svc-7d9f8-abcde", "namespace": "ml"},
        "spec": {
            "containers": [{"name": "server", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
            **({"affinity": affinity} if affinity else {}),
        },
        "status": {
            "phase": "Pending" if not scheduled else "Running",
            "conditions": conditions,
            **({"containerStatuses": [container_status]} if scheduled else {}),
        },
    })  # fmt: skip


def event(reason: str, message: str, kind: str = "Warning") -> Event:
    return Event.from_api({"type": kind, "reason": reason, "message": message, "lastTimestamp": "2026-11-28T10:00:05Z"})


def node(name: str, gpus: int, labels: dict[str, str] | None = None) -> Node:
    return Node.from_api(
        {
            "metadata": {"name": name, "labels": labels or {}},
            "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": str(gpus)}},
        }
    )


def gpus(count: int, products: tuple[str, ...] = (), min_driver: str | None = None) -> GpuRequest:
    return GpuRequest(count, products, min_driver)


def explain_one(p: Pod, events: list[Event], nodes: list[Node] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    findings = explain([p], {p.name: events}, nodes, **kw)
    assert len(findings) >= 1
    return findings


def test_insufficient_gpus_name_the_request_and_each_node() -> None:
    message = (
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are available: "
        "2 No preemption victims found for incoming pod."
    )
    (finding,) = explain_one(
        pod(scheduled=False, gpus=2), [event("FailedScheduling", message)], [node("gpu-a", 1), node("gpu-b", 2)]
    )
    assert finding.kind == "gpu_shortage"
    # Without the pods on the nodes (not allowed to list them), what each node has.
    assert finding.message == (
        "no node has the 2 free nvidia.com/gpu a replica asks for (gpu-a 1 allocatable, gpu-b 2 allocatable; GPUs in "
        f"use by other pods count too); the scheduler: {message}"
    )
    assert "lower resources.gpu.count" in finding.hint
    assert finding.final is False  # GPUs may free up: keep waiting (within deploy.unschedulable_budget_s)
    # With them, what is free on each: the request against it.
    (counted,) = explain_one(
        pod(scheduled=False, gpus=2),
        [event("FailedScheduling", message)],
        [node("gpu-a", 1), node("gpu-b", 2)],
        free_gpus={"gpu-a": 0, "gpu-b": 1},
    )
    assert counted.message.startswith(
        "no node has the 2 free nvidia.com/gpu a replica asks for (free of allocatable: gpu-a 0 of 1, gpu-b 1 of 2); "
    )


def test_long_messages_are_never_cut() -> None:
    """Fault 8: the image-pull message was cut with an ellipsis, in --json too."""
    detail = "failed to pull and unpack image: " + "x" * 600 + " end"
    (finding,) = explain_one(
        Pod("p", containers=(Container("server", "img:1", waiting_reason="ImagePullBackOff", waiting_message=detail),)),
        [],
    )
    assert finding.message == f"the cluster cannot pull the image img:1: {detail}"


def test_untolerated_taints_are_listed() -> None:
    message = (
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: training}, "
        "2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: 0/3 nodes are available: "
        "3 Preemption is not helpful for scheduling."
    )
    (finding,) = explain_one(pod(scheduled=False), [event("FailedScheduling", message)], [])
    assert finding.kind == "untolerated_taint"
    assert "{dedicated: training}" in finding.message
    assert "{node.kubernetes.io/unreachable: }" in finding.message
    assert "tolerations" in finding.hint


def test_a_gpu_product_no_node_has() -> None:
    message = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: ..."
    nodes = [
        node("gpu-a", 1, {"nvidia.com/gpu.product": "NVIDIA-L4"}),
        node("gpu-b", 1, {"nvidia.com/gpu.product": "NVIDIA-A10G"}),
    ]
    (finding,) = explain_one(
        pod(scheduled=False, products=["NVIDIA-H100-80GB-HBM3"]), [event("FailedScheduling", message)], nodes
    )
    assert finding.kind == "no_matching_node"
    assert finding.message == (
        "no node has a GPU of type NVIDIA-H100-80GB-HBM3 (the nodes have: NVIDIA-A10G, NVIDIA-L4)"
    )
    assert "resources.gpu.products" in finding.hint


def test_image_pull_failures_quote_the_registry() -> None:
    failed = (
        f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = failed to pull and unpack image: not found'
    )
    findings = explain_one(
        pod(waiting={"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{IMAGE}"'}),
        [event("Failed", failed), event("BackOff", f'Back-off pulling image "{IMAGE}"', "Normal")],
    )
    assert findings[0].kind == "image_pull"
    assert IMAGE in findings[0].message
    assert "code = NotFound" in findings[0].message
    assert findings[0].final


def test_crash_loops_show_the_last_log_lines() -> None:
    log = "loading weights from /srv/weights/model.pt\nTraceback (most recent call last):\nKeyError: 'fc.weight'\n"
    (finding,) = explain_one(
        pod(
            waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"},
            terminated={"exitCode": 1, "reason": "Error"},
            restarts=3,
        ),
        [event("BackOff", "Back-off restarting failed container server in pod demo-svc-7d9f8-abcde")],
        logs={"demo-svc-7d9f8-abcde": log},
    )
    assert finding.kind == "crash"
    assert "exit code 1, 3 restart(s)" in finding.message
    assert "KeyError: 'fc.weight'" in finding.message
    assert "mlctl logs --previous" in finding.hint


def test_oom_kills_name_the_limit() -> None:
    (finding,) = explain_one(
        pod(waiting={"reason": "CrashLoopBackOff"}, terminated={"exitCode": 137, "reason": "OOMKilled"}, restarts=2),
        [],
        logs={"demo-svc-7d9f8-abcde": "allocating KV cache\n"},
        memory_limit="5Gi",
    )
    assert finding.kind == "oom"
    assert "OOMKilled, limit 5Gi" in finding.message
    assert "allocating KV cache" in finding.message
    assert "resources.memory" in finding.hint


def test_startup_probe_kills_suggest_a_budget() -> None:
    events = [
        event("Unhealthy", 'Startup probe failed: Get "http://10.1.2.3:8080/v2/health/ready": connection refused'),
        event("Killing", "Container server failed startup probe, will be restarted", "Normal"),
    ]
    # Killed by the probe again and again: back-off, and the last exit is a SIGKILL's 137 (not an OOM kill).
    (finding,) = explain_one(
        pod(waiting={"reason": "CrashLoopBackOff"}, terminated={"exitCode": 137, "reason": "Error"}, restarts=4),
        events,
        startup_budget_s=300,
    )
    assert finding.kind == "startup_probe"
    assert "before the model finished loading" in finding.message
    assert "raise probes.startup_budget_s in mlctl.yaml (it is 300 s; try 600 s)" in finding.hint


def test_the_progress_deadline() -> None:
    raw = {
        "metadata": {"name": "demo-svc"},
        "spec": {"progressDeadlineSeconds": 600},
        "status": {
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"},
            ]
        },
    }
    finding = deadline_finding(Deployment.from_api(raw))
    assert finding is not None
    assert "no progress for 600 s" in finding.message
    raw["status"]["conditions"][1] = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}  # type: ignore[index]
    assert deadline_finding(Deployment.from_api(raw)) is None


def test_a_ready_or_starting_pod_has_nothing_to_explain() -> None:
    assert explain([pod()], {}, []) == []


# --- the GPU gate ---------------------------------------------------------------------------------


def test_the_gate_refuses_a_cluster_without_gpus() -> None:
    with pytest.raises(
        DeployError, match=r"no node in the cluster offers nvidia\.com/gpu, and each replica asks for 1"
    ):
        gpu_gate([node("cpu-0", 0)], gpus(1))


def test_the_gate_refuses_more_gpus_than_any_node_has() -> None:
    with pytest.raises(DeployError, match=r"no node has 8 GPUs; the largest has 4 \(gpu-b\)") as caught:
        gpu_gate([node("gpu-a", 2), node("gpu-b", 4)], gpus(8))
    assert caught.value.hint == "lower resources.gpu.count to at most 4"


def test_the_gate_refuses_a_product_no_node_has() -> None:
    nodes = [node("gpu-a", 4, {"nvidia.com/gpu.product": "NVIDIA-L4"})]
    with pytest.raises(DeployError, match="has a GPU of type NVIDIA-H100-80GB-HBM3; they have NVIDIA-L4"):
        gpu_gate(nodes, gpus(1, ("NVIDIA-H100-80GB-HBM3",)))


def test_the_gate_refuses_an_old_driver_and_pins_a_new_enough_one() -> None:
    old = node("gpu-a", 1, {"nvidia.com/cuda.driver.major": "535"})
    with pytest.raises(DeployError, match=r"needs an NVIDIA driver >= 570.124.06 .* run driver 535"):
        gpu_gate([old], gpus(1, (), "570.124.06"))
    new = node("gpu-b", 1, {"nvidia.com/cuda.driver.major": "575"})
    result = gpu_gate([old, new], gpus(1, (), "570.124.06"))
    assert result.nodes == ("gpu-b",)
    assert result.min_driver_major == 570
    assert result.warnings == ()


def test_the_gate_warns_and_goes_on_without_gpu_labels() -> None:
    result = gpu_gate([node("gpu-a", 2)], gpus(1, ("NVIDIA-A100-SXM4-80GB",), "570.124.06"))
    assert result.nodes == ("gpu-a",)
    assert result.min_driver_major == 0
    assert len(result.warnings) == 2
    assert "cannot check resources.gpu.products" in result.warnings[0]
    assert "cannot check the NVIDIA driver (the image needs >= 570.124.06)" in result.warnings[1]


def test_the_gate_has_nothing_to_say_about_cpu_services() -> None:
    assert gpu_gate([node("cpu-0", 0)], gpus(0)).nodes == ("cpu-0",)
