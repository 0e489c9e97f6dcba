"""``--help`` as people read it: plain metavars, whole summaries, words never broken at hyphens.

typer's plain help writes a parameter's Python type as its metavar (``<int>``, ``<list[str]>``,
``<int range>``), braces a required argument (``{NAME}``), cuts each command's summary to fit one
line (mid-word), and wraps text at hyphens (an image name such as ``fraud-scorer:3f2a-g1c9d`` split
in two). :func:`plain_help` gives a command tree, once built, classes that do none of that: it is
applied where ``mlctl.cli.app`` builds each command, so every command gets it without declaring it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

import typer
from typer._click.core import Context
from typer._click.formatting import HelpFormatter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from typer._click.core import Command

#: Stands in for "-" while text is wrapped: the wrapper breaks lines after a hyphen, never after this.
_HYPHEN = "\u2011"


class PlainFormatter(HelpFormatter):
    """Wraps at spaces only: a hyphen (in a name, an image, a flag) never ends a line."""

    def write(self, string: str) -> None:
        super().write(string.replace(_HYPHEN, "-"))

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog.replace("-", _HYPHEN), args.replace("-", _HYPHEN), prefix)

    def write_text(self, text: str) -> None:
        super().write_text(text.replace("-", _HYPHEN))

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        super().write_dl([(a, b.replace("-", _HYPHEN)) for a, b in rows], col_max, col_spacing)


class PlainContext(Context):
    """A context whose help is written by :class:`PlainFormatter`."""

    formatter_class = PlainFormatter


def plain_metavar(param: Any) -> str:
    """What a value of ``param`` looks like, in words: ``N``, ``SECONDS``, ``PATH``, ``a|b``..."""
    descriptor = param.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        return "|".join(str(getattr(choice, "value", choice)) for choice in descriptor.choices)
    annotation = descriptor.annotation
    if get_origin(annotation) in (list, tuple):
        annotation = (get_args(annotation) or (str,))[0]
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    return "TEXT"


class PlainArgument(typer.core.TyperArgument):
    """An argument shown as its metavar alone: ``NAME`` (required) or ``[NAME]`` (optional)."""

    def display_type_rich(self, ctx: Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if not self.required and not name.startswith("["):
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


class PlainOption(typer.core.TyperOption):
    """An option whose value is shown by its metavar, or by a plain word for its type."""

    def display_type(self, ctx: Context) -> str:
        return plain_metavar(self)


class PlainGroup(typer.core.TyperGroup):
    """A command group that lists each command with its whole summary (wrapped, never cut)."""

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command.help or "")))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class PlainCommand(typer.core.TyperCommand):
    """A command whose help uses the plain classes above."""


def summary(help_text: str) -> str:
    """The first paragraph of a command's help, on one line."""
    paragraph = help_text.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _walk(command: Command) -> Iterator[Command]:
    yield command
    for child in getattr(command, "commands", {}).values():
        yield from _walk(child)


def plain_help(command: Command) -> Command:
    """Give ``command`` and every command under it the plain help of this module; returns it.

    The classes replace typer's own on objects typer built (subclasses that only change how help is
    written), since typer offers no hook to choose a parameter's class.
    """
    for each in _walk(command):
        each.context_class = PlainContext
        if type(each) is typer.core.TyperGroup:
            each.__class__ = PlainGroup
        elif type(each) is typer.core.TyperCommand:
            each.__class__ = PlainCommand
        for param in each.params:
            if type(param) is typer.core.TyperArgument:
                param.__class__ = PlainArgument
                if param.metavar is None and param.name:
                    param.metavar = param.name.upper()
            elif type(param) is typer.core.TyperOption:
                param.__class__ = PlainOption
    return command
