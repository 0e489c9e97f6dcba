"""``mlctl deploy`` and the release's later life: render, diff, status, logs, history, rollback, delete."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.build import EnvOption
from mlctl.cli.output import JsonOption, Output, print_table, state_of
from mlctl.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.deploy.core import Target
    from mlctl.models import DeployResult, PodState

ReleaseOption = Annotated[
    str | None, typer.Option("--release", metavar="NAME", help="Helm release name.  [default: the service name]")
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        metavar="NS",
        help="Namespace.  [default: deploy.namespace in mlctl.yaml, else the kube context's]",
    ),
]
ContextOption = Annotated[
    str | None,
    typer.Option("--context", metavar="NAME", envvar="MLCTL_KUBE_CONTEXT", help="Kube context.  [default: current]"),
]
ImageOption = Annotated[
    str | None,
    typer.Option(
        "--image",
        metavar="REF",
        help="Image to deploy, REPO:TAG@sha256:...  [default: the image `mlctl build` tags for this commit]",
    ),
]
ValuesOption = Annotated[
    list[Path] | None, typer.Option("--values", "-f", metavar="FILE", help="Extra chart values (YAML). Repeatable.")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Extra chart value (Helm syntax). Repeatable.")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="How long to wait for the rollout.  [default: its deadline]"),
]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the rollout until it is ready or fails.")]
TargetOption = Annotated[
    str | None,
    typer.Option(
        "--target",
        metavar="cluster|local",
        envvar="MLCTL_DEPLOY_TARGET",
        help="Kubernetes (a Helm release) or this machine's Docker engine.  [default: deploy.target, else cluster]",
    ),
]


def _target(env: str | None, release: str | None, namespace: str | None, context: str | None) -> Target:
    from mlctl.deploy.core import target

    return target(env=env, release=release, namespace=namespace, context=context)


def deploy_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    image: ImageOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
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
) -> None:
    """Install or upgrade the service on Kubernetes and follow the rollout; explain and roll back on failure.

    Before installing, checks that some node can ever run a replica (GPUs, GPU type, driver).
    Exit 8 when the rollout fails (after rolling back), 9 when the cluster is unreachable or forbids it.
    With --target local, runs the built image on this machine's Docker engine instead (stop it: mlctl down).

    Example: mlctl deploy --env staging --image ghcr.io/acme/fraud-scorer:3f2a-g1c9d@sha256:...
    """
    from mlctl.deploy.core import deploy_service

    out = state_of(ctx).output(json_)
    chosen = _deploy_target(target, env)
    if chosen == "local":
        cluster_only = {
            "--release": release,
            "--namespace": namespace,
            "--context": context,
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
        _deploy_local(out, env=env, image=image, port=port, wait=wait, timeout=timeout)
        return
    if port is not None:
        raise InputError("--port applies to --target local only (a cluster deploy's port is serving.port)")
    reporter = out.reporter()
    try:
        result = deploy_service(
            env=env,
            image=image,
            release=release,
            namespace=namespace,
            context=context,
            values_files=values or (),
            sets=set_ or (),
            require_digest=require_digest,
            wait=wait,
            timeout_s=timeout,
            dry_run=dry_run,
            reporter=reporter,
        )
    finally:
        reporter.close()
    out.result(result, lambda console: render_deploy(console, result))


def _deploy_target(target: str | None, env: str | None) -> str:
    if target is None:
        from mlctl.config import load_service_config

        return load_service_config(env=env).config.deploy.target
    if target not in ("cluster", "local"):
        raise InputError(f"--target {target}: must be cluster or local")
    return target


def _deploy_local(
    out: Output, *, env: str | None, image: str | None, port: int | None, wait: bool, timeout: float | None
) -> None:
    from mlctl.deploy.local import deploy_local

    reporter = out.reporter()
    try:
        result = deploy_local(env=env, image=image, port=port, wait=wait, timeout_s=timeout, reporter=reporter)
    finally:
        reporter.close()

    def show(console: Console) -> None:
        state = "ready" if result.status == "ready" else "started (not waited for)"
        console.print(
            f"[green]Running[/] {result.service} at {result.url}: {state} in {result.seconds:.1f} s",
            highlight=False,
        )
        console.print(f"container {result.container}, image {result.image}", markup=False)
        console.print(f"  try:  curl {result.url}/v2/models/{result.service}", markup=False, highlight=False)
        console.print("  logs: mlctl logs --target local     stop: mlctl down", markup=False, highlight=False)

    out.result(result, show)


def render_deploy(console: Console, result: DeployResult) -> None:
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
    if result.pods:
        _pods_table(console, result.pods)


def _pods_table(console: Console, pods: tuple[PodState, ...]) -> None:
    rows = [[p.name, p.state, str(p.restarts), p.node or "-", str(p.gpus)] for p in pods]
    print_table(console, ["POD", "STATE", "RESTARTS", "NODE", "GPUS"], rows)


def render_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    image: ImageOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    values: ValuesOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Print the Kubernetes manifests a deploy would apply (offline: no cluster needed)."""
    from mlctl.chart.core import joined
    from mlctl.deploy.core import render, resolve_image

    out = state_of(ctx).output(json_)
    where = _target(env, release, namespace, None)
    ref = resolve_image(where.loaded, image, require_digest=False, reporter=out.reporter())
    rendered = render(where, ref, values_files=values or (), sets=set_ or ())
    out.result(rendered, lambda console: console.print(joined(dict(rendered.manifests)), markup=False, end=""))


def diff_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    image: ImageOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    values: ValuesOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what a deploy would change against the live release, resource by resource."""
    from mlctl.deploy.core import diff_release, resolve_image

    out = state_of(ctx).output(json_)
    where = _target(env, release, namespace, context)
    ref = resolve_image(where.loaded, image, require_digest=False, reporter=out.reporter())
    changes = diff_release(where, ref, values_files=values or (), sets=set_ or ())

    def show(console: Console) -> None:
        if not changes:
            console.print(f"{where.release}: no changes")
        for change in changes:
            console.print(f"{change.change}: {change.resource}", markup=False)
            console.print(change.diff, markup=False, end="")

    out.result(changes, show)


def status_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    json_: JsonOption = False,
) -> None:
    """Show the release: revision, image, ready replicas, and each pod with its node and GPUs."""
    from mlctl.deploy.core import release_status

    out = state_of(ctx).output(json_)
    status = release_status(_target(env, release, namespace, context))

    def show(console: Console) -> None:
        console.print(
            f"{status.release} in {status.namespace}: revision {status.revision} ({status.status}, {status.updated}), "
            f"{status.ready}/{status.desired} ready",
            markup=False,
        )
        console.print(f"image {status.image}", markup=False)
        _pods_table(console, status.pods)

    out.result(status, show)


def history_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    json_: JsonOption = False,
) -> None:
    """List the release's revisions (Helm history)."""
    from mlctl.deploy.core import release_history

    out = state_of(ctx).output(json_)
    revisions = release_history(_target(env, release, namespace, context))
    out.result(
        revisions,
        lambda console: print_table(
            console,
            ["REVISION", "STATUS", "UPDATED", "CHART", "DESCRIPTION"],
            [[str(r.revision), r.status, r.updated, r.chart, r.description] for r in revisions],
        ),
    )


def rollback_cmd(
    ctx: typer.Context,
    revision: Annotated[
        int | None, typer.Argument(metavar="[REVISION]", help="Revision to return to.  [default: the previous one]")
    ] = None,
    env: EnvOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
    json_: JsonOption = False,
) -> None:
    """Roll the release back to an earlier revision (as a new revision) and follow the rollout."""
    from mlctl.deploy.core import rollback_release

    out = state_of(ctx).output(json_)
    reporter = out.reporter()
    try:
        result = rollback_release(
            _target(env, release, namespace, context), revision, wait=wait, timeout_s=timeout, reporter=reporter
        )
    finally:
        reporter.close()
    out.result(result, lambda console: render_deploy(console, result))


def delete_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_: JsonOption = False,
) -> None:
    """Delete the release and everything it created (asks first, unless --yes)."""
    from mlctl.deploy.core import delete_release

    out = state_of(ctx).output(json_)
    where = _target(env, release, namespace, context)
    if not yes:
        if not out.interactive:
            raise InputError(f"refusing to delete {where.release} without --yes (no terminal to ask in)")
        from rich.prompt import Confirm

        if not Confirm.ask(
            f"Delete {where.release} from namespace {where.namespace}?", default=False, console=out.console
        ):
            out.err_console.print(f"kept {where.release}", markup=False, highlight=False)
            raise typer.Exit(1)
    deleted = delete_release(where, reporter=out.reporter())
    out.result(
        {"deleted": deleted, "namespace": where.namespace},
        lambda console: console.print(f"deleted {deleted} from {where.namespace}", markup=False),
    )


def logs_cmd(
    ctx: typer.Context,
    pod: Annotated[
        str | None, typer.Argument(metavar="[POD]", help="One pod.  [default: every pod of the release]")
    ] = None,
    env: EnvOption = None,
    release: ReleaseOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (one pod).")] = False,
    previous: Annotated[
        bool, typer.Option("--previous", "-p", help="The previous container's log (after a crash).")
    ] = False,
    tail: Annotated[int | None, typer.Option("--tail", metavar="N", help="Only the last N lines.")] = None,
    target: TargetOption = None,
) -> None:
    """Print the server's log: every pod of the release, each line prefixed with its pod."""
    from mlctl.deploy.core import connected
    from mlctl.deploy.watch import INSTANCE

    state_of(ctx).output()
    if _deploy_target(target, env) == "local":
        _local_logs(env, follow=follow, tail=tail)
        return
    where = _target(env, release, namespace, context)
    with connected(where) as (cluster, _):
        pods = [p["metadata"]["name"] for p in cluster.pods(where.namespace, f"{INSTANCE}={where.release}")]
        if pod is not None:
            if pod not in pods:
                raise InputError(f"{pod} is not a pod of {where.release}; its pods: {', '.join(pods) or 'none'}")
            pods = [pod]
        if not pods:
            raise InputError(f"{where.release} has no pods in {where.namespace}", hint="see `mlctl status`")
        if follow:
            for line in cluster.follow_log(where.namespace, pods[0], tail=tail):
                sys.stdout.write(f"{line}\n")
                sys.stdout.flush()
            return
        for name in pods:
            text = cluster.pod_log(where.namespace, name, previous=previous, tail=tail)
            prefix = f"[{name}] " if len(pods) > 1 else ""
            for line in text.splitlines():
                sys.stdout.write(f"{prefix}{line}\n")


def _local_logs(env: str | None, *, follow: bool, tail: int | None) -> None:
    from mlctl.adapters.docker import Containers
    from mlctl.config import load_service_config
    from mlctl.deploy.local import container_name

    name = container_name(load_service_config(env=env).config.name, env)
    containers = Containers.connect()
    try:
        if containers.state(name) is None:
            raise InputError(f"no local container {name}", hint="start it: mlctl deploy --target local")
        lines = containers.follow(name, tail=tail) if follow else containers.logs(name, tail=tail).splitlines()
        for line in lines:
            sys.stdout.write(f"{line}\n")
            sys.stdout.flush()
    finally:
        containers.close()


def down_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    json_: JsonOption = False,
) -> None:
    """Stop and remove the service's local container (started by mlctl deploy --target local)."""
    from mlctl.deploy.local import down

    out = state_of(ctx).output(json_)
    reporter = out.reporter()
    try:
        stopped = down(env=env, reporter=reporter)
    finally:
        reporter.close()
    out.result(
        {"stopped": stopped},
        lambda console: console.print(
            f"stopped {', '.join(stopped)}" if stopped else "no local container of this service is running",
            markup=False,
        ),
    )


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
    from mlctl.deploy.core import promote

    out = state_of(ctx).output(json_)
    reporter = out.reporter()
    try:
        result = promote(source=source, to=to, wait=wait, timeout_s=timeout, reporter=reporter)
    finally:
        reporter.close()
    out.result(result, lambda console: render_deploy(console, result))
