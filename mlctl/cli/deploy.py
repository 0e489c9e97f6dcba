"""``mlctl deploy | promote | render | diff``: what goes to a cluster, and what it would change there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import (
    ImageOption,
    JsonOption,
    SetOption,
    TargetArgs,
    TargetOption,
    TimeoutOption,
    ValuesOption,
    WaitOption,
    target_options,
)
from mlctl.cli.output import State, print_table, state_of
from mlctl.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.models import DeployResult, PodState


@target_options
def deploy_cmd(
    ctx: typer.Context,
    image: ImageOption = None,
    values: ValuesOption = None,
    set_: SetOption = None,
    require_digest: Annotated[
        bool, typer.Option("--require-digest", help="Refuse an image that is not pinned by digest.")
    ] = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the manifests and check them against the cluster (GPU gate); change nothing."
        ),
    ] = False,
    target: TargetOption = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", "-p", min=1, max=65535, help="--target local: the port on 127.0.0.1.  [default: serving.port]"
        ),
    ] = None,
    json_: JsonOption = False,
    *,
    where: TargetArgs,
) -> None:
    """Install or upgrade the service on Kubernetes and follow the rollout; explain and roll back on failure.

    The image is the last one `mlctl build` made in this service (by digest once pushed), or --image.
    Before installing, checks that some node can ever run a replica (GPUs, GPU type, the image's driver).
    Exit 8 when the rollout fails (after rolling back), 9 when the cluster is unreachable or forbids it.
    With --target local, runs the image on this machine's Docker engine instead (stop it: mlctl down).

    Example: mlctl deploy --env staging --image ghcr.io/acme/fraud-scorer:3f2a-g1c9d@sha256:...
    """
    state = state_of(ctx)
    out = state.output(json_)
    if deploy_target(state, target, where.env) == "local":
        cluster_only = {
            "--release": where.release,
            "--namespace": where.namespace,
            "--context": where.context,
            "--values": values,
            "--set": set_,
            "--require-digest": require_digest,
            "--dry-run": dry_run,
        }
        given = [flag for flag, value in cluster_only.items() if value]
        if given:
            raise InputError(
                f"{', '.join(given)} apply to cluster deploys only; a local run takes its settings from mlctl.yaml"
            )
        from mlctl.cli.local import deploy_local_cmd

        deploy_local_cmd(state, env=where.env, image=image, port=port, wait=wait, timeout=timeout)
        return
    if port is not None:
        raise InputError("--port applies to --target local only (a cluster deploy's port is serving.port)")
    from mlctl.deploy.release import deploy_service, resolve_image

    release = where.resolve(state)
    chosen = resolve_image(release.loaded, image, require_digest=require_digest, reporter=out.reporter())
    result = deploy_service(
        release,
        chosen,
        values_files=values or (),
        sets=set_ or (),
        wait=wait,
        timeout_s=timeout,
        dry_run=dry_run,
        reporter=out.reporter(),
    )
    out.result(result, lambda console: render_deploy(console, result))


def deploy_target(state: State, target: str | None, env: str | None) -> str:
    """``--target``, else ``deploy.target`` of mlctl.yaml."""
    if target is None:
        return state.config(env).config.deploy.target
    if target not in ("cluster", "local"):
        raise InputError(f"--target {target}: must be cluster or local")
    return target


def render_deploy(console: Console, result: DeployResult) -> None:
    """A deploy's (or a rollback's) result as people read it."""
    if result.manifest is not None:  # a dry run: its plan was reported as a step
        console.print(result.manifest, markup=False, highlight=False, end="")
        return
    if result.status == "unchanged":
        console.print(
            f"{result.release}: unchanged (revision {result.revision}), {result.ready}/{result.desired} ready"
        )
    else:
        console.print(
            f"[green]Deployed[/] {result.release} revision {result.revision} in {result.namespace}: "
            f"{result.ready}/{result.desired} ready in {result.seconds:.1f} s",
            highlight=False,
        )
    console.print(f"image {result.image}", markup=False)
    if result.weights:
        console.print(f"weights {result.weights}", markup=False)
    if result.pods:
        pods_table(console, result.pods)


def pods_table(console: Console, pods: tuple[PodState, ...]) -> None:
    """The pods of a release, one line each."""
    rows = [[p.name, p.state, str(p.restarts), p.node or "-", str(p.gpus)] for p in pods]
    print_table(console, ["POD", "STATE", "RESTARTS", "NODE", "GPUS"], rows)


@target_options
def render_cmd(
    ctx: typer.Context,
    image: ImageOption = None,
    values: ValuesOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
    *,
    where: TargetArgs,
) -> None:
    """Print the Kubernetes manifests a deploy would apply (offline: no cluster needed)."""
    from mlctl.chart.core import joined
    from mlctl.deploy.release import plan_values, render, resolve_image

    state = state_of(ctx)
    out = state.output(json_)
    release = where.resolve(state)  # reads the kubeconfig for its namespace; asks no server
    chosen = resolve_image(release.loaded, image, reporter=out.reporter())
    rendered = render(release, plan_values(release, chosen, values_files=values or (), sets=set_ or ()))
    out.result(rendered, lambda console: console.print(joined(dict(rendered.manifests)), markup=False, end=""))


@target_options
def diff_cmd(
    ctx: typer.Context,
    image: ImageOption = None,
    values: ValuesOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
    *,
    where: TargetArgs,
) -> None:
    """Show what a deploy would change against the live release, resource by resource."""
    from mlctl.deploy.day2 import diff_release
    from mlctl.deploy.release import resolve_image

    state = state_of(ctx)
    out = state.output(json_)
    release = where.resolve(state)
    chosen = resolve_image(release.loaded, image, reporter=out.reporter())
    changes = diff_release(release, chosen, values_files=values or (), sets=set_ or ())

    def show(console: Console) -> None:
        if not changes:
            console.print(f"{release.release}: no changes")
        for change in changes:
            console.print(f"{change.change}: {change.resource}", markup=False)
            console.print(change.diff, markup=False, end="")

    out.result(changes, show)


def promote_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--from", metavar="ENV", help="The environment whose running image to take.")],
    to: Annotated[str, typer.Option("--to", metavar="ENV", help="The environment to deploy it to.")],
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
    json_: JsonOption = False,
) -> None:
    """Deploy to one environment exactly the image (by digest) running in another: never a rebuild.

    The source must be healthy (every replica ready) and run an image pinned by digest. The
    destination's own settings (replicas, GPUs, namespace, context) come from its environment in
    mlctl.yaml.

    Example: mlctl promote --from staging --to prod
    """
    from mlctl.deploy.day2 import promote

    state = state_of(ctx)
    out = state.output(json_)
    if source == to:
        raise InputError(f"--from and --to are both {source!r}")
    result = promote(
        TargetArgs(env=source).resolve(state),
        TargetArgs(env=to).resolve(state),
        wait=wait,
        timeout_s=timeout,
        reporter=out.reporter(),
    )
    out.result(result, lambda console: render_deploy(console, result))
