"""The deploy logic (plan -> gate -> apply -> watch, promote, rollback, delete) with small stand-ins for
the cluster and Helm (tests/stubs.py): fast, one behaviour each. The chart is the real one, rendered
by the real Helm engine offline. test_deploy.py walks the same roads against the Kubernetes emulator."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from stubs import StubCluster, StubReleases

from mlctl.config import LoadedConfig, StrategyConfig, load_service_config
from mlctl.deploy.day2 import delete_release, promote, release_status, rollback_release
from mlctl.deploy.release import deploy_service
from mlctl.deploy.strategy import plan_strategy
from mlctl.deploy.target import Target, resolve_target
from mlctl.errors import ClusterError, DeployError, InputError, MlctlError, RollbackError
from mlctl.models import ImageRef, Promotion, ReleaseImage
from mlctl.reporting import RecordingReporter
from mlctl.views import Autoscaler, Deployment, Node, Pod

DIGEST1, DIGEST2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
IMAGE1 = ReleaseImage(ImageRef("registry.example.com/acme/svc", "aaaa-g1111111", DIGEST1))
IMAGE2 = ReleaseImage(ImageRef("registry.example.com/acme/svc", "bbbb-g2222222", DIGEST2))
SERVICE = """\
name: svc
runtime:
  accelerator: cpu
serving:
  app: svc.server:app
deploy:
  namespace: ml
environments:
  gpu:
    runtime:
      accelerator: cuda
    resources:
      gpu:
        count: 1
    deploy:
      namespace: ml-gpu
  prod:
    deploy:
      namespace: ml-prod
"""


def loaded(env: str | None = None) -> LoadedConfig:
    Path("mlctl.yaml").write_text(SERVICE)
    return load_service_config(env=env)


@pytest.fixture
def cluster() -> StubCluster:
    return StubCluster(namespaces={"ml", "ml-gpu", "ml-prod"})


def helm(cluster: StubCluster, namespace: str = "ml") -> StubReleases:
    return StubReleases(cluster, namespace)


def deploy(where: Target, image: ReleaseImage, cluster: StubCluster, releases: StubReleases, **kw: object):  # type: ignore[no-untyped-def]
    return deploy_service(where, image, cluster=cluster, releases=releases, timeout_s=5, **kw)  # type: ignore[arg-type]


def test_a_first_deploy_installs_the_image_by_digest_and_waits(cluster: StubCluster) -> None:
    releases = helm(cluster)
    reporter = RecordingReporter()
    result = deploy(resolve_target(loaded()), IMAGE1, cluster, releases, reporter=reporter)
    assert (result.status, result.revision, result.ready, result.desired) == ("deployed", 1, 1, 1)
    assert result.image == IMAGE1.ref.reference
    assert releases.calls == [("install", "svc", 1), ("mark healthy", "svc", 1)]
    assert releases.history("svc")[0].rollout == "healthy"
    assert releases.values("svc")["image"] == {
        "repository": "registry.example.com/acme/svc",
        "tag": "aaaa-g1111111",
        "digest": DIGEST1,
    }
    assert releases.description("svc", 1) == f"mlctl deploy {IMAGE1.ref.reference}"
    assert ("step", f"installing svc in ml ({IMAGE1.ref.reference})") in reporter.events


def test_nothing_changed_is_not_applied_again(cluster: StubCluster) -> None:
    releases = helm(cluster)
    where = resolve_target(loaded())
    deploy(where, IMAGE1, cluster, releases)
    again = deploy(where, IMAGE1, cluster, releases)
    assert (again.status, again.revision) == ("unchanged", 1)
    assert releases.calls == [("install", "svc", 1), ("mark healthy", "svc", 1)]


def test_a_dry_run_shows_the_plan_and_changes_nothing(cluster: StubCluster) -> None:
    releases = helm(cluster)
    result = deploy(resolve_target(loaded()), IMAGE1, cluster, releases, dry_run=True)
    assert result.status == "would-install"
    assert result.manifest is not None
    assert DIGEST1 in result.manifest
    assert releases.calls == []


def test_a_failed_upgrade_is_rolled_back_to_the_last_good_revision(cluster: StubCluster) -> None:
    releases = helm(cluster)
    where = resolve_target(loaded())
    deploy(where, IMAGE1, cluster, releases)
    cluster.outcome = "deadline"
    with pytest.raises(DeployError) as failed:
        deploy(where, IMAGE2, cluster, releases)
    assert failed.value.exit_code == 8
    assert failed.value.message.endswith("rolled back to revision 1 (now revision 3, 1/1 ready)")
    assert failed.value.findings[0].kind == "deadline"
    assert releases.calls == [
        ("install", "svc", 1),
        ("mark healthy", "svc", 1),
        ("upgrade", "svc", 2),
        ("mark failed", "svc", 2),  # before the rollback, so that Helm's rollback leaves it failed
        ("rollback", "svc", 1),
        ("mark healthy", "svc", 3),  # the rollback was followed to readiness too
    ]
    assert releases.values("svc")["image"]["digest"] == DIGEST1  # revision 3 runs revision 1's values
    history = releases.history("svc")
    assert [(r.revision, r.status, r.rollout) for r in history] == [
        (1, "superseded", "healthy"),
        (2, "failed", "failed"),
        (3, "deployed", "healthy"),
    ]
    assert releases.description("svc", 2).startswith(f"mlctl deploy {IMAGE2.ref.reference} failed: the rollout made")


def test_a_failed_first_install_is_removed(cluster: StubCluster) -> None:
    releases = helm(cluster)
    cluster.outcome = "deadline"
    with pytest.raises(DeployError) as failed:
        deploy(resolve_target(loaded()), IMAGE1, cluster, releases)
    assert failed.value.message.endswith("the failed install was removed")
    assert releases.calls == [("install", "svc", 1), ("mark failed", "svc", 1), ("uninstall", "svc", 0)]
    assert releases.history("svc") == []


def test_the_gate_refuses_before_anything_is_installed(cluster: StubCluster) -> None:
    releases = helm(cluster, "ml-gpu")
    with pytest.raises(DeployError, match=r"no node in the cluster offers nvidia\.com/gpu"):
        deploy(resolve_target(loaded("gpu")), IMAGE1, cluster, releases)
    assert releases.calls == []


def test_the_driver_floor_is_the_image_label_and_pins_the_nodes(cluster: StubCluster) -> None:
    cluster.node_list = [
        Node("gpu-old", {"nvidia.com/cuda.driver.major": "535"}, gpus=1),
        Node("gpu-new", {"nvidia.com/cuda.driver.major": "580"}, gpus=1),
    ]
    releases = helm(cluster, "ml-gpu")
    labelled = ReleaseImage(IMAGE1.ref, {"mlctl.min-driver": "580.65.06"}, False, "mlctl build")
    deploy(resolve_target(loaded("gpu")), labelled, cluster, releases)
    assert releases.values("svc")["resources"]["gpu"]["minDriverMajor"] == 580
    newer = ReleaseImage(IMAGE2.ref, {"mlctl.min-driver": "590.10"}, False, "mlctl build")
    with pytest.raises(DeployError, match=r"needs an NVIDIA driver >= 590\.10"):
        deploy(resolve_target(loaded("gpu")), newer, cluster, releases)


def test_without_the_image_labels_the_driver_is_not_pinned_and_that_is_said(cluster: StubCluster) -> None:
    cluster.node_list = [Node("gpu-0", {"nvidia.com/cuda.driver.major": "535"}, gpus=1)]
    releases = helm(cluster, "ml-gpu")
    reporter = RecordingReporter()
    deploy(resolve_target(loaded("gpu")), IMAGE1, cluster, releases, reporter=reporter)
    assert releases.values("svc")["resources"]["gpu"]["minDriverMajor"] == 0
    assert any(kind == "warn" and "mlctl.min-driver label is unknown here" in m for kind, m in reporter.events)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (ReleaseImage(ImageRef("svc", "aaaa")), "prod takes only pushed images, by digest: svc:aaaa has none"),
        (
            ReleaseImage(IMAGE1.ref, {}, True, "mlctl build"),
            "prod takes only images built from committed code",
        ),
    ],
)
def test_prod_refuses_before_the_cluster_is_asked(image: ReleaseImage, message: str) -> None:
    cluster = StubCluster(namespaces=set())  # would fail the namespace check: never reached
    with pytest.raises(InputError, match=message):
        deploy(resolve_target(loaded("prod")), image, cluster, helm(cluster, "ml-prod"))


def test_a_missing_namespace_is_a_cluster_problem(cluster: StubCluster) -> None:
    cluster.namespaces = set()
    with pytest.raises(ClusterError, match="namespace 'ml' does not exist in the cluster"):
        deploy(resolve_target(loaded()), IMAGE1, cluster, helm(cluster))


def test_promote_deploys_the_digest_that_runs_in_the_source(cluster: StubCluster) -> None:
    releases, prod_releases = helm(cluster), helm(cluster, "ml-prod")
    staging, prod = resolve_target(loaded()), resolve_target(loaded("prod"))
    deploy(staging, IMAGE1, cluster, releases)
    reporter = RecordingReporter()
    result = promote(
        staging,
        prod,
        yes=True,
        cluster=cluster,
        releases=releases,
        to_releases=prod_releases,
        timeout_s=5,
        reporter=reporter,
    )
    assert (result.namespace, result.image, result.revision) == ("ml-prod", IMAGE1.ref.reference, 1)
    assert prod_releases.calls == [("install", "svc", 1), ("mark healthy", "svc", 1)]
    # What it would change was said first (a first install: every resource is added).
    assert [c.change for c in result.changes]
    assert {c.change for c in result.changes} == {"added"}
    steps = [m for kind, m in reporter.events if kind == "step"]
    assert steps.index(next(m for m in steps if m.startswith("promoting"))) < steps.index(
        f"installing svc in ml-prod ({IMAGE1.ref.reference})"
    )


def test_promote_to_a_protected_environment_asks_or_needs_yes(cluster: StubCluster) -> None:
    releases, prod_releases = helm(cluster), helm(cluster, "ml-prod")
    staging, prod = resolve_target(loaded()), resolve_target(loaded("prod"))
    deploy(staging, IMAGE1, cluster, releases)
    kw = {"cluster": cluster, "releases": releases, "to_releases": prod_releases, "timeout_s": 5}
    with pytest.raises(InputError, match=r"prod is protected: promoting to it needs --yes"):
        promote(staging, prod, **kw)  # type: ignore[arg-type]
    seen = []

    def no(promotion: Promotion) -> bool:
        seen.append(promotion)
        return False

    with pytest.raises(MlctlError, match="the promotion to prod was declined: nothing was changed") as declined:
        promote(staging, prod, confirm=no, **kw)  # type: ignore[arg-type]
    assert declined.value.exit_code == 1
    assert (seen[0].image, seen[0].source, seen[0].to) == (IMAGE1.ref.reference, "ml", "prod")
    assert seen[0].changes  # the person was shown what would change
    assert prod_releases.calls == []
    result = promote(staging, prod, confirm=lambda _: True, **kw)  # type: ignore[arg-type]
    assert result.namespace == "ml-prod"


def test_promote_takes_only_what_works_and_is_pinned(cluster: StubCluster) -> None:
    releases = helm(cluster)
    staging, prod = resolve_target(loaded()), resolve_target(loaded("prod"))
    with pytest.raises(InputError, match="nothing of svc is deployed"):
        promote(staging, prod, cluster=cluster, releases=releases)
    deploy(staging, ReleaseImage(ImageRef("svc", "aaaa")), cluster, releases)
    with pytest.raises(InputError, match="which is not pinned by digest"):
        promote(staging, prod, cluster=cluster, releases=releases)
    cluster.deployments[("ml", "svc")] = Deployment("svc", replicas=2, ready=1, images={"server": IMAGE1.ref.reference})
    with pytest.raises(DeployError, match=r"is not healthy \(1/2 replicas of revision 1 ready\)"):
        promote(staging, prod, cluster=cluster, releases=releases)


def test_rollback_goes_to_the_revision_before_and_refuses_unknown_ones(cluster: StubCluster) -> None:
    releases = helm(cluster)
    where = resolve_target(loaded())
    deploy(where, IMAGE1, cluster, releases)
    with pytest.raises(InputError, match="svc has no earlier revision that rolled out healthy to roll back to"):
        rollback_release(where, None, cluster=cluster, releases=releases)
    deploy(where, IMAGE2, cluster, releases)
    with pytest.raises(InputError, match="svc has no revision 7; it has 1, 2"):
        rollback_release(where, 7, cluster=cluster, releases=releases)
    result = rollback_release(where, None, cluster=cluster, releases=releases, timeout_s=5)
    assert (result.revision, result.image) == (3, IMAGE1.ref.reference)
    assert releases.calls[-2:] == [("rollback", "svc", 1), ("mark healthy", "svc", 3)]
    with pytest.raises(InputError, match="there is no revision 0: Helm numbers revisions from 1"):
        rollback_release(where, 0, cluster=cluster, releases=releases)


def test_rollback_skips_a_failed_revision_and_needs_force_for_one(cluster: StubCluster) -> None:
    """Fault 1: after a failed upgrade was rolled back, a plain rollback went back to the failed revision."""
    releases = helm(cluster)
    where = resolve_target(loaded())
    deploy(where, IMAGE1, cluster, releases)
    cluster.outcome = "deadline"
    with pytest.raises(DeployError):
        deploy(where, IMAGE2, cluster, releases)  # 2 failed, 3 is the rollback to 1
    result = rollback_release(where, None, cluster=cluster, releases=releases, timeout_s=5)
    assert releases.calls[-2] == ("rollback", "svc", 1)  # not 2, the one before the latest
    assert (result.revision, result.image) == (4, IMAGE1.ref.reference)
    with pytest.raises(
        InputError,
        match=r"revision 2 of svc failed its rollout \(mlctl deploy .* failed: .*\); "
        "rolling back to it needs --force",
    ):
        rollback_release(where, 2, cluster=cluster, releases=releases)
    cluster.rollback_outcome = "deadline"  # revision 2's image still does not come up
    with pytest.raises(RollbackError) as failed:
        rollback_release(where, 2, force=True, cluster=cluster, releases=releases, timeout_s=5)
    assert failed.value.exit_code == 10
    assert failed.value.message.startswith("svc: the rollback to revision 2 did not become ready: 0/1 ready")
    assert failed.value.message.endswith("svc is left at revision 5, marked failed")
    assert releases.history("svc")[-1].failed


def test_a_rollback_that_fails_too_has_its_own_exit_code(cluster: StubCluster) -> None:
    releases = helm(cluster)
    where = resolve_target(loaded())
    deploy(where, IMAGE1, cluster, releases)
    cluster.outcome = cluster.rollback_outcome = "deadline"  # say the nodes broke: nothing comes up now
    with pytest.raises(RollbackError) as failed:
        deploy(where, IMAGE2, cluster, releases)
    assert failed.value.exit_code == 10
    assert failed.value.message == (
        "svc: the rollout failed after 0 s; the rollback to revision 1 failed too: 0/1 ready after 0 s. svc is left "
        "at revision 3, marked failed, and no revision of it runs"
    )
    assert [(r.revision, r.status) for r in releases.history("svc")] == [
        (1, "superseded"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert releases.description("svc", 3).startswith("Rollback to 1 failed: the rollout made no progress")
    # The next deploy upgrades from there (the release did roll out once): it is not uninstalled.
    cluster.outcome = "ready"
    again = deploy(where, IMAGE1, cluster, releases)
    assert (again.status, again.revision) == ("deployed", 4)
    assert ("uninstall", "svc", 0) not in releases.calls


def test_a_dry_run_with_no_healthy_revision_left_previews_the_upgrade_the_deploy_makes(cluster: StubCluster) -> None:
    # Revision 1 rolled out, then the upgrade and its rollback failed: nothing is "deployed" and healthy,
    # but the release did roll out once, so a deploy upgrades it. The dry run (and mlctl diff) show Helm's
    # preview of that upgrade, not the bare render (once, the dry run said "would upgrade" and showed that).
    releases = helm(cluster)
    where = resolve_target(loaded())
    deploy(where, IMAGE1, cluster, releases)
    cluster.outcome = cluster.rollback_outcome = "deadline"
    with pytest.raises(RollbackError):
        deploy(where, IMAGE2, cluster, releases)
    cluster.outcome = "ready"
    releases.previews.clear()
    planned = deploy(where, IMAGE2, cluster, releases, dry_run=True)
    assert planned.status == "would-upgrade"
    assert releases.previews == [("svc", True)]
    assert planned.manifest is not None
    assert DIGEST2 in planned.manifest
    assert ("upgrade", "svc", 4) not in releases.calls  # a dry run changes nothing


def test_a_pod_waiting_for_a_node_fails_the_deploy_after_the_budget(cluster: StubCluster) -> None:
    """Fault 5: GPUs busy rather than missing warned at once but failed only at the timeout (615 s)."""
    Path("mlctl.yaml").write_text(
        SERVICE.replace("deploy:\n  namespace: ml\n", "deploy:\n  namespace: ml\n  unschedulable_budget_s: 1\n")
    )
    cluster.node_list = [Node("gpu-0", gpus=1)]
    cluster.bound = [Pod("other-0", "Running", node="gpu-0", gpus=1)]  # someone else holds the GPU
    cluster.outcome = "unschedulable"
    releases = helm(cluster, "ml-gpu")
    from mlctl.config import load_service_config

    where = resolve_target(load_service_config(env="gpu"))
    started = time.monotonic()
    with pytest.raises(DeployError) as failed:
        deploy_service(where, IMAGE1, cluster=cluster, releases=releases, timeout_s=600)
    assert time.monotonic() - started < 10
    assert failed.value.message.startswith("svc: 0/1 replicas ready; a pod waited 1 s for a node")
    assert "(deploy.unschedulable_budget_s is 1); the failed install was removed" in failed.value.message
    (finding,) = failed.value.findings
    assert finding.kind == "gpu_shortage"
    assert finding.message == (
        "no node has the 1 free nvidia.com/gpu a replica asks for (free of allocatable: gpu-0 0 of 1); the scheduler: "
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )


def test_the_wait_for_a_node_counts_from_when_the_old_pods_are_gone(cluster: StubCluster) -> None:
    """With maxSurge 0, a new GPU pod waits for the GPU of the old pod it replaces, which takes its preStop
    delay and graceful shutdown to stop: that wait is not the scheduler failing, whatever the budget."""
    Path("mlctl.yaml").write_text(
        SERVICE.replace("deploy:\n  namespace: ml\n", "deploy:\n  namespace: ml\n  unschedulable_budget_s: 1\n")
    )
    cluster.node_list = [Node("gpu-0", gpus=1)]
    cluster.outcome = "unschedulable"
    cluster.stopping = [Pod("svc-old-0", "Running", terminating=True, node="gpu-0", gpus=1)]
    from mlctl.config import load_service_config

    where = resolve_target(load_service_config(env="gpu"))
    with pytest.raises(DeployError) as failed:
        deploy_service(where, IMAGE1, cluster=cluster, releases=helm(cluster, "ml-gpu"), timeout_s=3)
    assert failed.value.message.startswith("svc: 0/1 replicas ready after 3 s")  # the timeout, not the budget


def test_ready_means_the_autoscalers_floor(cluster: StubCluster) -> None:
    """Fault 6: an HPA deploy declared success with 1 ready, below its minReplicas of 2."""
    cluster.autoscalers[("ml", "svc")] = Autoscaler("svc", min_replicas=2, max_replicas=4)  # it never scales here
    with pytest.raises(DeployError) as failed:
        deploy_service(resolve_target(loaded()), IMAGE1, cluster=cluster, releases=helm(cluster), timeout_s=1)
    assert failed.value.message.startswith("svc: 1/2 replicas ready after 1 s")


def test_status_wants_the_autoscalers_floor_too(cluster: StubCluster) -> None:
    """mlctl status counts against the same number a deploy waits for: an HPA added (or raised) after the
    deploy, before its controller scales, leaves the release short of its floor, and status says so."""
    where = resolve_target(loaded())
    releases = helm(cluster)
    deploy(where, IMAGE1, cluster, releases)
    cluster.autoscalers[("ml", "svc")] = Autoscaler("svc", min_replicas=2, max_replicas=4)
    status = release_status(where, cluster=cluster, releases=releases)
    assert (status.ready, status.desired) == (1, 2)


def test_a_missing_namespace_is_created_only_when_asked(cluster: StubCluster) -> None:
    cluster.namespaces = set()
    with pytest.raises(ClusterError) as missing:
        deploy(resolve_target(loaded()), IMAGE1, cluster, helm(cluster))
    assert missing.value.hint is not None
    assert missing.value.hint.startswith("pass --create-namespace to create it")
    planned = deploy(resolve_target(loaded()), IMAGE1, cluster, helm(cluster), create_namespace=True, dry_run=True)
    assert (planned.status, cluster.created_namespaces) == ("would-install", [])
    result = deploy(resolve_target(loaded()), IMAGE1, cluster, helm(cluster), create_namespace=True)
    assert (result.status, cluster.created_namespaces) == ("deployed", ["ml"])


def test_delete_needs_a_release(cluster: StubCluster) -> None:
    releases = helm(cluster)
    where = resolve_target(loaded())
    with pytest.raises(InputError, match="no release 'svc' in namespace ml"):
        delete_release(where, cluster=cluster, releases=releases)
    deploy(where, IMAGE1, cluster, releases)
    assert delete_release(where, cluster=cluster, releases=releases) == "svc"
    assert releases.history("svc") == []
    assert cluster.deployment("ml", "svc") is None


# --- rollout strategy (deploy.strategy) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "replicas", "gpus", "room", "expected"),
    [
        # auto: a surge pod when a node has the GPUs for it (or there are none to have), else one down.
        ({}, 1, 1, True, (1, 0, False)),
        ({}, 1, 1, False, (0, 1, True)),
        ({}, 1, 1, None, (0, 1, True)),  # free GPUs unknown: no surge pod that could wait forever
        ({}, 1, 0, None, (1, 0, False)),  # a CPU service always surges
        ({}, 3, 1, False, (0, 1, False)),  # 2 of 3 keep serving: slower, not down
        # One side given: the other follows it.
        ({"max_unavailable": 0}, 1, 1, False, (1, 0, False)),  # no downtime asked: the surge pod waits
        ({"max_surge": 0}, 2, 1, True, (0, 1, False)),
        ({"max_surge": "50%"}, 4, 0, True, ("50%", 0, False)),
        # Both given: as given, percentages resolved as the controller does (unavailable rounds down).
        ({"max_surge": 0, "max_unavailable": "100%"}, 2, 0, True, (0, "100%", True)),
        ({"max_surge": 1, "max_unavailable": "40%"}, 2, 0, True, (1, "40%", False)),
    ],
)
def test_the_strategy_follows_deploy_strategy_and_the_free_gpus(
    config: dict[str, object], replicas: int, gpus: int, room: bool | None, expected: tuple[object, object, bool]
) -> None:
    strategy = plan_strategy(StrategyConfig(**config), replicas=replicas, gpus=gpus, room=room)  # type: ignore[arg-type]
    assert (strategy.max_surge, strategy.max_unavailable, strategy.downtime) == expected


def test_the_default_strategy_surges_where_a_gpu_is_free_and_says_when_it_cannot(cluster: StubCluster) -> None:
    """Fault 4: every update of a 1-replica GPU service was an outage, with no setting and no warning."""
    cluster.node_list = [Node("gpu-0", gpus=2)]
    releases = helm(cluster, "ml-gpu")
    where = resolve_target(loaded("gpu"))
    deploy(where, IMAGE1, cluster, releases)
    assert releases.values("svc")["rollout"] == {"maxSurge": 1, "maxUnavailable": 0}
    # The service's pod holds one GPU and another service the other: no room for a surge pod now.
    cluster.bound = [Pod("svc-h-0", "Running", node="gpu-0", gpus=1), Pod("other-0", "Running", node="gpu-0", gpus=1)]
    reporter = RecordingReporter()
    deploy(where, IMAGE2, cluster, releases, reporter=reporter)
    assert releases.values("svc")["rollout"] == {"maxSurge": 0, "maxUnavailable": 1}
    warning = (
        "this update of svc has downtime: no node has 1 free GPU(s) for a new pod beside the old, so the old pod "
        "stops before the new one starts, so svc serves nothing until the new pod is ready (a free GPU for a surge "
        "pod, or 2 replicas, would avoid it)"
    )
    assert ("warn", warning) in reporter.events
    # Said before the update starts.
    assert reporter.events.index(("warn", warning)) < reporter.events.index(
        ("step", f"upgrading svc in ml-gpu to {IMAGE2.ref.reference}")
    )


def test_a_protected_environment_needs_allow_downtime(cluster: StubCluster) -> None:
    Path("mlctl.yaml").write_text(
        SERVICE + "    runtime:\n      accelerator: cuda\n    resources:\n      gpu:\n        count: 1\n"
    )
    from mlctl.config import load_service_config

    cluster.node_list = [Node("gpu-0", gpus=1)]
    releases = helm(cluster, "ml-prod")
    where = resolve_target(load_service_config(env="prod"))
    deploy(where, IMAGE1, cluster, releases)
    cluster.bound = [Pod("svc-h-0", "Running", node="gpu-0", gpus=1)]
    with pytest.raises(InputError) as refused:
        deploy(where, IMAGE2, cluster, releases)
    assert refused.value.message.startswith("prod is protected and this update of svc has downtime")
    assert refused.value.hint is not None
    assert refused.value.hint.startswith("pass --allow-downtime")
    assert [c[0] for c in releases.calls] == ["install", "mark healthy"]  # nothing applied
    deploy(where, IMAGE2, cluster, releases, allow_downtime=True)
    assert releases.calls[-2:] == [("upgrade", "svc", 2), ("mark healthy", "svc", 2)]


# --- environments that would share a release ---------------------------------------------------------------

SHARED = """\
name: svc
runtime:
  accelerator: cpu
serving:
  app: svc.server:app
environments:
  staging: {}
  prod: {}
"""


def test_environments_that_resolve_to_one_release_are_refused(cluster: StubCluster) -> None:
    """Fault 2: staging and prod were the same release by default, and promote upgraded it in place."""
    Path("mlctl.yaml").write_text(SHARED)
    from mlctl.config import load_service_config
    from mlctl.errors import ConfigError

    staging, prod = resolve_target(load_service_config(env="staging")), resolve_target(load_service_config(env="prod"))
    assert (staging.namespace, prod.namespace) == ("default", "default")
    cluster.namespaces = {"default"}
    releases = helm(cluster, "default")
    with pytest.raises(ConfigError) as refused:
        deploy(staging, IMAGE1, cluster, releases)
    assert refused.value.exit_code == 3
    assert refused.value.message == (
        "environment staging and the settings without --env resolve to the same release: svc in namespace default on "
        "the current kube context; deploying or promoting one would replace the other"
    )
    assert refused.value.hint is not None
    assert "deploy.shared_release: true in both" in refused.value.hint
    with pytest.raises(ConfigError, match="resolve to the same release"):
        promote(staging, prod, yes=True, cluster=cluster, releases=releases)
    assert releases.calls == []
    # Meant to be one release: said in the config, for every environment.
    Path("mlctl.yaml").write_text(SHARED.replace("environments:", "deploy:\n  shared_release: true\nenvironments:"))
    assert deploy(resolve_target(load_service_config(env="staging")), IMAGE1, cluster, releases).status == "deployed"


def test_values_files_are_read_with_mlctl_yamls_bounds(cluster: StubCluster) -> None:
    where = resolve_target(loaded())
    bomb = Path("bomb.yaml")
    bomb.write_text(
        'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n'
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    )
    tagged = Path("tagged.yaml")
    tagged.write_text("image: !!python/object/apply:os.system ['true']\n")
    for path, why in ((bomb, "keys and values"), (tagged, "tag")):
        with pytest.raises(InputError) as refused:
            deploy(where, IMAGE1, cluster, helm(cluster), values_files=[path])
        assert refused.value.message.startswith(f"--values {path}"), refused.value.message
        assert why in refused.value.message
    assert helm(cluster).calls == []
    good = Path("good.yaml")
    good.write_text("replicaCount: 2\n")
    deploy(where, IMAGE1, cluster, releases := helm(cluster), values_files=[good])
    assert releases.values("svc")["replicaCount"] == 2
