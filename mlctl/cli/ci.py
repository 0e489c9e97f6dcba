"""``mlctl ci``: the service's CI pipeline files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import JsonOption
from mlctl.cli.output import state_of

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    help="Write the service's CI pipeline (GitHub Actions or GitLab CI).", no_args_is_help=True, rich_markup_mode=None
)


@app.callback()
def ci() -> None:
    """Write the service's CI pipeline (GitHub Actions or GitLab CI)."""


@app.command("generate")
def generate_cmd(
    ctx: typer.Context,
    provider: Annotated[
        str, typer.Option("--provider", metavar="github|gitlab", help="The CI system.  [default: github]")
    ] = "github",
    branch: Annotated[
        str, typer.Option("--branch", metavar="NAME", help="The branch that deploys to staging.")
    ] = "main",
    force: Annotated[bool, typer.Option("--force", help="Replace a pipeline file that differs.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the file; write nothing.")] = False,
    json_: JsonOption = False,
) -> None:
    """Write the pipeline: test, build --push, deploy to staging from the branch, promote to prod on tags.

    GitHub: .github/workflows/mlctl.yml; GitLab: .gitlab-ci.yml. Secrets (registry login,
    kubeconfig) are read from the CI system; the file's header lists them. Every mlctl step
    keeps its --json result as an artefact.

    Example: mlctl ci generate --provider gitlab
    """
    from mlctl.ci.pipeline import generate_ci

    state = state_of(ctx)
    out = state.output(json_)
    result = generate_ci(
        state.config(), provider=provider, branch=branch, force=force, dry_run=dry_run, reporter=out.reporter()
    )

    def show(console: Console) -> None:
        if dry_run:
            console.print(result.content, markup=False, highlight=False, end="")
        console.print(f"{result.path}: {result.status}", markup=False)

    out.result(result, show)
