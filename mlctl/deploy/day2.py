"""A release's later life: status, history, diff, rollback, delete, and promotion to another environment."""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlctl.deploy.release import (
    DEADLINE_GRACE_S,
    HELM_TIMEOUT_S,
    deploy_service,
    documents_by_name,
    plan_values,
    render,
    result,
)
from mlctl.deploy.target import Target, connected
from mlctl.deploy.watch import INSTANCE, pod_state, watch_rollout
from mlctl.errors import DeployError, InputError
from mlctl.models import DeployResult, ImageRef, ReleaseImage, ReleaseRevision, ReleaseStatus, ResourceChange
from mlctl.ports import Cluster, Releases
from mlctl.reporting import NullReporter, Reporter


def _no_release(where: Target) -> InputError:
    return InputError(
        f"no release {where.release!r} in namespace {where.namespace}", hint="deploy it first: mlctl deploy"
    )


def release_status(where: Target, *, cluster: Cluster | None = None, releases: Releases | None = None) -> ReleaseStatus:
    """The release's latest revision, its image, and each pod with its node and GPUs.

    Raises:
        InputError: no such release. ClusterError: the cluster is unreachable or forbids it.
    """
    with connected(where, cluster=cluster, releases=releases) as (kube, helm):
        history = helm.history(where.release)
        if not history:
            raise _no_release(where)
        latest = history[-1]
        deployment = kube.deployment(where.namespace, where.release)
        pods = kube.pods(where.namespace, f"{INSTANCE}={where.release}")
        return ReleaseStatus(
            release=where.release,
            namespace=where.namespace,
            revision=latest.revision,
            status=latest.status,
            updated=latest.updated,
            image=deployment.image if deployment else "",
            ready=deployment.ready if deployment else 0,
            desired=deployment.replicas if deployment else 0,
            pods=tuple(pod_state(p) for p in pods),
        )


def release_history(
    where: Target, *, cluster: Cluster | None = None, releases: Releases | None = None
) -> list[ReleaseRevision]:
    """Every revision Helm keeps of the release, with what was written for each."""
    with connected(where, cluster=cluster, releases=releases) as (_, helm):
        history = helm.history(where.release)
        if not history:
            raise _no_release(where)
        return [
            ReleaseRevision(r.revision, r.status, r.updated, r.chart, helm.description(where.release, r.revision))
            for r in history
        ]


def rollback_release(
    where: Target,
    revision: int | None,
    *,
    wait: bool = True,
    timeout_s: float | None = None,
    reporter: Reporter | None = None,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
) -> DeployResult:
    """Roll the release back to an earlier revision and follow the rollout.

    Roll the release back to ``revision`` (default: the one before the latest) as a new revision,
    and follow the rollout like a deploy's.

    Raises:
        InputError: no such release or revision. DeployError: the old revision does not become ready either.
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    with connected(where, cluster=cluster, releases=releases) as (kube, helm):
        history = helm.history(where.release)
        if not history:
            raise _no_release(where)
        if revision is None:
            deployed = [r.revision for r in history if r.status in ("superseded", "deployed")]
            earlier = [r for r in deployed if r < history[-1].revision]
            if not earlier:
                raise InputError(f"{where.release} has no earlier revision to roll back to")
            revision = earlier[-1]
        elif revision not in [r.revision for r in history]:
            known = ", ".join(str(r.revision) for r in history)
            raise InputError(f"{where.release} has no revision {revision}; it has {known}")
        reporter.step(f"rolling {where.release} back to revision {revision}")
        helm.rollback(where.release, revision, timeout=HELM_TIMEOUT_S)
        live = kube.deployment(where.namespace, where.release)
        timeout = int(timeout_s or (live.progress_deadline_s if live else 600) + DEADLINE_GRACE_S)
        new = helm.history(where.release)[-1].revision
        if wait:
            rollout = watch_rollout(
                kube,
                where.namespace,
                where.release,
                timeout_s=timeout,
                startup_budget_s=where.loaded.config.probes.startup_budget_s,
                memory_limit=None,
                reporter=reporter,
            )
            if not rollout.ok:
                raise DeployError(
                    f"{where.release}: revision {revision} did not become ready either",
                    hint=None if rollout.findings else "see `mlctl status` and `mlctl logs`",
                    findings=rollout.findings,
                )
        deployment = kube.deployment(where.namespace, where.release)
        image = ImageRef.parse(deployment.image, source="the release's image") if deployment else ImageRef("", "")
        return result(kube, where, "deployed", new, image, started)


def delete_release(
    where: Target,
    *,
    reporter: Reporter | None = None,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
) -> str:
    """Uninstall the release and everything it created; its name.

    Raises:
        InputError: no such release.
    """
    reporter = reporter or NullReporter()
    with connected(where, cluster=cluster, releases=releases) as (_, helm):
        if not helm.history(where.release):
            raise _no_release(where)
        reporter.step(f"deleting {where.release} from {where.namespace}")
        helm.uninstall(where.release, timeout=HELM_TIMEOUT_S)
    return where.release


def diff_release(
    where: Target,
    image: ReleaseImage,
    *,
    values_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    cluster: Cluster | None = None,
    releases: Releases | None = None,
) -> list[ResourceChange]:
    """What a deploy would change, resource by resource, against the live release.

    What a deploy would change, resource by resource, against the live release (the chart as the
    values make it; the GPU gate's driver pin, which reads the nodes, is left to the deploy).
    """
    values = plan_values(where, image, values_files=values_files, sets=sets)
    rendered = render(where, values)  # values problems are listed before the cluster is asked anything
    with connected(where, cluster=cluster, releases=releases) as (_, helm):
        history = helm.history(where.release)
        deployed = any(r.status == "deployed" for r in history)
        live = helm.manifest(where.release) if deployed else ""
        if history and not deployed:
            from mlctl.chart.core import joined

            planned = joined(dict(rendered.manifests))  # only a failed install exists
        else:
            planned = helm.preview(where.release, rendered.values, upgrade=deployed)
    before, after = documents_by_name(live), documents_by_name(planned)
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = _yaml(before.get(name)), _yaml(after.get(name))
        if old == new:
            continue
        kind = "added" if name not in before else "removed" if name not in after else "changed"
        text = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"live {name}", f"new {name}"))
        changes.append(ResourceChange(name, kind, text))
    return changes


def promote(
    source: Target,
    to: Target,
    *,
    wait: bool = True,
    timeout_s: float | None = None,
    reporter: Reporter | None = None,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
) -> DeployResult:
    """Deploy to ``to`` exactly the image (by digest) that runs in ``source``: never a rebuild.

    ``cluster`` and ``releases`` stand in for both environments' connections (tests).

    Raises:
        InputError: the same environment twice, nothing deployed in ``source``, or an image there that is
        not pinned by digest. DeployError: ``source`` is not healthy, or the deploy to ``to`` failed.
    """
    reporter = reporter or NullReporter()
    if source.env is not None and source.env == to.env:
        raise InputError(f"--from and --to are both {source.env!r}")
    with connected(source, cluster=cluster, releases=releases) as (kube, helm):
        live = [r for r in helm.history(source.release) if r.status == "deployed"]
        deployment = kube.deployment(source.namespace, source.release) if live else None
    name = source.env or source.namespace
    if not live or deployment is None:
        raise InputError(
            f"nothing of {source.release} is deployed in {name} (namespace {source.namespace})",
            hint=f"deploy it there first: mlctl deploy --env {name}",
        )
    if deployment.ready < deployment.replicas:
        raise DeployError(
            f"{name} is not healthy ({deployment.ready}/{deployment.replicas} replicas of revision "
            f"{live[-1].revision} ready): only what works there is promoted",
            hint=f"see `mlctl status --env {name}`",
        )
    ref = ImageRef.parse(deployment.image, source=f"{name}'s image")
    if ref.digest is None:
        raise InputError(
            f"{name} runs {deployment.image}, which is not pinned by digest, so {to.env or to.namespace} cannot get "
            "exactly the same image",
            hint=f"deploy {name} by digest (mlctl build --push prints it; --require-digest enforces it)",
        )
    from mlctl.images.record import recorded_image

    build = recorded_image(to.loaded.directory, ref)
    image = ReleaseImage(ref, origin=name) if build is None else ReleaseImage(ref, build.labels, build.dirty, name)
    reporter.step(f"promoting {ref.reference} from {name} (revision {live[-1].revision}) to {to.env or to.namespace}")
    return deploy_service(
        to, image, wait=wait, timeout_s=timeout_s, reporter=reporter, cluster=cluster, releases=releases
    )


def _yaml(document: Any) -> str:
    if document is None:
        return ""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # a long image reference stays on its line, where the diff shows it
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    return buffer.getvalue()
