"""``mlctl runtime``: mlctl-serve, the serving runtime that generated services depend on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlctl.cli.options import JsonOption
from mlctl.cli.output import state_of

app = typer.Typer(
    help="The serving runtime services depend on (mlctl-serve): its wheel, for pip to install anywhere.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.callback()
def runtime() -> None:
    """The serving runtime services depend on (mlctl-serve): its wheel, for pip to install anywhere."""


@app.command("wheel")
def wheel_cmd(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", metavar="DIR", help="Write it into DIR (for pip --find-links DIR).  [default: mlctl's cache]"
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Write the mlctl-serve wheel this mlctl carries and print its path.

    No package index has to host mlctl-serve: install a service with its runtime in one go,
    in a fresh virtual environment, CI job or image:

        python -m pip install "$(mlctl runtime wheel)" -e '.[test]'
    """
    from mlctl.images.wheels import write_runtime_wheel

    state = state_of(ctx)
    out = state.output(json_)
    result = write_runtime_wheel(directory)
    out.result(result, lambda console: console.print(result.path, markup=False, highlight=False, soft_wrap=True))
