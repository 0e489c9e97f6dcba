"""``mlctl new``: scaffold a model service from a template."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import JsonOption
from mlctl.cli.output import Output, state_of

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.models import AnswerValue, ScaffoldResult
    from mlctl.scaffold.templates import Question


def new_cmd(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="Service name: lowercase letters, digits and '-', e.g. fraud-scorer."),
    ],
    template: Annotated[
        str,
        typer.Option("--template", "-t", metavar="NAME", help="Template to start from (see `mlctl templates list`)."),
    ] = "pytorch-predict",
    directory: Annotated[
        Path | None,
        typer.Option("--dir", "-d", metavar="DIR", help="Create the service in DIR.  [default: ./NAME]"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Answer a template question without a prompt, e.g. --set gpu_count=2. Repeatable.",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Take the defaults for every unanswered question; never prompt.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the files that would be written; write nothing.")
    ] = False,
    no_git: Annotated[bool, typer.Option("--no-git", help="Do not create a git repository and first commit.")] = False,
    ci: Annotated[
        str,
        typer.Option("--ci", metavar="github|gitlab|none", help="Also write this CI pipeline (mlctl ci generate)."),
    ] = "github",
    json_: JsonOption = False,
) -> None:
    """Scaffold a new model service from a template.

    Without --yes, a terminal gets a prompt for each question (defaults shown);
    without a terminal, in CI or with --no-input, the defaults are taken.
    Nothing is left behind when anything fails.

    Example: mlctl new fraud-scorer --set accelerator=cpu
    """
    from mlctl.scaffold.create import new_service
    from mlctl.scaffold.templates import parse_set_options

    out = state_of(ctx).output(json_)
    answers = parse_set_options(set_ or [])
    ask = None if (yes or not out.interactive) else _prompter(out)
    why_not_asked = "--yes" if yes else out.why_no_prompts()
    result = new_service(
        name,
        template=template,
        directory=directory,
        answers=answers,
        ask=ask,
        git=not no_git,
        ci=None if ci == "none" else ci,
        dry_run=dry_run,
        reporter=out.reporter(),
    )
    out.result(result, lambda console: _render(console, result, why_not_asked))


def _render(console: Console, result: ScaffoldResult, why_not_asked: str = "") -> None:
    from rich.markup import escape

    where = _shown(result.path)
    source = f"{result.template} {result.template_version}"
    if result.dry_run:
        console.print(f"Would create {result.name} in {where} from {source} (dry run, nothing written):", markup=False)
        width = max(len(f.path) for f in result.files)
        for f in result.files:
            line = f"  {f.path.ljust(width)}  {f.size:>6} B{'  (executable)' if f.executable else ''}"
            console.print(line, markup=False)
        return
    commit = f", git commit {result.git_commit[:7]}" if result.git_commit else ""
    console.print(
        f"[green]Created[/] {result.name} in {escape(where)} from {source} ({len(result.files)} files{commit})."
    )
    _render_defaults(console, result, why_not_asked)
    console.print("\nNext:")
    for step in result.next_steps:
        console.print(f"  {step}", markup=False)


def _render_defaults(console: Console, result: ScaffoldResult, why_not_asked: str) -> None:
    """Every default taken without asking, so that none is a surprise (a CUDA service on a laptop)."""
    if not result.defaults:
        return
    from mlctl.cli.output import print_table

    console.print(f"\nDefaults taken ({why_not_asked}; choose with --set NAME=VALUE):", markup=False)
    rows = [
        ["  " + d.name, str(d.value) if d.value != "" else "''", "" if d.why == "the template's default" else d.why]
        for d in result.defaults
    ]
    print_table(console, None, rows)


def _shown(path: str) -> str:
    try:
        relative = Path(path).relative_to(Path.cwd())
    except ValueError:
        return path
    return f"./{relative}"


def _prompter(out: Output):  # type: ignore[no-untyped-def]
    from rich.prompt import Confirm, Prompt

    def ask(question: Question, default: AnswerValue | None) -> AnswerValue:
        while True:
            if question.type == "bool":
                return Confirm.ask(question.help, default=bool(default), console=out.console)
            reply = Prompt.ask(
                question.help,
                console=out.console,
                choices=list(question.choices) or None,
                default=None if default is None else str(default),
                show_default=True,
            )
            try:
                return question.parse(reply or "")
            except ValueError as exc:
                out.console.print(f"[red]{question.name} {exc}[/]")

    return ask
