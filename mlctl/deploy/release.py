"""``mlctl deploy``: plan -> gate -> apply -> watch.

Plan and gate: the image, the values, the GPU gate, the strategy and the one render
(``mlctl.deploy.plan``). Apply: install or upgrade the Helm release (nothing, when nothing
changed). Watch: follow the rollout until every wanted replica is ready; when it fails, say why in
plain words, mark the revision failed in Helm's history, roll back to the last revision that rolled
out healthy and follow that too, or remove a failed first install (``mlctl.deploy.revisions``), and
exit with the rollout-failure code (the rollback-failure code when the rollback did not come up
either).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlctl.chart.render import manifest_documents, replaces_pods, same_manifests
from mlctl.deploy.plan import announce_downtime, plan_release, plan_values, planned_manifests, replica_count
from mlctl.deploy.revisions import DEADLINE_GRACE_S, HELM_TIMEOUT_S, ever_rolled_out, record, undo_failed_rollout
from mlctl.deploy.target import Target, check_collisions, check_protected, connected
from mlctl.deploy.watch import current_pods, pod_state, wanted_replicas, watch_rollout
from mlctl.models import DeployResult, ImageRef, ReleaseImage, RenderedRelease
from mlctl.ports import HEALTHY, Cluster, Releases, Revision
from mlctl.reporting import NullReporter, Reporter

__all__ = ["DEADLINE_GRACE_S", "HELM_TIMEOUT_S", "deploy_service", "result"]


def deploy_service(
    where: Target,
    image: ReleaseImage,
    *,
    values_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    wait: bool = True,
    timeout_s: float | None = None,
    dry_run: bool = False,
    allow_downtime: bool = False,
    create_namespace: bool = False,
    reporter: Reporter | None = None,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
) -> DeployResult:
    """Install or upgrade the service's release and follow the rollout.

    Args:
        where: The release (``resolve_target``).
        image: The image (``resolve_image``).
        values_files: Extra chart values files.
        sets: Extra chart values in Helm's ``--set`` syntax.
        wait: Follow the rollout until it is ready or fails.
        timeout_s: How long to follow it (default: the Deployment's progress deadline, and a little).
        dry_run: Do everything up to the install (values, cluster, namespace, GPU gate, what would
            change) and change nothing.
        allow_downtime: Let an update with downtime go ahead in a protected environment.
        create_namespace: Create the namespace when it is missing (as ``helm install --create-namespace``).
        reporter: Progress.
        cluster: The Kubernetes API (default: the kube context's).
        releases: Helm (default: the Helm engine on that cluster).

    Raises:
        InputError: bad values, an image a protected environment refuses, or an update with downtime there
        without ``allow_downtime``. ConfigError: another environment resolves to the same release.
        ClusterError: the cluster is unreachable, forbids us, or lacks the namespace. DeployError: no node
        can run it (GPU gate), or the rollout failed (after rolling back). RollbackError: the rollback
        did not come up either.
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    check_protected(where, image)
    check_collisions(where)
    values = plan_values(where, image, values_files=values_files, sets=sets)
    planning = dry_run and create_namespace  # a dry run creates nothing, the namespace included
    with connected(
        where,
        cluster=cluster,
        releases=releases,
        check_namespace=not planning,
        create_namespace=create_namespace,
        reporter=reporter,
    ) as (kube, helm):
        absent = planning and not kube.namespace_exists(where.namespace)
        if absent:
            reporter.step(f"dry run: namespace {where.namespace} would be created")
        plan = plan_release(kube, helm, where, image, values, reporter, new_namespace=absent)
        gate, history, live, strategy, rendered = plan.gate, plan.history, plan.live, plan.strategy, plan.rendered
        deployed = [r for r in history if r.status == "deployed" and not r.failed]
        values = dict(rendered.values)
        # The watch outlives the Deployment's own deadline a little, so that the controller's verdict
        # (ProgressDeadlineExceeded) is what ends it, not our clock.
        timeout = int(timeout_s or _progress_deadline(rendered) + DEADLINE_GRACE_S)
        ref = image.ref
        planned = planned_manifests(helm, where, plan, new_namespace=absent) if deployed or dry_run else None
        if deployed and planned is not None:
            live_manifest = helm.manifest(where.release)
            if same_manifests(live_manifest, planned):
                reporter.step(f"{where.release}: nothing changed since revision {deployed[-1].revision}")
                last = deployed[-1].revision
                return result(kube, where, "unchanged", last, ref, started, gate.warnings, image.weights)
            if live is not None and replaces_pods(live_manifest, planned):
                announce_downtime(where, strategy, live, allow_downtime, reporter)
        if dry_run:
            would = "would-upgrade" if history and ever_rolled_out(history) else "would-install"
            reporter.step(
                f"dry run: {where.release} {would.replace('-', ' ')} in {where.namespace} with {ref.reference}"
                + (f" (revision {deployed[-1].revision} is live)" if deployed else "")
            )
            current = deployed[-1].revision if deployed else None
            return dataclasses.replace(
                result(kube, where, would, current, ref, started, gate.warnings, image.weights), manifest=planned
            )
        revision = _apply(helm, where, values, history, ref, reporter)
        if not wait:
            return result(kube, where, "deployed", revision, ref, started, gate.warnings, image.weights)
        reporter.step(f"waiting for {replica_count(values)} replica(s) to be ready (up to {timeout} s)")
        rollout = watch_rollout(
            kube,
            where.namespace,
            where.release,
            timeout_s=timeout,
            startup_budget_s=int(values["probes"]["startupBudgetSeconds"]),
            memory_limit=str(values["resources"]["memoryLimit"]),
            reporter=reporter,
            unschedulable_budget_s=where.loaded.config.deploy.unschedulable_budget_s,
        )
        if rollout.ok:
            record(helm, where.release, revision, HEALTHY, reporter)
            return result(kube, where, "deployed", revision, ref, started, gate.warnings, image.weights)
        raise undo_failed_rollout(kube, helm, where, revision, rollout, ref, timeout_s, reporter)


def _apply(
    helm: Releases, where: Target, values: Mapping[str, Any], history: list[Revision], ref: ImageRef, reporter: Reporter
) -> int:
    """Install, or upgrade what is there; a release that never rolled out (a failed first install) is removed first."""
    description = f"mlctl deploy {ref.reference}"
    if history and not ever_rolled_out(history):
        reporter.step(f"{where.release}: removing the failed earlier install")
        helm.uninstall(where.release, timeout=HELM_TIMEOUT_S)
        history = []
    if history:
        reporter.step(f"upgrading {where.release} in {where.namespace} to {ref.reference}")
        return helm.upgrade(where.release, values, timeout=HELM_TIMEOUT_S, description=description)
    reporter.step(f"installing {where.release} in {where.namespace} ({ref.reference})")
    return helm.install(where.release, values, timeout=HELM_TIMEOUT_S, description=description)


def _progress_deadline(rendered: RenderedRelease) -> int:
    for document in manifest_documents(rendered.manifests.get("deployment.yaml", "")):
        if document.get("kind") == "Deployment":
            return int(document["spec"]["progressDeadlineSeconds"])
    return 600


def result(
    cluster: Cluster,
    where: Target,
    status: str,
    revision: int | None,
    ref: ImageRef,
    started: float,
    warnings: tuple[str, ...] = (),
    weights: str | None = None,
) -> DeployResult:
    """What a deploy (or a rollback) left: the release's revision, its image and weights, and its pods now."""
    deployment = cluster.deployment(where.namespace, where.release)
    pods = (
        tuple(pod_state(p) for p in current_pods(cluster, where.namespace, where.release, deployment))
        if deployment
        else ()
    )
    return DeployResult(
        where.release,
        where.namespace,
        status,
        revision,
        ref.reference,
        deployment.ready if deployment else 0,
        wanted_replicas(cluster, where.namespace, where.release, deployment) if deployment else 0,
        round(time.monotonic() - started, 2),
        warnings,
        pods,
        weights=weights,
    )
