"""The deploy logic (plan -> gate -> apply -> watch, promote, rollback, delete) with small stand-ins for
the cluster and Helm (tests/stubs.py): fast, one behaviour each. The chart is the real one, rendered
by the real Helm engine offline. test_deploy.py walks the same roads against the Kubernetes emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from stubs import StubCluster, StubReleases

from mlctl.config import LoadedConfig, load_service_config
from mlctl.deploy.day2 import delete_release, promote, rollback_release
from mlctl.deploy.release import deploy_service
from mlctl.deploy.target import Target, resolve_target
from mlctl.errors import ClusterError, DeployError, InputError
from mlctl.models import ImageRef, ReleaseImage
from mlctl.reporting import RecordingReporter
from mlctl.views import Deployment, Node

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
  prod:
    deploy:
      namespace: ml-prod
"""


def loaded(env: str | None = None) -> LoadedConfig:
    Path("mlctl.yaml").write_text(SERVICE)
    return load_service_config(env=env)


@pytest.fixture
def cluster() -> StubCluster:
    return StubCluster(namespaces={"ml", "ml-prod"})


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
    assert releases.calls == [("install", "svc", 1)]
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
    assert releases.calls == [("install", "svc", 1)]


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
    assert failed.value.message.endswith("rolled back to revision 1")
    assert failed.value.findings[0].kind == "deadline"
    assert releases.calls == [("install", "svc", 1), ("upgrade", "svc", 2), ("rollback", "svc", 1)]
    assert releases.values("svc")["image"]["digest"] == DIGEST1  # revision 3 runs revision 1's values


def test_a_failed_first_install_is_removed(cluster: StubCluster) -> None:
    releases = helm(cluster)
    cluster.outcome = "deadline"
    with pytest.raises(DeployError) as failed:
        deploy(resolve_target(loaded()), IMAGE1, cluster, releases)
    assert failed.value.message.endswith("the failed install was removed")
    assert releases.calls == [("install", "svc", 1), ("uninstall", "svc", 0)]
    assert releases.history("svc") == []


def test_the_gate_refuses_before_anything_is_installed(cluster: StubCluster) -> None:
    releases = helm(cluster)
    with pytest.raises(DeployError, match=r"no node in the cluster offers nvidia\.com/gpu"):
        deploy(resolve_target(loaded("gpu")), IMAGE1, cluster, releases)
    assert releases.calls == []


def test_the_driver_floor_is_the_image_label_and_pins_the_nodes(cluster: StubCluster) -> None:
    cluster.node_list = [
        Node("gpu-old", {"nvidia.com/cuda.driver.major": "535"}, gpus=1),
        Node("gpu-new", {"nvidia.com/cuda.driver.major": "580"}, gpus=1),
    ]
    releases = helm(cluster)
    labelled = ReleaseImage(IMAGE1.ref, {"mlctl.min-driver": "580.65.06"}, False, "mlctl build")
    deploy(resolve_target(loaded("gpu")), labelled, cluster, releases)
    assert releases.values("svc")["resources"]["gpu"]["minDriverMajor"] == 580
    newer = ReleaseImage(IMAGE2.ref, {"mlctl.min-driver": "590.10"}, False, "mlctl build")
    with pytest.raises(DeployError, match=r"needs an NVIDIA driver >= 590\.10"):
        deploy(resolve_target(loaded("gpu")), newer, cluster, releases)


def test_without_the_image_labels_the_driver_is_not_pinned_and_that_is_said(cluster: StubCluster) -> None:
    cluster.node_list = [Node("gpu-0", {"nvidia.com/cuda.driver.major": "535"}, gpus=1)]
    releases = helm(cluster)
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
    releases = helm(cluster)
    staging, prod = resolve_target(loaded()), resolve_target(loaded("prod"))
    deploy(staging, IMAGE1, cluster, releases)
    result = promote(staging, prod, cluster=cluster, releases=releases, timeout_s=5)
    assert (result.namespace, result.image) == ("ml-prod", IMAGE1.ref.reference)


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
    with pytest.raises(InputError, match="svc has no earlier revision to roll back to"):
        rollback_release(where, None, cluster=cluster, releases=releases)
    deploy(where, IMAGE2, cluster, releases)
    with pytest.raises(InputError, match="svc has no revision 7; it has 1, 2"):
        rollback_release(where, 7, cluster=cluster, releases=releases)
    result = rollback_release(where, None, cluster=cluster, releases=releases, timeout_s=5)
    assert (result.revision, result.image) == (3, IMAGE1.ref.reference)
    assert releases.calls[-1] == ("rollback", "svc", 1)


def test_delete_needs_a_release(cluster: StubCluster) -> None:
    releases = helm(cluster)
    where = resolve_target(loaded())
    with pytest.raises(InputError, match="no release 'svc' in namespace ml"):
        delete_release(where, cluster=cluster, releases=releases)
    deploy(where, IMAGE1, cluster, releases)
    assert delete_release(where, cluster=cluster, releases=releases) == "svc"
    assert releases.history("svc") == []
    assert cluster.deployment("ml", "svc") is None
