"""``mlctl build``: build (and push) the service image and the layers under it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlctl.cli.options import (
    EnvOption,
    JsonOption,
    LabelOption,
    PlatformOption,
    RootOption,
    TorchIndexOption,
    WheelhouseOption,
)
from mlctl.cli.output import print_table, state_of

if TYPE_CHECKING:
    from rich.console import Console

    from mlctl.models import BuildResult


def build_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    push: Annotated[bool, typer.Option("--push", help="Push the layers and the image to image.registry.")] = False,
    root: RootOption = None,
    wheelhouse: WheelhouseOption = None,
    torch_index: TorchIndexOption = None,
    platform: PlatformOption = "linux/amd64",
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Rebuild every layer without the builder's cache.")
    ] = False,
    rebuild: Annotated[
        list[str] | None,
        typer.Option("--rebuild", metavar="LAYER", help="Rebuild this layer (python, torch, service). Repeatable."),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", metavar="TAG", help="Also tag the image TAG. Repeatable.")
    ] = None,
    allow_dirty: Annotated[
        bool, typer.Option("--allow-dirty", help="Push even with uncommitted changes (the tag says -dirty-).")
    ] = False,
    allow_secrets: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-secrets",
            metavar="PATH",
            help="Let this file (or the files under this directory) in although it looks like a secret; "
            "relative to the service directory, as the refusal names it. Repeatable.",
        ),
    ] = None,
    label: LabelOption = None,
    json_: JsonOption = False,
) -> None:
    """Build the layered image: root -> python -> torch -> service (reusing unchanged layers).

    Tags come from git: <tree>-g<commit>, plus -dirty-<hash> for uncommitted changes.
    Python packages are resolved on this machine and installed offline in the image; torch only
    of the service's flavour (+cpu, +cu130...), checked by running it in the built layer.
    Before anything is built, the code is checked for secrets: credential files by name (.env,
    .aws/credentials, .kube/config, SSH keys...) and every file's content with detect-secrets; each
    one found is refused with its path (exit code 4) unless --allow-secrets PATH names it.
    git metadata, CI files and .dockerignore never enter the image.
    """
    from mlctl.images.build import build_images
    from mlctl.images.tags import parse_labels

    state = state_of(ctx)
    out = state.output(json_)
    labels = parse_labels(label or ())
    result = build_images(
        state.config(env),
        root=root,
        wheelhouse=wheelhouse,
        push=push,
        platform=platform,
        no_cache=no_cache,
        rebuild=rebuild or (),
        tags=tag or (),
        allow_dirty=allow_dirty,
        allow_secrets=allow_secrets or (),
        labels=labels,
        torch_index=torch_index,
        reporter=out.reporter(),
    )
    out.result(result, lambda console: render_build(console, result))


def render_build(console: Console, result: BuildResult) -> None:
    """A build's result as people read it: the reference, each layer, each push."""
    verb = "Pushed" if result.pushes else "Built"
    console.print(f"[green]{verb}[/] {result.service}: {result.reference}", highlight=False)
    rows = []
    for layer in result.layers:
        detail = layer.reason
        if layer.status == "built" and layer.steps:
            detail += f"; {layer.cached_steps}/{layer.steps} steps cached"
        rows.append([layer.layer, layer.image, layer.status, f"{layer.seconds:.1f} s", size_text(layer.size), detail])
    print_table(console, ["LAYER", "IMAGE", "STATUS", "TIME", "SIZE", "WHY"], rows)
    for push in result.pushes:
        counts = push.layers
        console.print(
            f"pushed {push.image}: {counts['pushed']} layers uploaded ({size_text(push.bytes_pushed)}), "
            f"{counts['exists']} already there, {counts['mounted']} mounted",
            markup=False,
        )
    if result.dirty:
        console.print("[yellow]note:[/] built from uncommitted changes (the tag says -dirty-)")


def size_text(size: int) -> str:
    """Bytes as people read them: 12.3 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size} B"
