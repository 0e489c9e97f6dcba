"""``mlctl templates``: the templates ``mlctl new`` can start from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import JsonOption
from mlctl.cli.output import print_table, state_of

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.models import TemplateInfo

app = typer.Typer(
    help="List and describe the templates `mlctl new` can start from.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("list")
def list_cmd(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the available templates (built-in and from MLCTL_TEMPLATE_PATH)."""
    from mlctl.scaffold.templates import list_templates

    out = state_of(ctx).output(json_)
    found = list_templates()
    out.result(found, lambda console: _render_list(console, found))


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Template name, e.g. pytorch-predict.")],
    json_: JsonOption = False,
) -> None:
    """Describe a template: version, description and the questions it asks."""
    from mlctl.scaffold.templates import find_template

    out = state_of(ctx).output(json_)
    info = find_template(name).info()
    out.result(info, lambda console: _render_show(console, info))


def _render_list(console: Console, found: list[TemplateInfo]) -> None:
    print_table(console, ["NAME", "VERSION", "DESCRIPTION"], [[t.name, t.version, t.description] for t in found])


def _render_show(console: Console, info: TemplateInfo) -> None:
    console.print(f"{info.name} {info.version} ({info.source})", markup=False)
    console.print(info.description, markup=False)
    console.print("\nQuestions (answer with --set NAME=VALUE):")
    rows = []
    for q in info.questions:
        kind = f"{q.type}: {'|'.join(q.choices)}" if q.choices else q.type
        default = "" if q.default is None else repr(q.default) if q.default == "" else str(q.default)
        if q.machine == "accelerator":
            default = "cuda with a GPU, else cpu"  # this machine's, when mlctl new asks it
        rows.append([q.name, kind, default, q.help])
    print_table(console, ["NAME", "TYPE", "DEFAULT", "HELP"], rows)
