"""``mlctl doctor``: check this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import JsonOption, timeout_option
from mlctl.cli.output import state_of
from mlctl.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.models import DoctorReport

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "cyan"}


def doctor_cmd(
    ctx: typer.Context,
    context: Annotated[
        str | None, typer.Option("--context", metavar="NAME", help="Kube context to check.  [default: current]")
    ] = None,
    timeout: Annotated[float, timeout_option("Seconds to wait for each network check.")] = 3.0,
    root: Annotated[
        str | None,
        typer.Option(
            "--root", metavar="IMAGE", envvar="MLCTL_ROOT", help="Check this root image instead of the matrix's."
        ),
    ] = None,
    torch_index: Annotated[
        str | None,
        typer.Option(
            "--torch-index",
            metavar="URL",
            envvar="MLCTL_TORCH_INDEX",
            help="Check this wheel index instead of the matrix's.",
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Check Python, git, Docker, the registry, the cluster, Helm and GPUs; exit 6 when a required one fails.

    In a service, also what its first build fetches: the root image and the wheel index of its torch.
    """
    from mlctl.errors import MlctlError
    from mlctl.workflow.doctor import run_doctor

    state = state_of(ctx)
    out = state.output(json_)
    try:
        loaded = state.config()  # announced like every command's; outside a service, doctor says so itself
    except MlctlError:
        loaded = None
    report = run_doctor(kube_context=context, timeout_s=timeout, loaded=loaded, root=root, torch_index=torch_index)
    out.result(report, lambda console: _render(console, report))
    if not report.ok:
        raise typer.Exit(int(ExitCode.ENVIRONMENT))


def _render(console: Console, report: DoctorReport) -> None:
    from rich.markup import escape

    from mlctl.workflow.doctor import BUILD_NEEDS

    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        status = check.status.value
        label = status.upper() if status == "fail" else status
        console.print(f"[{_STYLE[status]}]{label:<4}[/]  {check.name:<{width}}  {escape(check.detail)}")
        if check.hint and check.status.value in ("fail", "warn", "info"):
            console.print(f"      {'':<{width}}  [dim]fix: {escape(check.hint)}[/]")
    failed = [c.name for c in report.checks if c.status.value == "fail"]
    if failed:
        console.print(f"\n[bold red]{len(failed)} required check(s) failed:[/] {', '.join(failed)}")
    else:
        console.print("\n[green]All required checks passed.[/]")
    # Optional for a machine that runs services from source, but a first build stops on either.
    build_needs = [c.name for c in report.checks if c.name in BUILD_NEEDS and c.status.value == "warn"]
    if build_needs:
        console.print(
            f"[yellow]A first `mlctl build` here still needs:[/] {', '.join(build_needs)} (see the fixes above)"
        )
