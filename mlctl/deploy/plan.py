"""Planning a deploy: the image, the chart values, the GPU gate, the rollout strategy and the one render.

The image is the build recorded in the service, or ``--image``; the values come from ``mlctl.yaml``
with ``--values``/``--set`` on top. The gate asks whether any node can ever run a replica, with the
image's driver floor, and whether a GPU is free for a surge pod (``mlctl.deploy.gate``); the rollout
strategy follows from that (``mlctl.deploy.strategy``), and an update with downtime is announced
before it starts. The chart is rendered once, with what the gate found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlctl.chart.render import chart_values, joined, render_values
from mlctl.config import LoadedConfig, deep_merge
from mlctl.deploy.gate import GateResult, GpuRequest, gpu_gate
from mlctl.deploy.revisions import ever_rolled_out
from mlctl.deploy.strategy import Strategy, plan_strategy
from mlctl.deploy.target import Target
from mlctl.errors import ClusterError, InputError
from mlctl.images.record import latest_build, recorded_image
from mlctl.models import ImageRef, ReleaseImage, RenderedRelease
from mlctl.ports import Cluster, Releases, Revision
from mlctl.reporting import NullReporter, Reporter
from mlctl.views import Deployment, free_gpus

__all__ = [
    "ReleasePlan",
    "announce_downtime",
    "plan_release",
    "plan_values",
    "render",
    "replica_count",
    "resolve_image",
]


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


def planned_manifests(helm: Releases, where: Target, plan: ReleasePlan, *, new_namespace: bool = False) -> str:
    """The manifests a deploy of ``plan`` would apply (what ``--dry-run`` shows and ``mlctl diff`` compares).

    Helm's own preview of the upgrade (or of the install, for a new release); the render itself where
    Helm has nothing to preview against: a namespace not made yet, or a release whose revisions all
    failed, which the deploy removes and installs anew.
    """
    history = plan.history
    if new_namespace or (history and not ever_rolled_out(history)):
        return joined(dict(plan.rendered.manifests))
    return helm.preview(where.release, plan.rendered.values, upgrade=bool(history))


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
    replicas = replica_count(values)
    if live is not None:
        replicas = max(replicas, live.replicas)  # an HPA may have scaled it up
    config = where.loaded.config.deploy.strategy
    given = values.get("rollout") or {}  # --set/--values rollout.* say it for this deploy
    chosen = {"max_surge": given.get("maxSurge"), "max_unavailable": given.get("maxUnavailable")}
    config = config.model_copy(update={key: value for key, value in chosen.items() if value is not None})
    return plan_strategy(config, replicas=replicas, gpus=count, room=gate.room_for(count))


def announce_downtime(
    where: Target, strategy: Strategy, live: Deployment, allow_downtime: bool, reporter: Reporter
) -> None:
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


def replica_count(values: Mapping[str, Any]) -> int:
    """The replicas a deploy of ``values`` waits for: the autoscaler's floor when it is on."""
    scaling = values.get("autoscaling") or {}
    return int(scaling["minReplicas"] if scaling.get("enabled") else values.get("replicaCount", 1))
