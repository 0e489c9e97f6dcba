"""``mlctl deploy``: plan -> gate -> apply -> watch.

Plan: the image (the build recorded in the service, or ``--image``) and the chart values from
``mlctl.yaml`` with ``--values``/``--set`` on top. Gate: can any node ever run a replica, with the
image's driver floor (``mlctl.deploy.gate``). The chart is rendered once, with what the gate found.
Apply: install or upgrade the Helm release (nothing, when nothing changed). Watch: follow the rollout
until every replica is ready; when it fails, say why in plain words, roll back to the last good
revision (or remove a failed first install), and exit with the rollout-failure code.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlctl.chart.core import chart_values, joined, manifest_documents, render_values
from mlctl.config import LoadedConfig, deep_merge
from mlctl.deploy.gate import GateResult, GpuRequest, gpu_gate
from mlctl.deploy.target import Target, check_protected, connected
from mlctl.deploy.watch import Rollout, current_pods, pod_state, watch_rollout
from mlctl.errors import ClusterError, DeployError, InputError
from mlctl.images.record import latest_build, recorded_image
from mlctl.models import DeployResult, ImageRef, ReleaseImage, RenderedRelease
from mlctl.ports import Cluster, Releases, Revision
from mlctl.reporting import NullReporter, Reporter

#: Seconds Helm's own actions may take (applying manifests, deleting them); the rollout is watched apart.
HELM_TIMEOUT_S = 300
#: Seconds the watch waits past the Deployment's progress deadline for the controller to call it.
DEADLINE_GRACE_S = 15


# --- plan ------------------------------------------------------------------------------------------------


def resolve_image(
    loaded: LoadedConfig, image: str | None, *, require_digest: bool = False, reporter: Reporter | None = None
) -> ReleaseImage:
    """The image to deploy: ``--image``, else the build recorded in the service.

    The image to deploy: ``image`` (``--image``), else the latest build of the service's repository
    that ``mlctl build`` recorded in the service (by digest once pushed). What the record says of
    the image (its labels, whether it was built from uncommitted changes) comes with it.

    Raises:
        InputError: a bad reference; no image given and no build recorded; no digest with ``require_digest``.
    """
    reporter = reporter or NullReporter()
    if image:
        ref = ImageRef.parse(image)
        build = recorded_image(loaded.directory, ref)
        chosen = ReleaseImage(ref) if build is None else dataclasses.replace(ReleaseImage.from_build(build), ref=ref)
    else:
        repository = loaded.config.image_repository
        build = latest_build(loaded.directory, repository)
        if build is None:
            raise InputError(
                f"no build of {repository} is recorded in this service, so there is no image to deploy",
                hint="build it first (mlctl build, with --push for a cluster), or pass --image REPO:TAG@sha256:...",
            )
        chosen = ReleaseImage.from_build(build)
        reporter.step(f"image {chosen.ref.reference}, built {build.built_at or 'earlier'} (mlctl build)")
    if chosen.ref.digest is None:
        if require_digest:
            raise InputError(
                f"the image {chosen.ref.reference} has no digest and --require-digest is set",
                hint="pass --image REPOSITORY:TAG@sha256:... (as `mlctl build --push --json` prints it)",
            )
        reporter.warn(f"{chosen.ref.reference} has no digest: tags can move; push it and deploy by digest")
    return chosen


def plan_values(
    where: Target, image: ReleaseImage, *, values_files: Sequence[Path] = (), sets: Sequence[str] = ()
) -> dict[str, Any]:
    """The chart values of a deploy: from mlctl.yaml and the image, then ``--values`` files, then ``--set``.

    Raises:
        InputError: a values file that cannot be read or holds no mapping; a bad ``--set``.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    values = chart_values(where.loaded.config, image.ref)
    for path in values_files:
        try:
            data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        except (OSError, YAMLError) as exc:
            raise InputError(f"--values {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"--values {path}: must hold a mapping of chart values")
        values = deep_merge(values, data)
    from mlctl.adapters.helm import parse_set

    for item in sets:
        values = deep_merge(values, parse_set(item))
    return values


def render(where: Target, values: Mapping[str, Any], gate: GateResult | None = None) -> RenderedRelease:
    """The chart rendered offline with ``values``, pinned to the driver floor the gate found (if any).

    Raises:
        InputError: every values problem, listed at once.
    """
    if gate is not None and gate.min_driver_major:
        values = deep_merge(values, {"resources": {"gpu": {"minDriverMajor": gate.min_driver_major}}})
    return render_values(dict(values), release=where.release, namespace=where.namespace)


# --- deploy ----------------------------------------------------------------------------------------------


def deploy_service(
    where: Target,
    image: ReleaseImage,
    *,
    values_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    wait: bool = True,
    timeout_s: float | None = None,
    dry_run: bool = False,
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
        reporter: Progress.
        cluster: The Kubernetes API (default: the kube context's).
        releases: Helm (default: the Helm engine on that cluster).

    Raises:
        InputError: bad values, or an image a protected environment refuses. ClusterError: the
        cluster is unreachable, forbids us, or lacks the namespace. DeployError: no node can run it
        (GPU gate), or the rollout failed (after rolling back).
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    check_protected(where, image)
    values = plan_values(where, image, values_files=values_files, sets=sets)
    with connected(where, cluster=cluster, releases=releases) as (kube, helm):
        gate = _gate(kube, GpuRequest.of(values, image), image, reporter)
        rendered = render(where, values, gate)
        values = dict(rendered.values)
        history = helm.history(where.release)
        deployed = [r for r in history if r.status == "deployed"]
        # The watch outlives the Deployment's own deadline a little, so that the controller's verdict
        # (ProgressDeadlineExceeded) is what ends it, not our clock.
        timeout = int(timeout_s or _progress_deadline(rendered) + DEADLINE_GRACE_S)
        ref = image.ref
        planned = helm.preview(where.release, values, upgrade=True) if deployed else None
        if planned is not None and _same_manifests(helm.manifest(where.release), planned):
            reporter.step(f"{where.release}: nothing changed since revision {deployed[-1].revision}")
            return result(kube, where, "unchanged", deployed[-1].revision, ref, started, gate.warnings, image.weights)
        if dry_run:
            if planned is None:
                planned = (
                    helm.preview(where.release, values, upgrade=False)
                    if not history
                    else joined(dict(rendered.manifests))  # only a failed install exists: it would be replaced
                )
            plan = "would-upgrade" if deployed else "would-install"
            reporter.step(
                f"dry run: {where.release} {plan.replace('-', ' ')} in {where.namespace} with {ref.reference}"
                + (f" (revision {deployed[-1].revision} is live)" if deployed else "")
            )
            live = deployed[-1].revision if deployed else None
            return dataclasses.replace(
                result(kube, where, plan, live, ref, started, gate.warnings, image.weights), manifest=planned
            )
        revision = _apply(helm, where, values, history, ref, reporter)
        if not wait:
            return result(kube, where, "deployed", revision, ref, started, gate.warnings, image.weights)
        reporter.step(f"waiting for {_replicas(values)} replica(s) to be ready (up to {timeout} s)")
        rollout = watch_rollout(
            kube,
            where.namespace,
            where.release,
            timeout_s=timeout,
            startup_budget_s=int(values["probes"]["startupBudgetSeconds"]),
            memory_limit=str(values["resources"]["memoryLimit"]),
            reporter=reporter,
        )
        if not rollout.ok:
            undo(helm, where, deployed, reporter)
            raise _failure(where, rollout, deployed)
        return result(kube, where, "deployed", revision, ref, started, gate.warnings, image.weights)


def _gate(cluster: Cluster, request: GpuRequest, image: ReleaseImage, reporter: Reporter) -> GateResult:
    if request.count <= 0:
        return GateResult(())
    if not image.labels:
        reporter.warn(
            f"cannot check the NVIDIA driver: {image.ref.reference} is not in this service's build record, so its "
            "mlctl.min-driver label is unknown here"
        )
    try:
        nodes = cluster.nodes()
    except ClusterError as exc:
        reporter.warn(f"cannot read the cluster's nodes ({exc.message}): the GPU check is skipped")
        return GateResult(())
    result = gpu_gate(nodes, request)
    for warning in result.warnings:
        reporter.warn(warning)
    return result


def _apply(
    helm: Releases, where: Target, values: Mapping[str, Any], history: list[Revision], ref: ImageRef, reporter: Reporter
) -> int:
    """Install, or upgrade what is deployed; a failed earlier install (no revision ever deployed) is removed first."""
    description = f"mlctl deploy {ref.reference}"
    if history and not any(r.status == "deployed" for r in history):
        reporter.step(f"{where.release}: removing the failed earlier install")
        helm.uninstall(where.release, timeout=HELM_TIMEOUT_S)
        history = []
    if history:
        reporter.step(f"upgrading {where.release} in {where.namespace} to {ref.reference}")
        return helm.upgrade(where.release, values, timeout=HELM_TIMEOUT_S, description=description)
    reporter.step(f"installing {where.release} in {where.namespace} ({ref.reference})")
    return helm.install(where.release, values, timeout=HELM_TIMEOUT_S, description=description)


def undo(helm: Releases, where: Target, deployed: list[Revision], reporter: Reporter) -> None:
    """Roll back to the last deployed revision, or remove a first install that never rolled out."""
    if deployed:
        reporter.step(f"rolling {where.release} back to revision {deployed[-1].revision}")
        helm.rollback(where.release, deployed[-1].revision, timeout=HELM_TIMEOUT_S)
    else:
        reporter.step(f"removing the failed first install of {where.release}")
        helm.uninstall(where.release, timeout=HELM_TIMEOUT_S)


def _replicas(values: Mapping[str, Any]) -> int:
    scaling = values.get("autoscaling") or {}
    return int(scaling["minReplicas"] if scaling.get("enabled") else values.get("replicaCount", 1))


def _progress_deadline(rendered: RenderedRelease) -> int:
    for document in manifest_documents(rendered.manifests.get("deployment.yaml", "")):
        if document.get("kind") == "Deployment":
            return int(document["spec"]["progressDeadlineSeconds"])
    return 600


def _same_manifests(live: str, new: str) -> bool:
    return documents_by_name(live) == documents_by_name(new)


def documents_by_name(text: str) -> dict[str, Any]:
    """The documents of a manifest stream by ``Kind/name``."""
    return {f"{d.get('kind')}/{d.get('metadata', {}).get('name')}": d for d in manifest_documents(text)}


def _failure(where: Target, rollout: Rollout, deployed: list[Revision]) -> DeployError:
    findings = list(rollout.findings)
    if rollout.timed_out:
        head = f"{where.release}: {rollout.ready}/{rollout.desired} replicas ready after {rollout.seconds:.0f} s"
    else:
        head = f"{where.release}: the rollout failed after {rollout.seconds:.0f} s"
    undone = f"rolled back to revision {deployed[-1].revision}" if deployed else "the failed install was removed"
    return DeployError(
        f"{head}; {undone}", hint=None if findings else "see `mlctl status` and `mlctl logs`", findings=findings
    )


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
        deployment.replicas if deployment else 0,
        round(time.monotonic() - started, 2),
        warnings,
        pods,
        weights=weights,
    )
