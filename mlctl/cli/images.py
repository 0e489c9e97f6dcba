"""``mlctl images``: the compatibility matrix and the base layers on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from mlctl.cli.build import size_text
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

app = typer.Typer(
    help="The image layer ladder: compatibility matrix, plan, local layers, prune.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("matrix")
def matrix_cmd(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Print the supported CUDA, torch and Python combinations."""
    from mlctl.images.matrix import load_matrix

    out = state_of(ctx).output(json_)
    matrix = load_matrix()

    def render(console: object) -> None:
        rows = [
            [minor, ", ".join(r.patches), ", ".join(["cpu", *r.cuda]), ", ".join(r.python)]
            for minor, r in matrix.torch.items()
        ]
        print_table(console, ["TORCH", "RELEASES", "BUILDS", "PYTHON"], rows)  # type: ignore[arg-type]
        console.print()  # type: ignore[attr-defined]
        cuda = [
            [version, entry.root, f">= {entry.min_driver}", matrix.indexes[version]]
            for version, entry in matrix.cuda.items()
        ]
        cuda.append(["cpu", matrix.cpu.root, "-", matrix.indexes["cpu"]])
        print_table(console, ["CUDA", "ROOT IMAGE", "DRIVER", "WHEEL INDEX"], cuda)  # type: ignore[arg-type]

    out.result(matrix, render)


@app.command("plan")
def plan_cmd(
    ctx: typer.Context,
    env: EnvOption = None,
    root: RootOption = None,
    wheelhouse: WheelhouseOption = None,
    torch_index: TorchIndexOption = None,
    platform: PlatformOption = "linux/amd64",
    registry: Annotated[
        bool, typer.Option("--registry", help="Also look for missing layers in image.registry.")
    ] = False,
    label: LabelOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what `mlctl build` would build, and which input changed for each layer it would rebuild."""
    from mlctl.images.plan import plan_images
    from mlctl.images.tags import parse_labels

    state = state_of(ctx)
    out = state.output(json_)
    entries = plan_images(
        state.config(env),
        root=root,
        wheelhouse=wheelhouse,
        platform=platform,
        registry=registry,
        labels=parse_labels(label or ()),
        torch_index=torch_index,
        reporter=out.reporter(),
    )
    out.result(
        entries,
        lambda console: print_table(
            console, ["LAYER", "IMAGE", "STATUS", "WHY"], [[e.layer, e.image, e.status, e.reason] for e in entries]
        ),
    )


@app.command("root")
def root_cmd(
    ctx: typer.Context,
    tag: Annotated[
        str | None,
        typer.Option("--tag", "-t", metavar="IMAGE", help="The image to make.  [default: mlctl/root:SUITE]"),
    ] = None,
    suite: Annotated[str, typer.Option("--suite", metavar="SUITE", help="The Debian release.")] = "bookworm",
    mirror: Annotated[
        str, typer.Option("--mirror", metavar="URL", help="The Debian mirror.")
    ] = "http://deb.debian.org/debian",
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="IMAGE",
            help="Make it from this image on this machine (e.g. one `docker load` brought) instead of Debian.",
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", metavar="KEY=VALUE", help="Also label the root image (e.g. team=ml). Repeatable."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Make it again even if it is there.")] = False,
    json_: JsonOption = False,
) -> None:
    """Make a root image here (Debian, with mmdebstrap), for machines that cannot pull the matrix's.

    Then build on it: mlctl build --root mlctl/root:bookworm (or MLCTL_ROOT=mlctl/root:bookworm).
    PyTorch wheels bring their CUDA libraries, so a Debian root serves CUDA services too.
    """
    from mlctl.images.root import make_root
    from mlctl.images.tags import parse_labels

    out = state_of(ctx).output(json_)
    result = make_root(
        tag=tag,
        suite=suite,
        mirror=mirror,
        source=source,
        labels=parse_labels(label or ()),
        force=force,
        reporter=out.reporter(),
    )

    def render(console: object) -> None:
        verb = "made" if result.status == "made" else "already made"
        pythons = ", ".join(result.pythons) or "none (the python layer installs it with apt)"
        lines = [
            f"{result.image}: {verb} ({result.source}), {size_text(result.size)}",
            f"  {result.os}; Python: {pythons}",
            f"  next: mlctl build --root {result.image}",
        ]
        for line in lines:
            console.print(line, markup=False)  # type: ignore[attr-defined]

    out.result(result, render)


FilterLabelOption = Annotated[
    str | None,
    typer.Option("--label", metavar="KEY[=VALUE]", help="Only base layer images carrying this label."),
]


@app.command("list")
def list_cmd(ctx: typer.Context, label: FilterLabelOption = None, json_: JsonOption = False) -> None:
    """List the base layer images on this machine, their sizes and the services using them."""
    from mlctl.images.inventory import list_ladder_images

    out = state_of(ctx).output(json_)
    images = list_ladder_images(label)
    out.result(
        images,
        lambda console: print_table(
            console,
            ["LAYER", "IMAGE", "SIZE", "USED BY"],
            [[i.layer, i.image, size_text(i.size), ", ".join(i.used_by) or "-"] for i in images],
        ),
    )


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")] = False,
    label: FilterLabelOption = None,
    json_: JsonOption = False,
) -> None:
    """Remove the base layer images that no service image on this machine uses."""
    from mlctl.images.inventory import prune_ladder_images

    out = state_of(ctx).output(json_)
    removed = prune_ladder_images(dry_run=dry_run, label=label)

    def render(console: object) -> None:
        verb = "would remove" if dry_run else "removed"
        if not removed:
            which = f"base layer labelled {label}" if label else "base layer"
            console.print(f"nothing to prune: every {which} is in use", markup=False)  # type: ignore[attr-defined]
        for image in removed:
            console.print(f"{verb} {image.image} ({size_text(image.size)})", markup=False)  # type: ignore[attr-defined]

    out.result(removed, render)
