"""``mlctl run``: serve the service from source."""

from __future__ import annotations

from typing import Annotated

import typer

from mlctl.cli.options import EnvOption, port_option
from mlctl.cli.output import state_of


def run_cmd(
    ctx: typer.Context,
    port: Annotated[int | None, port_option("Port to listen on.  [default: serving.port from mlctl.yaml]")] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; 0.0.0.0 exposes the server to your network.")
    ] = "127.0.0.1",
    reload: Annotated[bool, typer.Option("--reload/--no-reload", help="Restart the server when code changes.")] = True,
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            metavar="PATH",
            help="Python to run the server with.  [default: the service's .venv, else mlctl's own]",
        ),
    ] = None,
    env: EnvOption = None,
) -> None:
    """Serve the service from source on this machine (CPU or GPU), with reload.

    Makes the weights first when they are missing (model.prepare in mlctl.yaml; weights pinned
    by URI are downloaded once into mlctl's cache), prints the URL, and says when the model is
    ready. Ctrl-C stops it cleanly.
    """
    from mlctl.workflow.run import plan_run, serve

    state = state_of(ctx)
    reporter = state.output().reporter()
    plan = plan_run(state.config(env), host=host, port=port, reload=reload, python=python, reporter=reporter)
    serve(plan, reporter=reporter)
