"""``mlctl update``: move the service to a newer version of its template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import JsonOption
from mlctl.cli.output import state_of
from mlctl.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.models import UpdateResult


def update_cmd(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show each file's change (a diff); write nothing.")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only say whether a newer template exists: exit 1 when one does (for CI).")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Move the service to the newest version of its template, keeping your changes (three-way merge).

    Files you never touched are replaced; files you changed are merged with the template's changes;
    where both changed the same lines, conflict markers are written (exit 5) for you to resolve.
    The service must be committed first (git), so the update is one change to review and undo.

    Example: mlctl update --dry-run
    """
    from mlctl.scaffold.update import check_update, update_service

    out = state_of(ctx).output(json_)
    if check:
        result = check_update()
        out.result(result, lambda console: _render(console, result))
        if result.status == "update available":
            raise typer.Exit(1)
        return
    reporter = out.reporter()
    try:
        result = update_service(dry_run=dry_run, reporter=reporter)
    finally:
        reporter.close()
    out.result(result, lambda console: _render(console, result))
    if result.conflicts and not dry_run:
        raise typer.Exit(int(ExitCode.CONFLICT))


def _render(console: Console, result: UpdateResult) -> None:
    head = f"{result.template}: {result.from_version}"
    if result.status == "up to date":
        console.print(f"{head} is the newest version", markup=False)
        return
    if result.status == "update available":
        console.print(f"{head} -> {result.to_version} is available: mlctl update", markup=False)
        return
    for change in result.files:
        if result.dry_run:
            console.print(change.diff, markup=False, highlight=False, end="")
        console.print(f"{change.action:9} {change.path}", markup=False, highlight=False)
    verb = "would move" if result.dry_run else "moved"
    console.print(f"{head} {verb} to {result.to_version}: {len(result.files)} files", markup=False)
    if result.conflicts and not result.dry_run:
        console.print(
            f"{result.conflicts} file(s) have conflict markers (<<<<<<< yours ... >>>>>>>): resolve them, "
            "run the tests, then commit",
            markup=False,
        )
    elif not result.dry_run:
        console.print("review with `git diff`, run the tests, then commit", markup=False)
