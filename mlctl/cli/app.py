"""The ``mlctl`` command: global options, the command tree, and the one error-to-exit-code mapping.

Importing this module must stay cheap: it loads typer and mlctl's own light modules only.
torch, docker, kubernetes, helm_python and git load inside the commands that use them
(a test holds us to it, and ``benchmarks/cli_startup.py`` measures it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Annotated, NoReturn

import typer

from mlctl import __version__
from mlctl.cli import bench, build, config_cmd, doctor, images, new, run, templates
from mlctl.cli.output import State, state_of
from mlctl.errors import ExitCode, InputError, MlctlError

HELP = """\
mlctl: the fixed road from a PyTorch model to a GPU service.

\b
  mlctl new fraud-scorer      scaffold a service (model, OIP server, tests)
  cd fraud-scorer
  mlctl run                   serve it from source, with reload
  mlctl build --push          build and push the layered image (CUDA -> Python -> torch -> service)
  mlctl bench URL             load-test a running service
  mlctl doctor                check this machine: Docker, cluster, Helm, GPUs

Every command that returns data takes --json; there are no prompts without a
terminal or in CI. Options also read MLCTL_* environment variables (shown below).

\b
Exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 input, 5 conflict, 6 environment,
7 build, 8 deploy, 9 cluster, 130 interrupted.
"""

app = typer.Typer(
    name="mlctl",
    help=HELP,
    no_args_is_help=True,
    # Plain click help: rich's help renderer costs ~60 ms of start-up (see benchmarks/cli_startup.py).
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mlctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print mlctl's version and exit."),
    ] = False,
    project_dir: Annotated[
        Path | None,
        typer.Option(
            "-C",
            "--project-dir",
            envvar="MLCTL_PROJECT_DIR",
            metavar="DIR",
            help="Run as if mlctl was started in DIR.",
        ),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", envvar="MLCTL_JSON", help="Print results as JSON on stdout.")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("-v", "--debug", envvar="MLCTL_DEBUG", help="Show tracebacks and extra detail on errors."),
    ] = False,
    no_input: Annotated[
        bool,
        typer.Option(
            "--no-input",
            envvar="MLCTL_NO_INPUT",
            help="Never prompt; take defaults (automatic without a terminal or in CI).",
        ),
    ] = False,
) -> None:
    state = state_of(ctx)
    state.json = state.json or json_
    state.debug = state.debug or debug
    state.no_input = state.no_input or no_input
    if project_dir is not None:
        if not project_dir.is_dir():
            raise InputError(f"-C {project_dir}: no such directory")
        os.chdir(project_dir)


app.command("new")(new.new_cmd)
app.command("run")(run.run_cmd)
app.command("build")(build.build_cmd)
app.command("bench")(bench.bench_cmd)
app.command("doctor")(doctor.doctor_cmd)
app.add_typer(templates.app, name="templates")
app.add_typer(config_cmd.app, name="config")
app.add_typer(images.app, name="images")


def run_cli(args: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run ``mlctl`` with ``args`` and return its exit code: the one place errors become exit codes."""
    state = State(stdout=stdout, stderr=stderr)
    args = list(sys.argv[1:] if args is None else args)
    # Errors raised before the root callback ran still honour the global flags.
    state.json = "--json" in args or _env_flag("MLCTL_JSON")
    state.debug = bool({"-v", "--debug"} & set(args)) or _env_flag("MLCTL_DEBUG")
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="mlctl", obj=state, standalone_mode=False)
    except MlctlError as exc:
        state.output().error(exc)
        return int(exc.exit_code)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:  # usage errors from the (vendored) click parser
        show = getattr(exc, "show", None)
        if callable(show):
            show(file=stderr)
        else:
            (stderr or sys.stderr).write(f"error: {exc.message}\n")
        return int(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        (stderr or sys.stderr).write("\ninterrupted\n")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        state.output().bug(exc)
        return int(ExitCode.FAILURE)
    return int(result) if isinstance(result, int) else int(ExitCode.OK)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def main() -> NoReturn:
    sys.exit(run_cli())
