"""A release's later life: status, history, diff, rollback, delete, and promotion to another environment."""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlctl.chart.render import documents_by_name
from mlctl.deploy.plan import plan_release, plan_values, planned_manifests, render
from mlctl.deploy.release import deploy_service, result
from mlctl.deploy.revisions import HELM_TIMEOUT_S, health, last_good, roll_back
from mlctl.deploy.target import Target, check_collisions, check_protected, connected
from mlctl.deploy.watch import INSTANCE, pod_state, wanted_replicas
from mlctl.errors import DeployError, InputError, MlctlError, RollbackError
from mlctl.models import (
    DeployResult,
    ImageRef,
    Promotion,
    ReleaseImage,
    ReleaseRevision,
    ReleaseStatus,
    ResourceChange,
)
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
            desired=wanted_replicas(kube, where.namespace, where.release, deployment) if deployment else 0,
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
            ReleaseRevision(
                r.revision, r.status, r.updated, r.chart, helm.description(where.release, r.revision), health(r)
            )
            for r in history
        ]


def rollback_release(
    where: Target,
    revision: int | None,
    *,
    force: bool = False,
    wait: bool = True,
    timeout_s: float | None = None,
    reporter: Reporter | None = None,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
) -> DeployResult:
    """Roll the release back to an earlier revision and follow the rollout, like a deploy.

    Roll the release back to ``revision`` (default: the newest earlier one that rolled out healthy) as a
    new revision, follow its rollout like a deploy's, and record how it went in the release's history.

    Raises:
        InputError: no such release or revision, revision 0, no earlier healthy revision, or a revision
        whose rollout failed (without ``force``). RollbackError: the old revision did not become ready.
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    if revision is not None and revision < 1:
        raise InputError(
            f"there is no revision {revision}: Helm numbers revisions from 1",
            hint="leave REVISION out to return to the newest earlier revision that rolled out healthy",
        )
    with connected(where, cluster=cluster, releases=releases) as (kube, helm):
        history = helm.history(where.release)
        if not history:
            raise _no_release(where)
        latest = history[-1].revision
        if revision is None:
            good, known = last_good(history, latest)
            if good is None:
                raise InputError(
                    f"{where.release} has no earlier revision that rolled out healthy to roll back to",
                    hint="`mlctl history` lists the revisions; name one (with --force if its rollout failed)",
                )
            if not known:
                reporter.warn(
                    f"revision {good.revision} is the newest earlier one Helm recorded as deployed; mlctl never saw "
                    "it ready, so whether it ran healthy is unknown"
                )
            revision = good.revision
        else:
            chosen = next((r for r in history if r.revision == revision), None)
            if chosen is None:
                known_revisions = ", ".join(str(r.revision) for r in history)
                raise InputError(f"{where.release} has no revision {revision}; it has {known_revisions}")
            if chosen.failed and not force:
                raise InputError(
                    f"revision {revision} of {where.release} failed its rollout "
                    f"({helm.description(where.release, revision)}); rolling back to it needs --force",
                    hint="leave REVISION out to return to the newest earlier revision that rolled out healthy",
                )
        new, rollout = roll_back(kube, helm, where, revision, wait=wait, timeout_s=timeout_s, reporter=reporter)
        if rollout is not None and not rollout.ok:
            raise RollbackError(
                f"{where.release}: the rollback to revision {revision} did not become ready: {rollout.ready}/"
                f"{rollout.desired} ready after {rollout.seconds:.0f} s. {where.release} is left at revision {new}, "
                "marked failed",
                hint="fix what the findings say and deploy again; `mlctl history` lists the revisions",
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
    reporter: Reporter | None = None,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
) -> list[ResourceChange]:
    """What a deploy would change, resource by resource, against the live objects of the release.

    The chart is rendered as a deploy would render it (the GPU gate's driver pin, the rollout strategy),
    then each object is applied to the cluster as a server-side dry run: the cluster merges it with the
    live object (what other managers own stays, what the release no longer sets goes) and returns the
    result without storing it. That result is compared with the live object, so a change made with
    kubectl shows up as something the deploy would undo. Objects the release had and would drop are
    "removed"; ones not in the cluster yet are "added".

    Raises:
        InputError: bad values. ClusterError: the cluster is unreachable or forbids it.
    """
    reporter = reporter or NullReporter()
    values = plan_values(where, image, values_files=values_files, sets=sets)
    render(where, values)  # values problems are listed before the cluster is asked anything
    with connected(where, cluster=cluster, releases=releases) as (kube, helm):
        plan = plan_release(kube, helm, where, image, values, reporter)
        history = plan.history
        planned = planned_manifests(helm, where, plan)
        before = documents_by_name(helm.manifest(where.release)) if history else {}
        after = documents_by_name(planned)
        changes = []
        for name in sorted(set(before) | set(after)):
            live = kube.live_object(after.get(name) or before[name], where.namespace)
            if name not in after:
                new = None
            elif live is None:
                new = after[name]
            else:
                owned = helm_owned(after[name], where.release, where.namespace)
                new = kube.apply_dry_run(owned, where.namespace, field_manager(live))
            old_text, new_text = _yaml(comparable(live)), _yaml(comparable(new))
            if old_text == new_text:
                continue
            kind = "added" if live is None else "removed" if new is None else "changed"
            text = "".join(
                difflib.unified_diff(
                    old_text.splitlines(True), new_text.splitlines(True), f"live {name}", f"new {name}"
                )
            )
            changes.append(ResourceChange(name, kind, text))
    return changes


#: What the API server keeps on an object for itself: never a difference a deploy makes.
SERVER_FIELDS = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


def comparable(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An object without its status and the server's own metadata, its keys sorted (maps have no order)."""
    if obj is None:
        return None
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_FIELDS}
    ordered: dict[str, Any] = _sorted({**{k: v for k, v in obj.items() if k != "status"}, "metadata": metadata})
    return ordered


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def helm_owned(manifest: Mapping[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """A manifest as Helm applies it: with the ownership metadata Helm adds (action.setMetadataVisitor)."""
    metadata = dict(manifest.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), "app.kubernetes.io/managed-by": "Helm"}
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        "meta.helm.sh/release-name": release,
        "meta.helm.sh/release-namespace": namespace,
    }
    return {**manifest, "metadata": metadata}


def field_manager(live: Mapping[str, Any]) -> str:
    """The field manager Helm applied the object as (so that the dry run drops what the release no longer sets).

    The live object's managedFields name it (the manager of its ``Apply`` entry); where the server keeps
    none, Helm's own rule: the base name of the program it runs in (pkg/kube, getManagedFieldsManager).
    """
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if entry.get("operation") == "Apply" and entry.get("manager"):
            return str(entry["manager"])
    program = sys.orig_argv[0] if sys.orig_argv else ""
    return os.path.basename(program) or "unknown"


def promote(
    source: Target,
    to: Target,
    *,
    yes: bool = False,
    confirm: Callable[[Promotion], bool] | None = None,
    wait: bool = True,
    timeout_s: float | None = None,
    allow_downtime: bool = False,
    reporter: Reporter | None = None,
    cluster: Cluster | None = None,
    releases: Releases | None = None,
    to_releases: Releases | None = None,
) -> DeployResult:
    """Deploy to ``to`` exactly the image (by digest) that runs in ``source``: never a rebuild.

    Before changing anything it reports what the deploy would change in ``to`` (``diff_release``). A
    protected ``to`` (prod) is changed only when ``yes`` is given or ``confirm`` (a person, shown the
    changes) agrees. ``cluster`` stands in for the Kubernetes API of both environments, ``releases`` for
    Helm in ``source``'s namespace and ``to_releases`` in ``to``'s (default: ``releases``) (tests).

    Raises:
        InputError: the same environment twice, nothing deployed in ``source``, an image there that is not
        pinned by digest, or a protected ``to`` with neither ``yes`` nor ``confirm``. ConfigError: the two
        environments resolve to the same release. DeployError: ``source`` is not healthy, or the deploy to
        ``to`` failed. MlctlError: ``confirm`` said no.
    """
    reporter = reporter or NullReporter()
    if source.env is not None and source.env == to.env:
        raise InputError(f"--from and --to are both {source.env!r}")
    check_collisions(to)
    with connected(source, cluster=cluster, releases=releases) as (kube, helm):
        live = [r for r in helm.history(source.release) if r.status == "deployed"]
        deployment = kube.deployment(source.namespace, source.release) if live else None
        wanted = wanted_replicas(kube, source.namespace, source.release, deployment) if deployment else 0
    name = source.name
    if not live or deployment is None:
        raise InputError(
            f"nothing of {source.release} is deployed in {name} (namespace {source.namespace})",
            hint=f"deploy it there first: mlctl deploy --env {name}",
        )
    if deployment.ready < wanted or live[-1].failed:
        raise DeployError(
            f"{name} is not healthy ({deployment.ready}/{wanted} replicas of revision {live[-1].revision} ready): "
            "only what works there is promoted",
            hint=f"see `mlctl status --env {name}`",
        )
    ref = ImageRef.parse(deployment.image, source=f"{name}'s image")
    if ref.digest is None:
        raise InputError(
            f"{name} runs {deployment.image}, which is not pinned by digest, so {to.name} cannot get exactly the "
            "same image",
            hint=f"deploy {name} by digest (mlctl build --push prints it; --require-digest enforces it)",
        )
    from mlctl.images.record import recorded_image

    build = recorded_image(to.loaded.directory, ref)
    image = ReleaseImage(ref, origin=name) if build is None else ReleaseImage(ref, build.labels, build.dirty, name)
    check_protected(to, image)
    to_releases = to_releases or releases
    changes = diff_release(to, image, reporter=reporter, cluster=cluster, releases=to_releases)
    promotion = Promotion(ref.reference, name, live[-1].revision, to.name, tuple(changes))
    reporter.step(
        f"promoting {ref.reference} from {name} (revision {live[-1].revision}) to {to.name}: "
        + (", ".join(f"{c.resource} {c.change}" for c in changes) or "nothing to change")
    )
    for change in changes:
        reporter.info(change.diff.rstrip("\n"))
    if to.protected and not yes:
        if confirm is None:
            raise InputError(
                f"{to.name} is protected: promoting to it needs --yes (there is no terminal to ask in)",
                hint=f"review the changes above (or `mlctl diff --env {to.name} --image {ref.reference}`), then "
                "pass --yes",
            )
        if not confirm(promotion):
            raise MlctlError(f"the promotion to {to.name} was declined: nothing was changed")
    deployed = deploy_service(
        to,
        image,
        wait=wait,
        timeout_s=timeout_s,
        allow_downtime=allow_downtime,
        reporter=reporter,
        cluster=cluster,
        releases=to_releases,
    )
    return dataclasses.replace(deployed, changes=tuple(changes))


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
