"""``mlctl deploy``: plan -> gate -> apply -> watch.

Plan: the image (the build recorded in the service, or ``--image``) and the chart values from
``mlctl.yaml`` with ``--values``/``--set`` on top. Gate: can any node ever run a replica, with the
image's driver floor, and is a GPU free for a surge pod (``mlctl.deploy.gate``); the rollout strategy
follows (``mlctl.deploy.strategy``), and an update with downtime is announced before it starts. The
chart is rendered once, with what the gate found. Apply: install or upgrade the Helm release
(nothing, when nothing changed). Watch: follow the rollout until every wanted replica is ready; when
it fails, say why in plain words, mark the revision failed in Helm's history, roll back to the last
revision that rolled out healthy and follow that too (or remove a failed first install), and exit
with the rollout-failure code (the rollback-failure code when the rollback did not come up either).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlctl.chart.render import chart_values, joined, manifest_documents, render_values
from mlctl.config import LoadedConfig, deep_merge
from mlctl.deploy.gate import GateResult, GpuRequest, gpu_gate
from mlctl.deploy.revisions import (
    DEADLINE_GRACE_S,
    HELM_TIMEOUT_S,
    ever_rolled_out,
    last_good,
    reason,
    record,
    roll_back,
)
from mlctl.deploy.strategy import Strategy, plan_strategy
from mlctl.deploy.target import Target, check_collisions, check_protected, connected
from mlctl.deploy.watch import Rollout, current_pods, pod_state, wanted_replicas, watch_rollout
from mlctl.errors import ClusterError, DeployError, InputError, RollbackError
from mlctl.images.record import latest_build, recorded_image
from mlctl.models import DeployResult, ImageRef, ReleaseImage, RenderedRelease
from mlctl.ports import FAILED, HEALTHY, Cluster, Releases, Revision
from mlctl.reporting import NullReporter, Reporter
from mlctl.views import Deployment, free_gpus

__all__ = [
    "DEADLINE_GRACE_S",
    "HELM_TIMEOUT_S",
    "deploy_service",
    "plan_release",
    "plan_values",
    "render",
    "resolve_image",
]


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
        if require_digest:  # the same two cases, each with its own fix
            if build is None:
                raise InputError(
                    f"the image {chosen.ref.reference} was not built here and has no digest, and --require-digest "
                    "is set",
                    hint="pass --image REPOSITORY:TAG@sha256:... (as `mlctl build --push --json` prints it)",
                )
            raise InputError(
                f"the image {chosen.ref.reference} has no digest (it was built here but not pushed), and "
                "--require-digest is set",
                hint="push it: mlctl build --push (then deploy the digest it prints)",
            )
        if build is None:  # "not built" and "not pushed" are different problems with different fixes
            reporter.warn(
                f"{chosen.ref.reference} was not built here (no mlctl build of this service recorded it) and has "
                "no digest: the cluster runs whatever the tag names when it pulls"
            )
        else:
            reporter.warn(
                f"{chosen.ref.reference} has no digest: it was built here but not pushed (tags can move); "
                "push it (mlctl build --push) and deploy by digest"
            )
    return chosen


def plan_values(
    where: Target, image: ReleaseImage, *, values_files: Sequence[Path] = (), sets: Sequence[str] = ()
) -> dict[str, Any]:
    """The chart values of a deploy: from mlctl.yaml and the image, then ``--values`` files, then ``--set``.

    Raises:
        InputError: a values file that cannot be read or holds no mapping; a bad ``--set``.
    """
    values = chart_values(where.loaded.config, image.ref)
    for path in values_files:
        values = deep_merge(values, read_values_file(path))
    from mlctl.adapters.helm import parse_set

    for item in sets:
        values = deep_merge(values, parse_set(item))
    return values


def read_values_file(path: Path) -> dict[str, Any]:
    """A ``--values`` file, read with the bounds mlctl.yaml is read with (``mlctl.safe_yaml``).

    Raises:
        InputError: the file cannot be read, is not plain YAML within the bounds (size, depth, aliases,
        tags), or holds no mapping; naming the file (and the line, where there is one).
    """
    from mlctl import safe_yaml
    from mlctl.errors import ConfigError

    try:
        with path.open("rb") as handle:
            text = handle.read(safe_yaml.MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"--values {path}: cannot be read: {exc.strerror}") from None
    try:
        data, _ = safe_yaml.load(text, str(path))
    except ConfigError as exc:
        raise InputError(f"--values {exc.lines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"--values {path}: must hold a mapping of chart values")
    return data


def render(where: Target, values: Mapping[str, Any], gate: GateResult | None = None) -> RenderedRelease:
    """The chart rendered offline with ``values``, pinned to the driver floor the gate found (if any).

    Raises:
        InputError: every values problem, listed at once.
    """
    if gate is not None and gate.min_driver_major:
        values = deep_merge(values, {"resources": {"gpu": {"minDriverMajor": gate.min_driver_major}}})
    rollout = values.get("rollout") or {}
    if "maxSurge" not in rollout or "maxUnavailable" not in rollout:
        # Offline (mlctl render), what a deploy would choose when it cannot tell whether a GPU is free.
        strategy = _strategy(where, values, gate or GateResult((), free=None), None)
        values = deep_merge(values, {"rollout": strategy.values()})
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
        planned = helm.preview(where.release, values, upgrade=True) if deployed else None
        if planned is not None and _same_manifests(helm.manifest(where.release), planned):
            reporter.step(f"{where.release}: nothing changed since revision {deployed[-1].revision}")
            return result(kube, where, "unchanged", deployed[-1].revision, ref, started, gate.warnings, image.weights)
        if live is not None and planned is not None and _replaces_pods(helm.manifest(where.release), planned):
            _announce(where, strategy, live, allow_downtime, reporter)
        if dry_run:
            if planned is None:
                planned = (
                    helm.preview(where.release, values, upgrade=False)
                    if not history and not absent
                    else joined(dict(rendered.manifests))  # a new namespace, or only failed revisions to replace
                )
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
        reporter.step(f"waiting for {_replicas(values)} replica(s) to be ready (up to {timeout} s)")
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
        raise _undo(kube, helm, where, revision, rollout, ref, timeout_s, reporter)


@dataclass(frozen=True)
class ReleasePlan:
    """What a deploy would apply, and what it was decided from."""

    rendered: RenderedRelease
    gate: GateResult
    strategy: Strategy
    #: The release's revisions so far, and its Deployment now (None before the first install).
    history: list[Revision]
    live: Deployment | None


def plan_release(
    kube: Cluster,
    helm: Releases,
    where: Target,
    image: ReleaseImage,
    values: Mapping[str, Any],
    reporter: Reporter,
    *,
    new_namespace: bool = False,
) -> ReleasePlan:
    """The chart as a deploy would render it against this cluster: the GPU gate's driver pin, the strategy.

    Raises:
        DeployError: no node can ever run a replica. InputError: the values are invalid.
    """
    gate = _gate(kube, GpuRequest.of(values, image), image, reporter)
    history = [] if new_namespace else helm.history(where.release)
    live = kube.deployment(where.namespace, where.release) if history else None
    strategy = _strategy(where, values, gate, live)
    rendered = render(where, deep_merge(values, {"rollout": strategy.values()}), gate)
    return ReleasePlan(rendered, gate, strategy, history, live)


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
    try:
        free: dict[str, int] | None = free_gpus(nodes, cluster.bound_pods())
    except ClusterError:
        free = None  # not allowed to list pods: which GPUs are free stays unknown
    result = gpu_gate(nodes, request, free)
    for warning in result.warnings:
        reporter.warn(warning)
    return result


def _strategy(where: Target, values: Mapping[str, Any], gate: GateResult, live: Deployment | None) -> Strategy:
    """``deploy.strategy`` with its ``auto`` settled by what the gate found free."""
    gpu = (values.get("resources") or {}).get("gpu") or {}
    count = gpu.get("count", 0) if isinstance(gpu.get("count", 0), int) else 0
    replicas = _replicas(values)
    if live is not None:
        replicas = max(replicas, live.replicas)  # an HPA may have scaled it up
    config = where.loaded.config.deploy.strategy
    given = values.get("rollout") or {}  # --set/--values rollout.* say it for this deploy
    chosen = {"max_surge": given.get("maxSurge"), "max_unavailable": given.get("maxUnavailable")}
    config = config.model_copy(update={key: value for key, value in chosen.items() if value is not None})
    return plan_strategy(config, replicas=replicas, gpus=count, room=gate.room_for(count))


def _announce(where: Target, strategy: Strategy, live: Deployment, allow_downtime: bool, reporter: Reporter) -> None:
    """Say before an update starts that it will have downtime (a protected environment needs it allowed)."""
    if strategy.surge_waits:
        reporter.warn(f"{strategy.why} (the deploy fails if it waits longer than deploy.unschedulable_budget_s)")
    if not strategy.downtime or live.ready == 0:
        return
    name = where.env or where.namespace
    message = (
        f"this update of {where.release} has downtime: {strategy.why}, so {where.release} serves nothing until the "
        "new pod is ready"
    )
    if where.protected and not allow_downtime:
        raise InputError(
            f"{name} is protected and {message}",
            hint="pass --allow-downtime to go ahead; or free a GPU for a surge pod, or run 2 replicas",
        )
    reporter.warn(f"{message} (a free GPU for a surge pod, or 2 replicas, would avoid it)")


def _undo(
    kube: Cluster,
    helm: Releases,
    where: Target,
    revision: int,
    rollout: Rollout,
    ref: ImageRef,
    timeout_s: float | None,
    reporter: Reporter,
) -> DeployError:
    """After a failed rollout: mark it failed, roll back to the last good revision and follow that; the error."""
    release = where.release
    head = _head(where, rollout)
    record(
        helm, release, revision, FAILED, reporter, description=f"mlctl deploy {ref.reference} failed: {reason(rollout)}"
    )
    history = helm.history(release)
    findings = list(rollout.findings)
    hint = None if findings else "see `mlctl status` and `mlctl logs`"
    if not ever_rolled_out(history):
        reporter.step(f"removing the failed first install of {release}")
        helm.uninstall(release, timeout=HELM_TIMEOUT_S)
        return DeployError(f"{head}; the failed install was removed", hint=hint, findings=findings)
    good, known = last_good(history, revision)
    if good is None:
        return DeployError(
            f"{head}; no earlier revision rolled out healthy, so nothing was rolled back: {release} is at revision "
            f"{revision}, marked failed",
            hint="fix the cause and deploy again (`mlctl history` lists the revisions)",
            findings=findings,
        )
    if not known:
        reporter.warn(
            f"revision {good.revision} is the newest that Helm recorded as deployed, but mlctl never saw it ready"
        )
    new, back = roll_back(kube, helm, where, good.revision, wait=True, timeout_s=timeout_s, reporter=reporter)
    assert back is not None
    if not back.ok:
        return RollbackError(
            f"{head}; the rollback to revision {good.revision} failed too: {_counts(back)}. {release} is left at "
            f"revision {new}, marked failed, and no revision of it runs",
            hint="fix what the findings say and deploy again; `mlctl history` lists the revisions, `mlctl rollback "
            "REVISION --force` returns to any of them",
            findings=[*back.findings, *findings],
        )
    return DeployError(
        f"{head}; rolled back to revision {good.revision} (now revision {new}, {back.ready}/{back.desired} ready)",
        hint=hint,
        findings=findings,
    )


def _head(where: Target, rollout: Rollout) -> str:
    if rollout.unschedulable_s:
        return (
            f"{where.release}: {rollout.ready}/{rollout.desired} replicas ready; a pod waited "
            f"{rollout.unschedulable_s:.0f} s for a node (deploy.unschedulable_budget_s is "
            f"{where.loaded.config.deploy.unschedulable_budget_s})"
        )
    if rollout.timed_out:
        return f"{where.release}: {rollout.ready}/{rollout.desired} replicas ready after {rollout.seconds:.0f} s"
    return f"{where.release}: the rollout failed after {rollout.seconds:.0f} s"


def _counts(rollout: Rollout) -> str:
    return f"{rollout.ready}/{rollout.desired} ready after {rollout.seconds:.0f} s"


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


def _replaces_pods(live: str, new: str) -> bool:
    """Whether applying ``new`` over ``live`` changes a Deployment's pod template (which rolls its pods)."""
    before, after = documents_by_name(live), documents_by_name(new)
    for name, document in after.items():
        if document.get("kind") == "Deployment" and name in before:
            old = before[name]
            if (old.get("spec") or {}).get("template") != (document.get("spec") or {}).get("template"):
                return True
    return False


def documents_by_name(text: str) -> dict[str, Any]:
    """The documents of a manifest stream by ``Kind/name``."""
    return {f"{d.get('kind')}/{d.get('metadata', {}).get('name')}": d for d in manifest_documents(text)}


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
