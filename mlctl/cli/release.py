"""``mlctl status | logs | history | rollback | delete``: a release's later life."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.deploy import deploy_target, pods_table, refuse_local, render_deploy
from mlctl.cli.options import (
    JsonOption,
    TargetArgs,
    TargetOption,
    TimeoutOption,
    WaitOption,
    target_options,
    whole_number,
)
from mlctl.cli.output import print_table, state_of
from mlctl.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console


@target_options
def status_cmd(
    ctx: typer.Context, target: TargetOption = None, json_: JsonOption = False, *, where: TargetArgs
) -> None:
    """Show the release: revision, image, ready replicas, and each pod with its node and GPUs.

    With --target local (or deploy.target: local), the service's container on this machine's
    Docker engine: its state, image, URL and whether it is ready.
    """
    from mlctl.deploy.day2 import release_status

    state = state_of(ctx)
    out = state.output(json_)
    if deploy_target(state, target, where.env) == "local":
        from mlctl.cli.local import local_status_cmd

        _no_cluster_flags(where)
        local_status_cmd(state, where.env)
        return
    status = release_status(where.resolve(state))

    def show(console: Console) -> None:
        console.print(
            f"{status.release} in {status.namespace}: revision {status.revision} ({status.status}, {status.updated}), "
            f"{status.ready}/{status.desired} ready",
            markup=False,
        )
        console.print(f"image {status.image}", markup=False)
        pods_table(console, status.pods)

    out.result(status, show)


@target_options
def history_cmd(
    ctx: typer.Context, target: TargetOption = None, json_: JsonOption = False, *, where: TargetArgs
) -> None:
    """List the release's revisions (Helm history), with how each one's rollout went.

    ROLLOUT is what mlctl saw: healthy (every replica became ready), failed (also Helm's status, so
    `helm history` shows it), not watched (--no-wait), or unknown (made by another tool).
    """
    from mlctl.deploy.day2 import release_history

    state = state_of(ctx)
    out = state.output(json_)
    refuse_local(state, "history", target, where.env)
    revisions = release_history(where.resolve(state))
    out.result(
        revisions,
        lambda console: print_table(
            console,
            ["REVISION", "STATUS", "ROLLOUT", "UPDATED", "CHART", "DESCRIPTION"],
            [[str(r.revision), r.status, r.rollout, r.updated, r.chart, r.description] for r in revisions],
        ),
    )


@target_options
def rollback_cmd(
    ctx: typer.Context,
    revision: Annotated[
        int | None,
        typer.Argument(
            metavar="[REVISION]",
            help="Revision to return to.  [default: the newest earlier one that rolled out healthy]",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Roll back to REVISION even though its rollout failed.")
    ] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
    target: TargetOption = None,
    json_: JsonOption = False,
    *,
    where: TargetArgs,
) -> None:
    """Roll the release back to an earlier revision (as a new revision) and follow the rollout.

    Without REVISION: the newest earlier revision that rolled out healthy (failed ones are skipped;
    naming one that failed needs --force). The rollback is followed like a deploy and recorded in the
    release's history. Exit 10 when it does not become ready (the release is left failed).
    """
    from mlctl.deploy.day2 import rollback_release

    state = state_of(ctx)
    out = state.output(json_)
    refuse_local(state, "rollback", target, where.env)
    result = rollback_release(
        where.resolve(state), revision, force=force, wait=wait, timeout_s=timeout, reporter=out.reporter()
    )
    out.result(result, lambda console: render_deploy(console, result))


@target_options
def delete_cmd(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    target: TargetOption = None,
    json_: JsonOption = False,
    *,
    where: TargetArgs,
) -> None:
    """Delete the release and everything it created (asks first, unless --yes)."""
    from mlctl.deploy.day2 import delete_release
    from mlctl.models import DeleteResult

    state = state_of(ctx)
    out = state.output(json_)
    refuse_local(state, "delete", target, where.env)
    release = where.resolve(state)
    if not yes:
        if not out.interactive:
            raise InputError(f"refusing to delete {release.release} without --yes (no terminal to ask in)")
        from rich.prompt import Confirm

        if not Confirm.ask(
            f"Delete {release.release} from namespace {release.namespace}?", default=False, console=out.console
        ):
            out.err_console.print(f"kept {release.release}", markup=False, highlight=False)
            raise typer.Exit(1)
    result = DeleteResult(delete_release(release, reporter=out.reporter()), release.namespace)
    out.result(result, lambda console: console.print(f"deleted {result.deleted} from {result.namespace}", markup=False))


@target_options
def logs_cmd(
    ctx: typer.Context,
    pod: Annotated[
        str | None, typer.Argument(metavar="[POD]", help="One pod.  [default: every pod of the release]")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (one pod).")] = False,
    previous: Annotated[
        bool, typer.Option("--previous", "-p", help="The previous container's log (after a crash).")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", metavar="N", parser=whole_number("--tail"), help="Only the last N lines.")
    ] = None,
    target: TargetOption = None,
    *,
    where: TargetArgs,
) -> None:
    """Print the server's log: every pod of the release, each line prefixed with its pod."""
    from mlctl.deploy.target import connected
    from mlctl.deploy.watch import INSTANCE

    state = state_of(ctx)
    state.output()
    if deploy_target(state, target, where.env) == "local":
        from mlctl.cli.local import local_logs

        _no_cluster_flags(where, {"POD": pod, "--previous": previous})
        local_logs(state, where.env, follow=follow, tail=tail)
        return
    release = where.resolve(state)
    with connected(release) as (cluster, _):
        pods = [p.name for p in cluster.pods(release.namespace, f"{INSTANCE}={release.release}")]
        if pod is not None:
            if pod not in pods:
                raise InputError(f"{pod} is not a pod of {release.release}; its pods: {', '.join(pods) or 'none'}")
            pods = [pod]
        if not pods:
            raise InputError(f"{release.release} has no pods in {release.namespace}", hint="see `mlctl status`")
        if follow:
            for line in cluster.follow_log(release.namespace, pods[0], tail=tail):
                sys.stdout.write(f"{line}\n")
                sys.stdout.flush()
            return
        for name in pods:
            text = cluster.pod_log(release.namespace, name, previous=previous, tail=tail)
            prefix = f"[{name}] " if len(pods) > 1 else ""
            for line in text.splitlines():
                sys.stdout.write(f"{prefix}{line}\n")


def _no_cluster_flags(where: TargetArgs, others: dict[str, object] | None = None) -> None:
    """Refuse the flags that name a cluster release when the target is local (one container, no pods)."""
    given = [
        flag
        for flag, value in {
            "--release": where.release,
            "--namespace": where.namespace,
            "--context": where.context,
            **(others or {}),
        }.items()
        if value
    ]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise InputError(f"{', '.join(given)} {verb} to cluster releases only; the local target runs one container")
