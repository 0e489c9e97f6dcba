"""The local target: ``mlctl deploy --target local``, ``mlctl logs --target local`` and ``mlctl down``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from mlctl.cli.options import EnvOption, JsonOption
from mlctl.cli.output import State, state_of
from mlctl.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console


def deploy_local_cmd(
    state: State,
    *,
    env: str | None,
    image: str | None,
    port: int | None,
    wait: bool,
    timeout: float | None,
    force: bool = False,
) -> None:
    """``mlctl deploy --target local``: run the image on this machine's Docker engine."""
    from mlctl.deploy.local import deploy_local, local_image

    out = state.output()
    loaded = state.config(env)
    result = deploy_local(
        loaded,
        local_image(loaded, image),
        port=port,
        wait=wait,
        timeout_s=timeout,
        force=force,
        reporter=out.reporter(),
    )

    def show(console: Console) -> None:
        ready = "ready" if result.status == "ready" else "started (not waited for)"
        console.print(
            f"[green]Running[/] {result.service} at {result.url}: {ready} in {result.seconds:.1f} s",
            highlight=False,
        )
        console.print(f"container {result.container}, image {result.image}", markup=False)
        console.print(f"  try:  curl {result.url}/v2/models/{result.service}", markup=False, highlight=False)
        console.print("  logs: mlctl logs --target local     stop: mlctl down", markup=False, highlight=False)

    out.result(result, show)


def local_status_cmd(state: State, env: str | None) -> None:
    """``mlctl status --target local``: the service's container on this machine."""
    from mlctl.deploy.local import local_status

    out = state.output()
    status = local_status(state.config(env))

    def show(console: Console) -> None:
        if status.state == "running":
            health = f" ({status.health})" if status.health else ""
            condition = ("ready" if status.ready else "not ready") + health
        else:
            condition = f"exit code {status.exit_code}" + (
                ", killed for memory (OOMKilled)" if status.oom_killed else ""
            )
        console.print(f"{status.container}: {status.state}, {condition}, since {status.started_at}", markup=False)
        console.print(f"image {status.image}", markup=False)
        if status.url:
            console.print(f"url   {status.url}", markup=False)
        console.print("  logs: mlctl logs --target local     stop: mlctl down", markup=False, highlight=False)

    out.result(status, show)


def local_logs(state: State, env: str | None, *, follow: bool, tail: int | None) -> None:
    """``mlctl logs --target local``: the local container's log."""
    from mlctl.adapters.docker import Containers
    from mlctl.deploy.local import container_name, server_container

    service = state.config(env).config.name
    containers = Containers.connect()
    try:
        name = server_container(containers, service, env)
        if name is None:
            raise InputError(
                f"no local server of {container_name(service, env)}", hint="start it: mlctl deploy --target local"
            )
        lines = containers.follow(name, tail=tail) if follow else containers.logs(name, tail=tail).splitlines()
        for line in lines:
            sys.stdout.write(f"{line}\n")
            sys.stdout.flush()
    finally:
        containers.close()


def down_cmd(ctx: typer.Context, env: EnvOption = None, json_: JsonOption = False) -> None:
    """Stop and remove the service's local container (started by mlctl deploy --target local)."""
    from mlctl.deploy.local import down
    from mlctl.models import DownResult

    state = state_of(ctx)
    out = state.output(json_)
    result = DownResult(tuple(down(state.config(env), reporter=out.reporter())))
    out.result(
        result,
        lambda console: console.print(
            f"stopped {', '.join(result.stopped)}"
            if result.stopped
            else "no local container of this service is running",
            markup=False,
        ),
    )
