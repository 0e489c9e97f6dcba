"""``mlctl deploy`` and the day-2 commands end to end: the real Helm engine and the official Kubernetes
client against the Kubernetes API emulator (tests/kube), reached through a kubeconfig as a cluster is.

The emulator's controllers do what a cluster's do (Deployment -> ReplicaSet -> Pods, a scheduler that
counts nvidia.com/gpu, kubelets that pull, crash and probe, Events), so every explanation here comes
from the API, exactly as it would from a real cluster.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from deploying import (  # noqa: F401 (kube_fixture, svc_fixture: the fixtures kube and svc)
    CUDA_LABELS,
    DIGEST1,
    IMAGE1,
    IMAGE2,
    NS,
    REPO,
    deploy_json,
    deployment,
    eventually,
    kube_fixture,
    mlctl,
    record,
    release_secrets,
    svc_fixture,
)
from kube.emulator import FakeCluster

# --- install, upgrade, no-op ------------------------------------------------------------------------


def test_first_install_upgrade_and_no_op_upgrade(cli: Any, svc: Path, kube: FakeCluster) -> None:
    first = deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    assert first["status"] == "deployed"
    assert first["revision"] == 1
    assert (first["ready"], first["desired"]) == (1, 1)
    assert first["image"] == IMAGE1
    (pod,) = first["pods"]
    assert pod["ready"] is True
    assert pod["node"] == "cpu-0"
    assert deployment(kube)["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE1

    second = deploy_json(cli, svc, "--env", "staging", "--image", IMAGE2)
    assert (second["status"], second["revision"]) == ("deployed", 2)
    assert deployment(kube)["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE2
    pods = [p for p in kube.objects("pods", NS) if not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["containers"][0]["image"] for p in pods] == [IMAGE2]

    third = deploy_json(cli, svc, "--env", "staging", "--image", IMAGE2)
    assert (third["status"], third["revision"]) == ("unchanged", 2)
    assert release_secrets(kube) == ["sh.helm.release.v1.demo-svc.v1", "sh.helm.release.v1.demo-svc.v2"]

    history = mlctl(cli, svc, "--json", "history", "--env", "staging")
    assert history.exit_code == 0, history.stderr
    assert [(r["revision"], r["status"]) for r in json.loads(history.stdout)] == [(1, "superseded"), (2, "deployed")]


def test_the_human_output_follows_the_rollout(cli: Any, svc: Path, kube: FakeCluster) -> None:
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert result.exit_code == 0, result.stderr
    assert "installing demo-svc in ml" in result.stderr
    assert "waiting for 1 replica(s) to be ready" in result.stderr
    assert "Deployed demo-svc revision 1 in ml: 1/1 ready" in result.stdout
    assert "cpu-0" in result.stdout  # the pods table


def test_no_wait_returns_after_helm(cli: Any, svc: Path, kube: FakeCluster) -> None:
    result = deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1, "--no-wait")
    assert (result["status"], result["revision"]) == ("deployed", 1)
    assert deployment(kube)["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo-svc"


def test_dry_run_changes_nothing(cli: Any, svc: Path, kube: FakeCluster) -> None:
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "kind: Deployment" in result.stdout
    assert "dry run: demo-svc would install in ml" in result.stderr
    assert kube.objects("deployments", NS) == []
    assert release_secrets(kube) == []
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    planned = deploy_json(cli, svc, "--env", "staging", "--image", IMAGE2, "--dry-run")
    assert (planned["status"], planned["revision"]) == ("would-upgrade", 1)
    assert deployment(kube)["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE1


# --- failures: explained, rolled back --------------------------------------------------------------


def test_gpu_shortage_is_explained_and_the_first_install_removed(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.add_node("gpu-0", gpus=2, product="NVIDIA-A100-SXM4-80GB")
    kube.add_node("gpu-1", gpus=1, product="NVIDIA-A100-SXM4-80GB")
    # Two replicas of two GPUs each: only gpu-0 can hold one; the other waits for a GPU that never frees.
    result = mlctl(cli, svc, "deploy", "--env", "two-gpus", "--image", IMAGE1, "--timeout", "4")
    assert result.exit_code == 8, result.stderr
    err = result.stderr
    assert "demo-svc: 1/2 replicas ready after" in err
    assert "the failed install was removed" in err
    # What each replica asks, what each node has free now (the first replica took gpu-0's two), the scheduler's words.
    assert (
        "why: no node has the 2 free nvidia.com/gpu a replica asks for (free of allocatable: cpu-0 0 of 0, gpu-0 0 of "
        "2, gpu-1 1 of 1); the scheduler: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in err
    )
    assert "fix: wait for GPUs to free up, lower resources.gpu.count, or ask for more GPU nodes" in err
    assert kube.objects("deployments", NS) == []
    assert release_secrets(kube) == []


def test_gpu_shortage_on_upgrade_rolls_back(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.add_node("gpu-0", gpus=1)
    good = deploy_json(cli, svc, "--env", "gpu", "--image", IMAGE1)
    assert good["pods"][0]["node"] == "gpu-0"
    assert good["pods"][0]["gpus"] == 1
    # Three replicas of one GPU on a one-GPU cluster: two never schedule.
    result = mlctl(
        cli, svc, "--json", "deploy", "--env", "gpu", "--image", IMAGE2, "--set", "replicaCount=3", "--timeout", "4"
    )
    assert result.exit_code == 8
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 8
    # --timeout 4: the watch gives up after 4 s, or a little more on a busy machine.
    # Only the new revision's pods count: none of them got a GPU (the old pod, still serving, holds the one there is).
    waited = re.match(
        r"demo-svc: 0/3 replicas ready after (\d+) s; rolled back to revision 1 \(now revision 3, 1/1 ready\)$",
        error["message"],
    )
    assert waited is not None, error["message"]
    assert 4 <= int(waited.group(1)) <= 8
    assert error["findings"][0]["kind"] == "gpu_shortage"
    assert "waiting for 3 replica(s) to be ready (up to 4 s)" in result.stderr
    live = deployment(kube)
    assert live["spec"]["replicas"] == 1
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE1
    history = json.loads(mlctl(cli, svc, "--json", "history", "--env", "gpu").stdout)
    # The failed revision is failed in Helm's own record (helm history reads the same), with why; the
    # rollback was followed to readiness.
    assert [(r["revision"], r["status"], r["rollout"]) for r in history] == [
        (1, "superseded", "healthy"),
        (2, "failed", "failed"),
        (3, "deployed", "healthy"),
    ]
    assert history[1]["description"] == (
        f"mlctl deploy {IMAGE2} failed: no node has the 1 free nvidia.com/gpu a replica asks for (free of allocatable: "
        "cpu-0 0 of 0, gpu-0 0 of 1); the scheduler: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu. "
        "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    )
    assert history[2]["description"] == "Rollback to 1"


def test_image_pull_failure(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.bad_images.add(IMAGE1)
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert result.exit_code == 8
    assert f"why: the cluster cannot pull the image {IMAGE1}" in result.stderr
    assert "imagePullSecrets" in result.stderr
    assert kube.objects("deployments", NS) == []


def test_crash_loop_shows_the_servers_last_words(cli: Any, svc: Path, kube: FakeCluster) -> None:
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    kube.crash_images[IMAGE2] = (1, ["loading /srv/weights/model.pt", "RuntimeError: size mismatch for fc.weight"])
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE2)
    assert result.exit_code == 8
    assert "why: the server keeps exiting (exit code 1" in result.stderr
    assert "RuntimeError: size mismatch for fc.weight" in result.stderr
    assert "rolled back to revision 1" in result.stderr
    assert deployment(kube)["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE1


def test_oom_kill(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.crash_images[IMAGE1] = (137, ["allocating 48 GiB for the KV cache"])
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert result.exit_code == 8
    assert "why: the server ran out of memory and was killed (OOMKilled, limit 5Gi)" in result.stderr
    assert "allocating 48 GiB for the KV cache" in result.stderr


def test_a_model_slower_than_its_startup_budget(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.slow_images[IMAGE1] = 3600
    mlyaml = svc / "mlctl.yaml"
    mlyaml.write_text(mlyaml.read_text().replace("startup_budget_s: 300", "startup_budget_s: 10"))
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--timeout", "60")
    assert result.exit_code == 8, result.stderr
    assert "why: the server was killed by its start-up probe before the model finished loading" in result.stderr
    assert "it is 10 s; try 70 s" in result.stderr


def test_progress_deadline(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.slow_images[IMAGE1] = 3600  # never ready within the deadline, never killed (budget 300 s)
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--set", "progressDeadlineSeconds=2")
    assert result.exit_code == 8, result.stderr
    assert "why: the rollout made no progress for 2 s" in result.stderr


# --- day 2 -----------------------------------------------------------------------------------------


def test_status_logs_and_diff(cli: Any, svc: Path, kube: FakeCluster) -> None:
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    status = mlctl(cli, svc, "--json", "status", "--env", "staging")
    assert status.exit_code == 0, status.stderr
    data = json.loads(status.stdout)
    assert (data["revision"], data["status"], data["image"]) == (1, "deployed", IMAGE1)
    assert (data["ready"], data["desired"]) == (1, 1)
    assert data["pods"][0]["node"] == "cpu-0"
    human = mlctl(cli, svc, "status", "--env", "staging")
    assert "demo-svc in ml: revision 1 (deployed" in human.stdout

    logs = mlctl(cli, svc, "logs", "--env", "staging")
    assert logs.exit_code == 0, logs.stderr
    assert f"fake kubelet: container server started from image {IMAGE1}" in logs.stdout  # what the server printed
    # -f streams until the server closes the log (a real kubelet keeps it open while the container runs)
    followed = mlctl(cli, svc, "logs", "--env", "staging", "-f")
    assert followed.exit_code == 0, followed.stderr
    assert followed.stdout == logs.stdout

    assert "no changes" in mlctl(cli, svc, "diff", "--env", "staging", "--image", IMAGE1).stdout
    diff = mlctl(cli, svc, "--json", "diff", "--env", "staging", "--image", IMAGE2)
    changes = {c["resource"]: c for c in json.loads(diff.stdout)}
    # The image's tag is the app.kubernetes.io/version label of every resource; only the Deployment runs it.
    assert set(changes) == {
        "ConfigMap/demo-svc-serving",
        "Deployment/demo-svc",
        "Service/demo-svc",
        "ServiceAccount/demo-svc",
    }
    assert {c["change"] for c in changes.values()} == {"changed"}
    image_lines = [line for line in changes["Deployment/demo-svc"]["diff"].splitlines() if "image: " in line]
    assert image_lines == [f"-          image: {IMAGE1}", f"+          image: {IMAGE2}"]
    assert "image: " not in changes["Service/demo-svc"]["diff"]


def test_status_and_logs_of_a_crashing_release(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.crash_images[IMAGE1] = (1, ["loading /srv/weights/model.pt", "FileNotFoundError: model.pt"])
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--no-wait", "--set", "replicaCount=2")
    assert result.exit_code == 0, result.stderr

    def crashed() -> bool:
        status = json.loads(mlctl(cli, svc, "--json", "status", "--env", "staging").stdout)
        return len(status["pods"]) == 2 and all(p["restarts"] >= 1 for p in status["pods"])

    assert eventually(crashed)
    status = json.loads(mlctl(cli, svc, "--json", "status", "--env", "staging").stdout)
    assert status["ready"] == 0
    assert {p["state"] for p in status["pods"]} <= {"CrashLoopBackOff", "loading the model"}
    previous = mlctl(cli, svc, "logs", "--env", "staging", "--previous")
    assert previous.exit_code == 0, previous.stderr
    names = sorted(p["name"] for p in status["pods"])
    for name in names:
        assert f"[{name}] FileNotFoundError: model.pt" in previous.stdout  # several pods: each line says whose
    one = mlctl(cli, svc, "logs", names[0], "--env", "staging", "--previous", "--tail", "1")
    assert one.stdout == "FileNotFoundError: model.pt\n"
    wrong = mlctl(cli, svc, "logs", "demo-svc-nope", "--env", "staging")
    assert wrong.exit_code == 4
    assert "demo-svc-nope is not a pod of demo-svc" in wrong.stderr


def test_the_rollback_command(cli: Any, svc: Path, kube: FakeCluster) -> None:
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE2)
    result = mlctl(cli, svc, "--json", "rollback", "--env", "staging")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["revision"], data["image"], data["ready"]) == (3, IMAGE1, 1)
    assert deployment(kube)["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE1
    again = mlctl(cli, svc, "--json", "rollback", "2", "--env", "staging")
    assert json.loads(again.stdout)["image"] == IMAGE2
    missing = mlctl(cli, svc, "rollback", "9", "--env", "staging")
    assert missing.exit_code == 4
    assert "demo-svc has no revision 9; it has 1, 2, 3, 4" in missing.stderr


def test_delete_asks_first(cli: Any, svc: Path, kube: FakeCluster) -> None:
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    refused = mlctl(cli, svc, "delete", "--env", "staging")
    assert refused.exit_code == 4
    assert "refusing to delete demo-svc without --yes" in refused.stderr
    assert len(kube.objects("deployments", NS)) == 1
    deleted = mlctl(cli, svc, "delete", "--env", "staging", "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert "deleted demo-svc from ml" in deleted.stdout
    for plural in ("deployments", "replicasets", "services", "configmaps", "serviceaccounts"):
        assert kube.objects(plural, NS) == [], plural
    # Pods go the way they go on a cluster: the garbage collector deletes them after their ReplicaSet.
    assert eventually(lambda: all(p["metadata"].get("deletionTimestamp") for p in kube.objects("pods", NS)))
    assert release_secrets(kube) == []
    gone = mlctl(cli, svc, "status", "--env", "staging")
    assert gone.exit_code == 4
    assert "no release 'demo-svc' in namespace ml" in gone.stderr


# --- the GPU gate, against the cluster's nodes ---------------------------------------------------


def test_the_gate_refuses_before_anything_is_installed(cli: Any, svc: Path, kube: FakeCluster) -> None:
    result = mlctl(cli, svc, "deploy", "--env", "gpu", "--image", IMAGE1)
    assert result.exit_code == 8
    assert "no node in the cluster offers nvidia.com/gpu, and each replica asks for 1" in result.stderr
    assert release_secrets(kube) == []


def test_the_gate_pins_the_driver_the_image_label_asks_for(cli: Any, svc: Path, kube: FakeCluster) -> None:
    """The floor is the image's own mlctl.min-driver label (from the build record), not mlctl.yaml's:
    here mlctl.yaml's gpu environment asks for no CUDA version at all."""
    kube.add_node("gpu-old", gpus=1, driver_major=535)
    kube.add_node("gpu-new", gpus=1, driver_major=580)
    record(svc, IMAGE1, labels=CUDA_LABELS)
    result = deploy_json(cli, svc, "--env", "gpu", "--image", IMAGE1)  # built here: its labels are recorded
    assert result["pods"][0]["node"] == "gpu-new"
    terms = deployment(kube)["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"] == [
        {"key": "nvidia.com/cuda.driver.major", "operator": "Gt", "values": ["579"]}
    ]
    record(svc, IMAGE2, labels={**CUDA_LABELS, "mlctl.min-driver": "590.10"})
    newer = mlctl(cli, svc, "deploy", "--env", "gpu", "--image", IMAGE2)
    assert newer.exit_code == 8
    assert "the image needs an NVIDIA driver >= 590.10 (its CUDA build); the GPU nodes run driver 535, 580" in (
        newer.stderr
    )


def test_the_gate_warns_where_it_cannot_tell(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.add_node("gpu-0", gpus=1)
    record(svc, IMAGE1, labels=CUDA_LABELS)
    result = mlctl(cli, svc, "deploy", "--env", "gpu", "--image", IMAGE1)
    assert result.exit_code == 0, result.stderr
    assert (
        "warning: cannot check the NVIDIA driver (the image needs >= 580.65.06): the GPU nodes carry no "
        "nvidia.com/cuda.driver.major labels" in result.stderr
    )
    # Not built here: its labels are unknown (a dry run: the gate runs, nothing changes).
    unknown = mlctl(cli, svc, "deploy", "--env", "gpu", "--image", IMAGE2, "--dry-run")
    assert unknown.exit_code == 0, unknown.stderr
    assert (
        f"warning: cannot check the NVIDIA driver: {IMAGE2} is not in this service's build record, so its "
        "mlctl.min-driver label is unknown here" in unknown.stderr
    )


# --- cluster access -------------------------------------------------------------------------------


def test_an_unreachable_cluster(cli: Any, svc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeCluster() as cluster:
        path = cluster.kubeconfig(tmp_path / "closed", context="gone")
    # The emulator has stopped: its port is closed now.
    monkeypatch.setenv("KUBECONFIG", str(path))
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert result.exit_code == 9
    assert f"cannot reach the API server at {cluster.url} (context gone)" in result.stderr
    assert "--context" in result.stderr
    port = free_port()
    path.write_text(path.read_text().replace(cluster.url, f"http://127.0.0.1:{port}"))
    assert mlctl(cli, svc, "status", "--env", "staging").exit_code == 9


def test_no_kubeconfig(cli: Any, svc: Path) -> None:
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert result.exit_code == 6
    assert "no usable kubeconfig" in result.stderr
    assert "KUBECONFIG" in result.stderr


def test_forbidden_names_the_verb_and_resource(cli: Any, svc: Path, kube: FakeCluster) -> None:
    message = (
        'deployments.apps "demo-svc" is forbidden: User "system:serviceaccount:ci:deployer" cannot patch resource '
        '"deployments" in API group "apps" in the namespace "ml"'
    )
    kube.inject_fault("patch", "deployments", 403, "Forbidden", message, times=5)
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert result.exit_code == 9, result.stderr
    assert 'cannot patch resource "deployments" in API group "apps" in the namespace "ml"' in result.stderr


def test_forbidden_reads_name_the_verb_and_resource(cli: Any, svc: Path, kube: FakeCluster) -> None:
    message = (
        'namespaces "ml" is forbidden: User "dev" cannot get resource "namespaces" in API group "" '
        'in the namespace "ml"'
    )
    kube.inject_fault("get", "namespaces", 403, "Forbidden", message)
    result = mlctl(cli, svc, "status", "--env", "staging")
    assert result.exit_code == 9
    assert 'forbidden: namespaces "ml" is forbidden: User "dev" cannot get resource "namespaces"' in result.stderr


def test_a_missing_namespace(cli: Any, svc: Path, kube: FakeCluster) -> None:
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--namespace", "ml-qa", "--image", IMAGE1)
    assert result.exit_code == 9
    assert result.stderr.splitlines() == [
        "error: namespace 'ml-qa' does not exist in the cluster (context test)",
        "hint: pass --create-namespace to create it, ask the platform team for it, or: kubectl create namespace ml-qa",
    ]
    created = deploy_json(cli, svc, "--env", "staging", "--namespace", "ml-qa", "--image", IMAGE1, "--create-namespace")
    assert (created["namespace"], created["ready"]) == ("ml-qa", 1)
    assert [n["metadata"]["name"] for n in kube.objects("namespaces") if n["metadata"]["name"] == "ml-qa"] == ["ml-qa"]
    # A protected environment's namespace is the platform team's to make first.
    prod = mlctl(cli, svc, "deploy", "--env", "prod", "--image", IMAGE1)
    assert prod.exit_code == 9
    assert "hint: ask the platform team for it (or pass --create-namespace to create it" in prod.stderr


def test_an_unknown_context(cli: Any, svc: Path, kube: FakeCluster) -> None:
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--context", "prod", "--image", IMAGE1)
    assert result.exit_code == 6
    assert "no kube context 'prod'" in result.stderr
    assert "contexts: test" in result.stderr


def test_a_service_monitor_only_where_its_api_exists(cli: Any, svc: Path, kube: FakeCluster) -> None:
    without = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--dry-run")
    assert without.exit_code == 0, without.stderr
    assert "kind: ServiceMonitor" not in without.stdout
    kube.add_custom_resource("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")  # Prometheus Operator
    planned = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--dry-run")
    assert "kind: ServiceMonitor" in planned.stdout
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    (monitor,) = kube.objects("servicemonitors.monitoring.coreos.com", NS)
    # Prometheus scrapes the server's metrics port (serving.metrics_port), a Service port of its own.
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    # The comparison with the live release sees the same capabilities: nothing to change.
    assert deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)["status"] == "unchanged"
    # The offline render cannot know the cluster: it leaves the ServiceMonitor out.
    assert "kind: ServiceMonitor" not in mlctl(cli, svc, "render", "--env", "staging", "--image", IMAGE1).stdout


def test_a_terminal_gets_a_live_view_of_the_pods(svc: Path, kube: FakeCluster) -> None:
    import pexpect

    kube.slow_images[IMAGE1] = 4  # the model takes a while to load
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "TERM")} | {"TERM": "xterm"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mlctl", "deploy", "--env", "staging", "--image", IMAGE1],
        env=env,
        cwd=str(svc),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )
    child.expect(r"0/1 ready \(1 loading the model\), \d+ s of a 300 s start-up budget")
    child.expect(r"demo-svc-[a-z0-9]+-[a-z0-9]+  loading the model  node cpu-0  restarts 0")
    child.expect(r"Deployed\S* demo-svc revision 1 in ml: 1/1 ready")  # "Deployed" is green
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_log_gets_each_change_once(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.slow_images[IMAGE1] = 3
    result = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert result.exit_code == 0, result.stderr
    lines = [line.strip() for line in result.stderr.splitlines() if line.endswith("s start-up budget)")]
    states = [line.rsplit(" (", 1)[0] for line in lines]  # "0/1 ready (1 loading the model) (2 s of a 300 s ...)"
    assert "0/1 ready (1 loading the model)" in states, result.stderr
    assert all(a != b for a, b in itertools.pairwise(states)), states  # not again just because a second passed


def test_the_namespace_comes_from_flag_then_mlctl_yaml_then_kube_context(
    cli: Any, svc: Path, kube: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = svc / "mlctl.yaml"
    # Without a namespace it meets staging's (the context's is ml): one release, as said here.
    text = re.sub(r"\ndeploy:\n  namespace: [^\n]*\n", "\ndeploy:\n  shared_release: true\n", path.read_text())
    assert "namespace" not in text.split("\ndeploy:\n", 1)[1].split("\n\n", 1)[0]
    path.write_text(text)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "ml-context", namespace=NS, context="ml")))
    result = deploy_json(cli, svc, "--image", IMAGE1, "--no-wait")  # no environment: mlctl.yaml names none
    assert result["namespace"] == NS
    assert kube.objects("deployments", NS)
    kube.add_namespace("other")
    assert deploy_json(cli, svc, "--image", IMAGE1, "-n", "other", "--no-wait")["namespace"] == "other"
    rendered = mlctl(cli, svc, "render", "--image", IMAGE1)  # offline too: the kubeconfig is only read
    assert 'namespace: "ml"' in rendered.stdout


def test_delete_asks_in_a_terminal(cli: Any, svc: Path, kube: FakeCluster) -> None:
    import pexpect

    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1, "--no-wait")
    env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
    for answer, code, left in (("n", 1, 1), ("y", 0, 0)):
        child = pexpect.spawn(
            sys.executable,
            ["-m", "mlctl", "delete", "--env", "staging"],
            env=env,
            cwd=str(svc),
            encoding="utf-8",
            timeout=60,
        )
        child.expect_exact("Delete demo-svc from namespace ml? [y/n] (n): ")
        child.sendline(answer)
        child.expect("kept demo-svc" if answer == "n" else "deleted demo-svc from ml")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == code
        assert len(kube.objects("deployments", NS)) == left


def test_without_image_the_recorded_build_is_deployed(
    cli: Any, svc: Path, kube: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = mlctl(cli, svc, "deploy", "--env", "staging", "--dry-run")
    assert missing.exit_code == 4
    assert missing.stderr.splitlines() == [
        "error: no build of demo-svc is recorded in this service, so there is no image to deploy",
        "hint: build it first (mlctl build, with --push for a cluster), or pass --image REPO:TAG@sha256:...",
    ]
    record(svc, "demo-svc:cccc-g3333333")  # built, never pushed: by tag, with a warning
    planned = mlctl(cli, svc, "--json", "deploy", "--env", "staging", "--dry-run")
    assert planned.exit_code == 0, planned.stderr
    assert json.loads(planned.stdout)["image"] == "demo-svc:cccc-g3333333"
    assert "demo-svc:cccc-g3333333 has no digest: it was built here but not pushed" in planned.stderr
    # Built but not pushed is refused by --require-digest with that fix, not as an image never built.
    strict = mlctl(cli, svc, "deploy", "--env", "staging", "--dry-run", "--require-digest")
    assert (strict.exit_code, strict.stderr.splitlines()[1:]) == (
        4,
        [
            "error: the image demo-svc:cccc-g3333333 has no digest (it was built here but not pushed), and "
            "--require-digest is set",
            "hint: push it: mlctl build --push (then deploy the digest it prints)",
        ],
    )
    # A registry set for an environment is another repository: its own build, found by digest.
    record(svc, f"ghcr.io/acme/demo-svc:cccc-g3333333@{DIGEST1}")
    monkeypatch.setenv("MLCTL_CONFIG__IMAGE__REGISTRY", "ghcr.io/acme")
    pushed = mlctl(cli, svc, "--json", "deploy", "--env", "staging", "--dry-run")
    assert pushed.exit_code == 0, pushed.stderr
    assert json.loads(pushed.stdout)["image"] == f"ghcr.io/acme/demo-svc:cccc-g3333333@{DIGEST1}"
    assert "has no digest" not in pushed.stderr
    events = [json.loads(line) for line in pushed.stderr.splitlines()]
    assert {
        "event": "warn",
        "message": 'MLCTL_CONFIG__IMAGE__REGISTRY overrides image.registry (mlctl.yaml: "", now: "ghcr.io/acme")',
    } in events  # announced, as every command that reads the config announces it


# --- promotion -------------------------------------------------------------------------------------


def test_promote_deploys_exactly_what_runs_in_staging(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.add_namespace("ml-prod")
    nothing = mlctl(cli, svc, "promote", "--from", "staging", "--to", "prod")
    assert nothing.exit_code == 4
    assert "nothing of demo-svc is deployed in staging (namespace ml)" in nothing.stderr
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    # prod is protected: without a terminal to ask in, only --yes promotes to it.
    unasked = mlctl(cli, svc, "promote", "--from", "staging", "--to", "prod")
    assert unasked.exit_code == 4
    assert "error: prod is protected: promoting to it needs --yes (there is no terminal to ask in)" in unasked.stderr
    assert kube.objects("deployments", "ml-prod") == []
    result = mlctl(cli, svc, "--json", "promote", "--from", "staging", "--to", "prod", "--yes")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["namespace"], data["image"], data["ready"], data["desired"]) == ("ml-prod", IMAGE1, 2, 2)
    assert {c["resource"]: c["change"] for c in data["changes"]}["Deployment/demo-svc"] == "added"
    assert f"promoting {IMAGE1} from staging (revision 1) to prod: ConfigMap/demo-svc-serving added" in result.stderr
    (prod,) = kube.objects("deployments", "ml-prod")
    assert prod["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE1  # the same digest, no rebuild
    assert prod["spec"]["replicas"] == 2  # prod's own settings
    same = mlctl(cli, svc, "promote", "--from", "prod", "--to", "prod")
    assert same.exit_code == 4
    assert "--from and --to are both 'prod'" in same.stderr


def test_prod_takes_only_pushed_clean_images(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.add_namespace("ml-prod")
    by_tag = mlctl(cli, svc, "deploy", "--env", "prod", "--image", f"{REPO}:aaaa-g1111111")
    assert by_tag.exit_code == 4
    assert f"prod takes only pushed images, by digest: {REPO}:aaaa-g1111111 has none" in by_tag.stderr
    dirty = f"demo-svc:aaaa-g1111111-dirty-0123456789ab@{DIGEST1}"
    record(svc, dirty, dirty=True)  # the build record knows, whatever the tag says
    refused = mlctl(cli, svc, "deploy", "--env", "prod")
    assert refused.exit_code == 4
    assert f"prod takes only images built from committed code: {dirty} was built from uncommitted" in refused.stderr
    named = mlctl(cli, svc, "deploy", "--env", "prod", "--image", dirty)
    assert named.exit_code == 4
    assert "prod takes only images built from committed code" in named.stderr
    assert kube.objects("deployments", "ml-prod") == []
    # staging runs a tag: there is no exact image to promote
    deploy_json(cli, svc, "--env", "staging", "--image", f"{REPO}:aaaa-g1111111")
    unpinned = mlctl(cli, svc, "promote", "--from", "staging", "--to", "prod")
    assert unpinned.exit_code == 4
    assert "which is not pinned by digest, so prod cannot get exactly the same image" in unpinned.stderr


def test_an_unhealthy_staging_is_not_promoted(cli: Any, svc: Path, kube: FakeCluster) -> None:
    kube.add_namespace("ml-prod")
    kube.crash_images[IMAGE1] = (1, ["boom"])
    assert mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--no-wait").exit_code == 0
    result = mlctl(cli, svc, "promote", "--from", "staging", "--to", "prod")
    assert result.exit_code == 8
    assert "staging is not healthy (0/1 replicas of revision 1 ready)" in result.stderr
    assert kube.objects("deployments", "ml-prod") == []
