"""A release's revisions: which rolled out healthy, recording how each went, and rolling back to one.

Helm records every install, upgrade and rollback as a revision with a status (``deployed``,
``superseded``, ``failed``, ``pending-*``). mlctl applies without Helm's wait and follows the rollout
itself, so it records what it saw where Helm and other tools read it (``Releases.mark``): a rollout
that failed makes its revision ``failed``, as Helm's own ``--wait`` would, and every revision mlctl
watched carries the release label ``mlctl.rollout`` (healthy, failed, or unverified when not watched).
A rollback is a deploy of an old revision: it is followed to readiness the same way, and recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlctl.deploy.explain import Finding
from mlctl.deploy.target import Target
from mlctl.deploy.watch import Rollout, watch_rollout
from mlctl.errors import DeployError, MlctlError, RollbackError
from mlctl.models import ImageRef
from mlctl.ports import FAILED, HEALTHY, UNVERIFIED, Cluster, Releases, Revision
from mlctl.reporting import Reporter

#: Seconds Helm's own actions may take (applying manifests, deleting them); the rollout is watched apart.
HELM_TIMEOUT_S = 300
#: Seconds the watch waits past the Deployment's progress deadline for the controller to call it.
DEADLINE_GRACE_S = 15


def health(revision: Revision) -> str:
    """How a revision's rollout went, in words: healthy, failed, not watched, or unknown (another tool made it)."""
    if revision.failed:
        return "failed"
    if revision.rollout == HEALTHY:
        return "healthy"
    if revision.rollout == UNVERIFIED:
        return "not watched"
    return "unknown"


def last_good(history: Sequence[Revision], before: int) -> tuple[Revision | None, bool]:
    """The newest revision before ``before`` that rolled out healthy, and whether mlctl saw it so.

    Revisions mlctl watched become ready come first. Where there are none (revisions made with
    ``--no-wait``, by Helm itself, or by an older mlctl), the newest one Helm recorded as deployed and
    that nothing marked failed, with False: its health is Helm's guess ("superseded or deployed").
    """
    earlier = [r for r in history if r.revision < before and not r.failed and not r.status.startswith("pending")]
    healthy = [r for r in earlier if r.rollout == HEALTHY]
    if healthy:
        return healthy[-1], True
    guessed = [r for r in earlier if r.status in ("deployed", "superseded")]
    return (guessed[-1], False) if guessed else (None, False)


def ever_rolled_out(history: Sequence[Revision]) -> bool:
    """Whether any revision ever ran: a release whose every revision failed is only a failed first install."""
    return any(r.status in ("deployed", "superseded") or r.rollout == HEALTHY for r in history if not r.failed)


def record(
    helm: Releases, release: str, revision: int, outcome: str, reporter: Reporter, *, description: str | None = None
) -> None:
    """``Releases.mark``, where failing to record it must not stop what follows (a rollback): it warns."""
    try:
        helm.mark(release, revision, outcome, description=description)
    except MlctlError as exc:
        reporter.warn(f"{exc.message}; `helm history` will not show how revision {revision} went")


def reason(rollout: Rollout) -> str:
    """Why a rollout failed, in one line (for a revision's description in ``helm history``)."""
    first: Finding | None = rollout.findings[0] if rollout.findings else None
    if first is None:
        return f"{rollout.ready}/{rollout.desired} ready after {rollout.seconds:.0f} s"
    return first.message.splitlines()[0].removesuffix("; its last lines:")


def roll_back(
    kube: Cluster,
    helm: Releases,
    where: Target,
    to: int,
    *,
    wait: bool,
    timeout_s: float | None,
    reporter: Reporter,
) -> tuple[int, Rollout | None]:
    """Roll the release back to revision ``to`` (a new revision) and follow it like a deploy; record how it went.

    Returns the new revision and how its rollout went (None without ``wait``). A rollback that does not
    become ready is marked failed, as a deploy's would be.
    """
    release = where.release
    reporter.step(f"rolling {release} back to revision {to}")
    helm.rollback(release, to, timeout=HELM_TIMEOUT_S)
    new = helm.history(release)[-1].revision
    if not wait:
        record(helm, release, new, UNVERIFIED, reporter)  # not the verdict Helm copied from revision `to`
        return new, None
    live = kube.deployment(where.namespace, release)
    timeout = int(timeout_s or (live.progress_deadline_s if live else 600) + DEADLINE_GRACE_S)
    reporter.step(f"waiting for revision {new} (revision {to} again) to be ready (up to {timeout} s)")
    config = where.loaded.config
    rollout = watch_rollout(
        kube,
        where.namespace,
        release,
        timeout_s=timeout,
        startup_budget_s=config.probes.startup_budget_s,
        memory_limit=None,
        reporter=reporter,
        unschedulable_budget_s=config.deploy.unschedulable_budget_s,
    )
    if rollout.ok:
        record(helm, release, new, HEALTHY, reporter)
    else:
        why = f"Rollback to {to} failed: {reason(rollout)}"
        record(helm, release, new, FAILED, reporter, description=why)
    return new, rollout


def undo_failed_rollout(
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
