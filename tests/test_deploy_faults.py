"""The eight faults of issue 11, each reproduced against the real Helm engine and the official Kubernetes
client talking to the emulator (tests/kube), through the files a service is made of (mlctl.yaml).

Each test names the Kubernetes or Helm rule it relies on. test_release.py checks the same logic with
small stand-ins; these walk the road as a user does.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from deploying import (  # noqa: F401 (kube_fixture, svc_fixture: the fixtures kube and svc)
    IMAGE1,
    IMAGE2,
    NS,
    deploy_json,
    deployment,
    kube_fixture,
    mlctl,
    svc_fixture,
)
from kube.emulator import FakeCluster

from mlctl.config import CONFIG_FILE


def helm_history(kube: FakeCluster, namespace: str = NS, release: str = "demo-svc") -> list[tuple[int, str]]:
    """The release's history as Helm itself reads it (what `helm history` prints), not through mlctl."""
    import os

    with helm.Config(namespace=namespace, kubeconfig_path=os.environ["KUBECONFIG"]) as config:
        return [
            (int(r["revision"]), str(r["status"])) for r in sorted(config.history(release), key=lambda r: r["revision"])
        ]


def image_of(kube: FakeCluster, namespace: str = NS) -> str:
    return str(deployment_in(kube, namespace)["spec"]["template"]["spec"]["containers"][0]["image"])


def deployment_in(kube: FakeCluster, namespace: str) -> dict[str, Any]:
    (found,) = [d for d in kube.objects("deployments", namespace) if d["metadata"]["name"] == "demo-svc"]
    return found


def set_config(svc: Path, old: str, new: str) -> None:
    path = svc / CONFIG_FILE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# --- 1. revision states other tools can read ------------------------------------------------------------


def test_1_a_plain_rollback_skips_the_failed_revision(cli: Any, svc: Path, kube: FakeCluster) -> None:
    """Fault 1: after a bad-image deploy was rolled back, `mlctl rollback` went back to the bad revision,
    because Helm had recorded it superseded. Helm's rule (action/rollback.go): a rollback supersedes the
    revisions whose status is deployed, and only those; a revision marked failed before it stays failed."""
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    kube.bad_images.add(IMAGE2)
    failed = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE2)
    assert failed.exit_code == 8, failed.stderr
    assert helm_history(kube) == [(1, "superseded"), (2, "failed"), (3, "deployed")]

    history = mlctl(cli, svc, "history", "--env", "staging")
    rows = [line.split()[:3] for line in history.stdout.splitlines()[1:]]
    assert rows == [["1", "superseded", "healthy"], ["2", "failed", "failed"], ["3", "deployed", "healthy"]]

    back = mlctl(cli, svc, "--json", "rollback", "--env", "staging")
    assert back.exit_code == 0, back.stderr
    data = json.loads(back.stdout)
    assert (data["revision"], data["image"], data["ready"], data["desired"]) == (4, IMAGE1, 1, 1)
    assert "rolling demo-svc back to revision 1" in back.stderr
    assert image_of(kube) == IMAGE1

    refused = mlctl(cli, svc, "rollback", "2", "--env", "staging")
    assert refused.exit_code == 4
    assert "revision 2 of demo-svc failed its rollout" in refused.stderr
    assert "rolling back to it needs --force" in refused.stderr
    zero = mlctl(cli, svc, "rollback", "0", "--env", "staging")
    assert zero.exit_code == 4
    assert "error: there is no revision 0: Helm numbers revisions from 1" in zero.stderr
    assert helm_history(kube)[-1] == (4, "deployed")  # nothing happened


# --- 2. environments cannot collide -----------------------------------------------------------------------


def test_2_two_environments_on_one_release_are_refused(cli: Any, svc: Path, kube: FakeCluster) -> None:
    """Fault 2: staging and prod resolved to one context, namespace and release, and promote upgraded it in
    place. A Helm release is named per namespace (its records are Secrets there), so the same name in the
    same namespace on the same cluster is the same release."""
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    set_config(svc, "  prod:\n    deploy:\n      namespace: ml-prod\n", "  prod:\n    deploy:\n      namespace: ml\n")
    promoted = mlctl(cli, svc, "promote", "--from", "staging", "--to", "prod", "--yes")
    assert promoted.exit_code == 3
    assert (
        "error: environment prod and environment staging resolve to the same release: demo-svc in namespace ml on "
        f"{kube.url}; deploying or promoting one would replace the other" in promoted.stderr
    )
    assert "hint: give each environment its own deploy.namespace" in promoted.stderr
    assert mlctl(cli, svc, "deploy", "--env", "prod", "--image", IMAGE2).exit_code == 3
    assert mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE2).exit_code == 3  # either way round
    assert helm_history(kube) == [(1, "deployed")]
    assert image_of(kube) == IMAGE1


def test_2_a_scaffolded_service_keeps_its_environments_apart(cli: Any, tmp_path: Path, kube: FakeCluster) -> None:
    """The scaffold gives each environment its own namespace: deploying one never touches another's."""
    result = cli("new", "apart", "--set", "accelerator=cpu", "--no-git")
    assert result.exit_code == 0, result.stderr
    service = Path("apart")
    for env in ("staging", "prod"):
        kube.add_namespace(f"apart-{env}")
    staging = mlctl(
        cli, service, "--json", "deploy", "--env", "staging", "--image", IMAGE1.replace("demo-svc", "apart")
    )
    assert staging.exit_code == 0, staging.stderr
    assert json.loads(staging.stdout)["namespace"] == "apart-staging"
    assert kube.objects("deployments", "apart-prod") == []


# --- 3. the automatic rollback is followed -------------------------------------------------------------------


def test_3_the_automatic_rollback_is_watched_and_reported(cli: Any, svc: Path, kube: FakeCluster) -> None:
    """Fault 3: mlctl exited as soon as it asked Helm to roll back. Now the rollback's rollout is followed
    like a deploy's, to the Deployment controller's verdict (every replica updated and available)."""
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    kube.crash_images[IMAGE2] = (1, ["RuntimeError: boom"])
    failed = mlctl(cli, svc, "--json", "deploy", "--env", "staging", "--image", IMAGE2)
    assert failed.exit_code == 8
    error = json.loads(failed.stdout)["error"]
    assert error["message"].endswith("rolled back to revision 1 (now revision 3, 1/1 ready)")
    events = [json.loads(line)["message"] for line in failed.stderr.splitlines()]
    assert events.index("rolling demo-svc back to revision 1") < events.index(
        "waiting for revision 3 (revision 1 again) to be ready (up to 615 s)"
    )
    # When mlctl returned, revision 1's pod was back and ready, as the Deployment controller counts it.
    status = deployment(kube)["status"]
    assert (status["updatedReplicas"], status["readyReplicas"], status["availableReplicas"]) == (1, 1, 1)
    assert image_of(kube) == IMAGE1


def test_3_a_rollback_that_fails_exits_10_and_says_where_the_release_is(cli: Any, svc: Path, kube: FakeCluster) -> None:
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    # Revision 1's own pods start crashing too (say a service it needs went away): nothing can come back.
    kube.crash_images[IMAGE1] = (1, ["ConnectionError: feature store unreachable"])
    kube.bad_images.add(IMAGE2)
    failed = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE2)
    assert failed.exit_code == 10, failed.stderr
    assert "the rollback to revision 1 failed too: 0/1 ready after" in failed.stderr
    assert "demo-svc is left at revision 3, marked failed, and no revision of it runs" in failed.stderr
    assert "why: the server keeps exiting" in failed.stderr  # why the rollback failed
    assert "ConnectionError: feature store unreachable" in failed.stderr
    assert f"why: the cluster cannot pull the image {IMAGE2}" in failed.stderr  # why the deploy failed
    assert helm_history(kube) == [(1, "superseded"), (2, "failed"), (3, "failed")]
    rolled = mlctl(cli, svc, "rollback", "1", "--env", "staging")
    assert rolled.exit_code == 10  # mlctl rollback follows its rollback the same way


# --- 4. the rollout strategy is a setting -------------------------------------------------------------------------


def test_4_a_one_gpu_service_surges_when_a_gpu_is_free_and_says_when_it_cannot(
    cli: Any, svc: Path, kube: FakeCluster
) -> None:
    """Fault 4: every update of a 1-replica GPU service was an outage. With a second GPU free, the new pod
    starts beside the old one (rolling.go: replicas + maxSurge pods at most, replicas - maxUnavailable
    available at least); with none, the update says first that it has downtime."""
    kube.add_node("gpu-0", gpus=2)
    deploy_json(cli, svc, "--env", "gpu", "--image", IMAGE1)
    rolling = deployment(kube)["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)
    surged = mlctl(cli, svc, "deploy", "--env", "gpu", "--image", IMAGE2)
    assert surged.exit_code == 0, surged.stderr
    assert "downtime" not in surged.stderr

    kube.add_namespace("other")  # another team's pod takes the free GPU
    taker = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "taker", "namespace": "other"},
        "spec": {
            "nodeName": "gpu-0",
            "containers": [{"name": "c", "image": "x:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
    }
    from kubernetes import client, config

    api = config.new_client_from_config(str(kube_path()))
    client.CoreV1Api(api).create_namespaced_pod("other", taker)
    api.close()
    down = mlctl(cli, svc, "deploy", "--env", "gpu", "--image", IMAGE1)
    assert down.exit_code == 0, down.stderr
    lines = down.stderr.splitlines()
    warning = next(i for i, line in enumerate(lines) if "has downtime" in line)
    assert lines[warning] == (
        "warning: this update of demo-svc has downtime: no node has 1 free GPU(s) for a new pod beside the old, so "
        "the old pod stops before the new one starts, so demo-svc serves nothing until the new pod is ready (a free "
        "GPU for a surge pod, or 2 replicas, would avoid it)"
    )
    assert warning < next(i for i, line in enumerate(lines) if "upgrading demo-svc" in line)
    rolling = deployment(kube)["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (0, 1)
    assert image_of(kube) == IMAGE1  # and it rolled (the controller stopped the old pod first)


def kube_path() -> Path:
    import os

    return Path(os.environ["KUBECONFIG"])


def test_4_a_protected_environment_needs_allow_downtime(cli: Any, svc: Path, kube: FakeCluster) -> None:
    set_config(
        svc,
        "  prod:\n    deploy:\n",
        "  prod:\n    runtime:\n      accelerator: cuda\n    resources:\n      gpu:\n        count: 1\n    deploy:\n",
    )
    set_config(svc, "      namespace: ml-prod\n      replicas: 2\n", "      namespace: ml-prod\n      replicas: 1\n")
    kube.add_namespace("ml-prod")
    kube.add_node("gpu-0", gpus=1)
    deploy_json(cli, svc, "--env", "prod", "--image", IMAGE1)
    refused = mlctl(cli, svc, "deploy", "--env", "prod", "--image", IMAGE2)
    assert refused.exit_code == 4
    assert "error: prod is protected and this update of demo-svc has downtime" in refused.stderr
    assert "hint: pass --allow-downtime to go ahead" in refused.stderr
    assert image_of(kube, "ml-prod") == IMAGE1
    allowed = mlctl(cli, svc, "deploy", "--env", "prod", "--image", IMAGE2, "--allow-downtime")
    assert allowed.exit_code == 0, allowed.stderr
    assert image_of(kube, "ml-prod") == IMAGE2


def test_4_both_zero_is_refused_naming_the_key(cli: Any, svc: Path, kube: FakeCluster) -> None:
    set_config(
        svc,
        "      shared_release: true\n",
        "      shared_release: true\n      strategy: {max_surge: 0, max_unavailable: 0}\n",
    )
    refused = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert refused.exit_code == 3
    assert "environments.staging.deploy.strategy: max_surge and max_unavailable are both 0" in refused.stderr
    assert kube.objects("deployments", NS) == []


# --- 5. unschedulable fails fast --------------------------------------------------------------------------------------


def test_5_busy_gpus_fail_the_deploy_after_the_budget(
    cli: Any, svc: Path, kube: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault 5: GPUs busy rather than missing gave a warning at once, then a failure only at the timeout
    (615 s). The scheduler's verdict (PodScheduled False, Unschedulable, with its FailedScheduling message)
    now ends the deploy after deploy.unschedulable_budget_s."""
    kube.add_node("gpu-0", gpus=2)
    deploy_json(cli, svc, "--env", "two-gpus", "--image", IMAGE1, "--set", "replicaCount=1")  # holds both GPUs
    monkeypatch.setenv("MLCTL_CONFIG__DEPLOY__UNSCHEDULABLE_BUDGET_S", "2")
    monkeypatch.setenv("MLCTL_CONFIG__DEPLOY__STRATEGY__MAX_UNAVAILABLE", "0")  # never down: the new pod must fit
    started = time.monotonic()
    result = mlctl(cli, svc, "--json", "deploy", "--env", "two-gpus", "--image", IMAGE2, "--set", "replicaCount=1")
    took = time.monotonic() - started
    assert result.exit_code == 8, result.stderr
    assert took < 30  # not the 615 s of the Deployment's deadline
    error = json.loads(result.stdout)["error"]
    # The wait is measured, so on a busy machine the poll that sees it past the budget may come a second later.
    waited = re.match(r"demo-svc: 0/1 replicas ready; a pod waited (\d+) s for a node \(", error["message"])
    assert waited is not None, error["message"]
    assert 2 <= int(waited.group(1)) < 30
    assert "(deploy.unschedulable_budget_s is 2)" in error["message"]
    assert error["message"].endswith("rolled back to revision 1 (now revision 3, 1/1 ready)")
    (finding,) = error["findings"]
    assert finding["kind"] == "gpu_shortage"
    assert finding["message"].startswith(
        "no node has the 2 free nvidia.com/gpu a replica asks for (free of allocatable: cpu-0 0 of 0, gpu-0 0 of 2); "
        "the scheduler: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    )


# --- 6. readiness means the desired count --------------------------------------------------------------------------


def test_6_an_autoscaled_release_is_ready_at_its_floor(cli: Any, svc: Path, kube: FakeCluster) -> None:
    """Fault 6: an HPA deploy declared success at 1 ready, below its minReplicas of 2. The chart leaves
    replicas to the HPA, so the API server defaults it to 1 and the HPA controller scales it to its floor."""
    set_config(
        svc,
        "      shared_release: true\n",
        "      shared_release: true\n      autoscaling: {enabled: true, min_replicas: 2, max_replicas: 4}\n",
    )
    result = deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    assert (result["ready"], result["desired"]) == (2, 2)
    assert len([p for p in result["pods"] if p["ready"]]) == 2
    assert deployment(kube)["spec"]["replicas"] == 2


def test_6_min_above_max_is_refused(cli: Any, svc: Path, kube: FakeCluster) -> None:
    set_config(
        svc,
        "      shared_release: true\n",
        "      shared_release: true\n      autoscaling: {enabled: true, min_replicas: 5, max_replicas: 4}\n",
    )
    refused = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1)
    assert refused.exit_code == 3
    assert "deploy.autoscaling.min_replicas: 5 is above max_replicas (4)" in refused.stderr
    set_config(svc, "min_replicas: 5", "min_replicas: 1")
    by_set = mlctl(cli, svc, "deploy", "--env", "staging", "--image", IMAGE1, "--set", "autoscaling.minReplicas=9")
    assert by_set.exit_code == 4
    assert "autoscaling.minReplicas: 9 is above autoscaling.maxReplicas (4)" in by_set.stderr


# --- 8. diff shows drift; whole messages; progress of the new revision --------------------------------------


def test_8_diff_shows_a_change_made_with_kubectl(cli: Any, svc: Path, kube: FakeCluster) -> None:
    """Fault 8: diff compared with Helm's stored manifest, so a kubectl edit was invisible. It now compares
    the live object with a server-side dry-run apply of what the release would apply (dryRun=All)."""
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    assert "no changes" in mlctl(cli, svc, "diff", "--env", "staging", "--image", IMAGE1).stdout
    from kubernetes import client, config

    api = config.new_client_from_config(str(kube_path()))
    client.AppsV1Api(api).patch_namespaced_deployment("demo-svc", NS, {"spec": {"replicas": 3}})  # kubectl scale
    api.close()
    diff = mlctl(cli, svc, "--json", "diff", "--env", "staging", "--image", IMAGE1)
    assert diff.exit_code == 0, diff.stderr
    (change,) = json.loads(diff.stdout)
    assert (change["resource"], change["change"]) == ("Deployment/demo-svc", "changed")
    assert [line for line in change["diff"].splitlines() if "replicas:" in line and line[0] in "+-"] == [
        "-  replicas: 3",
        "+  replicas: 1",
    ]
    assert deployment(kube)["spec"]["replicas"] == 3  # the dry run changed nothing


def test_8_progress_counts_the_new_revision_and_messages_stay_whole(cli: Any, svc: Path, kube: FakeCluster) -> None:
    """Progress said "1/1 ready (1 ImagePullBackOff)" while the new pod failed (the old pod was the ready
    one); and the pull error was cut with "..." in --json."""
    deploy_json(cli, svc, "--env", "staging", "--image", IMAGE1)
    long_image = (
        "registry.example.com/"
        + "/".join(["a-rather-long-team-name"] * 7)
        + f"/demo-svc:cccc@{IMAGE2.rsplit('@', 1)[1]}"
    )
    kube.bad_images.add(long_image)
    result = mlctl(cli, svc, "--json", "deploy", "--env", "staging", "--image", long_image)
    assert result.exit_code == 8
    statuses = [json.loads(line)["message"] for line in result.stderr.splitlines() if '"status"' in line]
    assert not [s for s in statuses if s.startswith("1/1 ready (1 ")], statuses
    assert any(
        s.startswith("0/1 ready (1 ImagePullBackOff)") or s.startswith("0/1 ready (1 ErrImagePull)") for s in statuses
    )
    finding = json.loads(result.stdout)["error"]["findings"][0]
    assert finding["kind"] == "image_pull"
    assert finding["message"].endswith(f'failed to pull and unpack image "{long_image}": not found')
    assert len(finding["message"]) > 300
