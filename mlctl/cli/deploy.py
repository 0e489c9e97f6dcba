"""``mlctl deploy | promote | render | diff``: what goes to a cluster, and what it would change there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import (
    AllowDowntimeOption,
    ImageOption,
    JsonOption,
    SetOption,
    TargetArgs,
    TargetOption,
    TimeoutOption,
    ValuesOption,
    WaitOption,
    port_option,
    target_options,
)
from mlctl.cli.output import State, print_table, state_of
from mlctl.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.models import DeployResult, PodState, Promotion


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
    allow_downtime: AllowDowntimeOption = False,
    create_namespace: Annotated[
        bool,
        typer.Option(
            "--create-namespace",
            help="Create the namespace when it is missing (as helm install --create-namespace). Never implied.",
        ),
    ] = False,
    target: TargetOption = None,
    port: Annotated[int | None, port_option("--target local: the port on 127.0.0.1.  [default: serving.port]")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Deploy an --image that mlctl build made for another service.")
    ] = False,
    json_: JsonOption = False,
    *,
    where: TargetArgs,
) -> None:
    """Install or upgrade the service on Kubernetes and follow the rollout; explain and roll back on failure.

    The image is the last one `mlctl build` made in this service (by digest once pushed), or --image.
    Before installing, checks that some node can ever run a replica (GPUs, GPU type, the image's driver),
    and says when an update will have downtime (no GPU free for a surge pod; see deploy.strategy).
    A failed rollout is marked failed in the release's history and rolled back to the last revision that
    rolled out healthy, which is followed to readiness too. Exit 8 when the rollout fails (after rolling
    back), 10 when the rollback did not come up either, 9 when the cluster is unreachable or forbids it.
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
            "--allow-downtime": allow_downtime,
            "--create-namespace": create_namespace,
        }
        given = [flag for flag, value in cluster_only.items() if value]
        if given:
            raise InputError(
                f"{', '.join(given)} apply to cluster deploys only; a local run takes its settings from mlctl.yaml"
            )
        from mlctl.cli.local import deploy_local_cmd

        deploy_local_cmd(state, env=where.env, image=image, port=port, wait=wait, timeout=timeout, force=force)
        return
    if port is not None:
        raise InputError("--port applies to --target local only (a cluster deploy's port is serving.port)")
    from mlctl.deploy.plan import resolve_image
    from mlctl.deploy.release import deploy_service

    release = where.resolve(state)
    chosen = resolve_image(release.loaded, image, require_digest=require_digest, reporter=out.reporter())
    if image:
        _check_owner(release.loaded.config.name, chosen.ref.reference, chosen.labels, force=force)
    result = deploy_service(
        release,
        chosen,
        values_files=values or (),
        sets=set_ or (),
        wait=wait,
        timeout_s=timeout,
        dry_run=dry_run,
        allow_downtime=allow_downtime,
        create_namespace=create_namespace,
        reporter=out.reporter(),
    )
    out.result(result, lambda console: render_deploy(console, result))


def _check_owner(service: str, image: str, labels: Mapping[str, str] | None, *, force: bool) -> None:
    """Refuse another service's ``--image``, as far as its labels are known here.

    From the build record, else from this machine's Docker engine when it has the image; an image
    known to neither (built by a CI job elsewhere) goes on.
    """
    from mlctl.deploy.local import check_image_owner

    if not labels:
        from mlctl.adapters.docker import Containers
        from mlctl.errors import EnvironmentProblem

        try:
            containers = Containers.connect(timeout=5)
        except EnvironmentProblem:
            return
        try:
            labels = containers.image_labels(image)
        finally:
            containers.close()
    if labels:
        check_image_owner(service, image, dict(labels), force=force)


def deploy_target(state: State, target: str | None, env: str | None) -> str:
    """``--target``, else ``deploy.target`` of mlctl.yaml."""
    if target is None:
        return state.config(env).config.deploy.target
    if target not in ("cluster", "local"):
        raise InputError(f"--target {target}: must be cluster or local")
    return target


#: Day-2 commands that only a cluster release has: why a local run has no such thing, and what to use.
CLUSTER_ONLY = {
    "history": (
        "a local run keeps no revisions (each `mlctl deploy --target local` replaces its container)",
        "mlctl status --target local shows what runs, mlctl logs --target local its log",
    ),
    "rollback": (
        "a local run keeps no revisions to go back to",
        "run an earlier image: mlctl deploy --target local --image REPO:TAG",
    ),
    "diff": (
        "a local run has no manifests to compare with",
        "mlctl render prints the manifests a cluster deploy would apply",
    ),
    "delete": ("a local run is not a release to uninstall", "stop it with mlctl down"),
}


def refuse_local(state: State, command: str, target: str | None, env: str | None) -> None:
    """Refuse ``command`` when the target is local (``--target local`` or ``deploy.target: local``)."""
    if deploy_target(state, target, env) != "local":
        return
    why, hint = CLUSTER_ONLY[command]
    source = "--target local" if target else "deploy.target: local"
    raise InputError(f"mlctl {command} is for a cluster release, and the target is local ({source}): {why}", hint=hint)


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
    from mlctl.chart.render import joined
    from mlctl.deploy.plan import plan_values, render, resolve_image

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
    target: TargetOption = None,
    json_: JsonOption = False,
    *,
    where: TargetArgs,
) -> None:
    """Show what a deploy would change against the live release, resource by resource.

    Each object the deploy would apply goes to the cluster as a server-side dry run and is compared with
    the live object, so changes made with kubectl show up as what the deploy would undo.
    """
    from mlctl.deploy.day2 import diff_release
    from mlctl.deploy.plan import resolve_image

    state = state_of(ctx)
    out = state.output(json_)
    refuse_local(state, "diff", target, where.env)
    release = where.resolve(state)
    chosen = resolve_image(release.loaded, image, reporter=out.reporter())
    changes = diff_release(release, chosen, values_files=values or (), sets=set_ or (), reporter=out.reporter())

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
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Promote to a protected environment without asking (CI).")
    ] = False,
    allow_downtime: AllowDowntimeOption = False,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
    json_: JsonOption = False,
) -> None:
    """Deploy to one environment exactly the image (by digest) running in another: never a rebuild.

    The source must be healthy (every replica ready) and run an image pinned by digest. The
    destination's own settings (replicas, GPUs, namespace, context) come from its environment in
    mlctl.yaml; two environments that resolve to the same release are refused. What the promotion
    changes is shown first; a protected environment (prod) is changed only after you agree, or with
    --yes (without a terminal, --yes is the only way).

    Example: mlctl promote --from staging --to prod
    """
    from mlctl.deploy.day2 import promote

    state = state_of(ctx)
    out = state.output(json_)
    if source == to:
        raise InputError(f"--from and --to are both {source!r}")

    def confirm(promotion: Promotion) -> bool:
        from rich.prompt import Confirm

        out.close()
        return Confirm.ask(
            f"Promote {promotion.image} to {promotion.to} ({len(promotion.changes)} resource(s) change)?",
            default=False,
            console=out.console,
        )

    result = promote(
        TargetArgs(env=source).resolve(state),
        TargetArgs(env=to).resolve(state),
        yes=yes,
        confirm=confirm if out.interactive else None,
        allow_downtime=allow_downtime,
        wait=wait,
        timeout_s=timeout,
        reporter=out.reporter(),
    )
    out.result(result, lambda console: render_deploy(console, result))
