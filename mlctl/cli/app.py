"""The ``mlctl`` command: global options, the command tree, and the one error-to-exit-code mapping.

Importing this module must stay cheap: it loads typer and mlctl's own light modules only.
torch, docker, kubernetes, helm_python and git load inside the commands that use them
(a test holds us to it, and ``benchmarks/cli_startup.py`` measures it).

Commands load lazily: typer turns a function into a click command by reading its signature, which
costs about half a millisecond per command; ``mlctl --help`` and ``mlctl run`` build only what they
show or run. The one-line help of each command is listed below so that ``--help`` needs none of them
(a test checks it matches each command's docstring).
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, NoReturn

import typer
from typer._click.exceptions import UsageError

from mlctl import __version__
from mlctl.cli.help import PlainContext, plain_help
from mlctl.cli.output import State, state_of
from mlctl.errors import ExitCode, InputError, MlctlError

if TYPE_CHECKING:
    from typer._click.core import Command, Context
    from typer._click.formatting import HelpFormatter

HELP = """\
mlctl: the fixed road from a PyTorch model to a GPU service.

\b
  mlctl new fraud-scorer      scaffold a service (model, OIP server, tests)
  cd fraud-scorer
  mlctl run                   serve it from source, with reload
  mlctl build --push          build and push the layered image (CUDA -> Python -> torch -> service)
  mlctl deploy --env staging  install it on Kubernetes, follow the rollout, explain failures
  mlctl bench URL             load-test a running service
  mlctl doctor                check this machine: Docker, cluster, Helm, GPUs

Every command that returns data takes --json; there are no prompts without a
terminal or in CI. Options also read MLCTL_* environment variables (shown below).

\b
Exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 input, 5 conflict, 6 environment,
7 build, 8 deploy (rolled back), 9 cluster, 10 rollback failed too, 130 interrupted.
"""

#: What ``--json`` prints on stdout when a command is interrupted (as every error: under "error").
INTERRUPTED = {"type": "Interrupted", "exit_code": int(ExitCode.INTERRUPTED), "message": "interrupted", "hint": None}

#: name -> (module, attribute, one-line help), in the order --help lists them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "new": ("mlctl.cli.new", "new_cmd", "Scaffold a new model service from a template."),
    "run": ("mlctl.cli.run", "run_cmd", "Serve the service from source on this machine (CPU or GPU), with reload."),
    "build": (
        "mlctl.cli.build",
        "build_cmd",
        "Build the layered image: root -> python -> torch -> service (reusing unchanged layers).",
    ),
    "deploy": (
        "mlctl.cli.deploy",
        "deploy_cmd",
        "Install or upgrade the service on Kubernetes and follow the rollout; explain and roll back on failure.",
    ),
    "promote": (
        "mlctl.cli.deploy",
        "promote_cmd",
        "Deploy to one environment exactly the image (by digest) running in another: never a rebuild.",
    ),
    "render": (
        "mlctl.cli.deploy",
        "render_cmd",
        "Print the Kubernetes manifests a deploy would apply (offline: no cluster needed).",
    ),
    "diff": (
        "mlctl.cli.deploy",
        "diff_cmd",
        "Show what a deploy would change against the live release, resource by resource.",
    ),
    "status": (
        "mlctl.cli.release",
        "status_cmd",
        "Show the release: revision, image, ready replicas, and each pod with its node and GPUs.",
    ),
    "logs": (
        "mlctl.cli.release",
        "logs_cmd",
        "Print the server's log: every pod of the release, each line prefixed with its pod.",
    ),
    "history": (
        "mlctl.cli.release",
        "history_cmd",
        "List the release's revisions (Helm history), with how each one's rollout went.",
    ),
    "rollback": (
        "mlctl.cli.release",
        "rollback_cmd",
        "Roll the release back to an earlier revision (as a new revision) and follow the rollout.",
    ),
    "delete": (
        "mlctl.cli.release",
        "delete_cmd",
        "Delete the release and everything it created (asks first, unless --yes).",
    ),
    "down": (
        "mlctl.cli.local",
        "down_cmd",
        "Stop and remove the service's local container (started by mlctl deploy --target local).",
    ),
    "bench": (
        "mlctl.cli.bench",
        "bench_cmd",
        "Load-test a running service: throughput, p50/p90/p99 latency, errors by status, batch sizes.",
    ),
    "doctor": (
        "mlctl.cli.doctor",
        "doctor_cmd",
        "Check Python, git, Docker, the registry, the cluster, Helm and GPUs; exit 6 when a required one fails.",
    ),
    "ci": ("mlctl.cli.ci", "app", "Write the service's CI pipeline (GitHub Actions or GitLab CI)."),
    "runtime": (
        "mlctl.cli.runtime",
        "app",
        "The serving runtime services depend on (mlctl-serve): its wheel, for pip to install anywhere.",
    ),
    "update": (
        "mlctl.cli.update",
        "update_cmd",
        "Move the service to the newest version of its template, keeping your changes (three-way merge).",
    ),
    "templates": ("mlctl.cli.templates", "app", "List and describe the templates `mlctl new` can start from."),
    "config": ("mlctl.cli.config_cmd", "app", "Check and show the service's mlctl.yaml."),
    "images": ("mlctl.cli.images", "app", "The image layer ladder: compatibility matrix, plan, local layers, prune."),
}


class _Interrupted(Exception):
    """Ctrl-C (or SIGTERM/SIGHUP inside ``mlctl.atomic.interruptible``) while a command ran.

    typer turns a KeyboardInterrupt into a silent ``Exit(130)``; the root group turns it into this
    instead, so that ``run_cli`` can say so before exiting 130.
    """


class LazyGroup(typer.core.TyperGroup):
    """The root group: builds a command only when it is run (or its own help is asked for)."""

    context_class = PlainContext

    def invoke(self, ctx: Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted from None

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        with formatter.section("Commands"):  # whole summaries, wrapped (never cut mid-word)
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            # typer suggests among the commands loaded so far, which here are none.
            close = difflib.get_close_matches(args[0], list(COMMANDS), n=2) if args else []
            if close and "Did you mean" not in exc.message:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {' or '.join(repr(c) for c in close)}?"
            raise


def load_command(name: str) -> Command:
    """The click command of ``name`` (its module is imported only now), with plain help."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    if not isinstance(target, typer.Typer):
        single = typer.Typer(rich_markup_mode=None, add_completion=False)
        single.command(name)(target)
        target = single
    command = plain_help(typer.main.get_command(target))
    command.name = name
    # Completion is installed from `mlctl` itself; a group's own copy of those options is noise in its help.
    command.params = [p for p in command.params if p.name not in ("install_completion", "show_completion")]
    return command


app = typer.Typer(
    name="mlctl",
    help=HELP,
    cls=LazyGroup,
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
    """The global options, applied before any command runs."""
    state = state_of(ctx)
    state.command = ctx.invoked_subcommand or state.command
    state.json = state.json or json_
    state.debug = state.debug or debug
    state.no_input = state.no_input or no_input
    if project_dir is not None:
        if not project_dir.is_dir():
            raise InputError(f"-C {project_dir}: no such directory")
        os.chdir(project_dir)


def run_cli(args: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run ``mlctl`` with ``args`` and return its exit code: the one place errors become exit codes."""
    state = State(stdout=stdout, stderr=stderr)
    args = list(sys.argv[1:] if args is None else args)
    # Errors raised before the root callback ran still honour the global flags.
    state.json = "--json" in args or _env_flag("MLCTL_JSON")
    state.debug = bool({"-v", "--debug"} & set(args)) or _env_flag("MLCTL_DEBUG")
    command = plain_help(typer.main.get_command(app))
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
    except (_Interrupted, KeyboardInterrupt, typer.Abort):
        output = state.output()
        output.close()  # a live pane would otherwise swallow the line
        if state.json:
            output.stdout.write(json.dumps({"error": INTERRUPTED}) + "\n")
            output.stdout.flush()
        output.stderr.write("\ninterrupted\n")
        output.stderr.flush()
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        state.output().bug(exc)
        return int(ExitCode.FAILURE)
    return int(result) if isinstance(result, int) else int(ExitCode.OK)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def main() -> NoReturn:
    """The ``mlctl`` console script."""
    sys.exit(run_cli())
